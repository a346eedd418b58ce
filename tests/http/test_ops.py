"""Operations and documents: /healthz, /readyz, /openapi.json, /docs, GET /v1/policy."""

from __future__ import annotations

import re

import pytest

from tests.http.conftest import RIGHTS, assert_error, assert_time

# Every path and method the contract (shared/api.md) names, /metrics aside (Prometheus text).
CONTRACT = [
    ("post", "/access/v1/evaluation"),
    ("post", "/access/v1/evaluations"),
    ("post", "/access/v1/search/resource"),
    ("post", "/access/v1/search/subject"),
    ("post", "/access/v1/search/action"),
    ("get", "/.well-known/authzen-configuration"),
    ("post", "/v1/explain"),
    ("post", "/v1/companies"),
    ("get", "/v1/companies/{siret}"),
    ("post", "/v1/companies/{siret}/admins"),
    ("delete", "/v1/companies/{siret}/admins/{email}"),
    ("post", "/v1/companies/{siret}/delegations"),
    ("get", "/v1/companies/{siret}/delegations"),
    ("post", "/v1/activations"),
    ("get", "/v1/delegations/{id}"),
    ("patch", "/v1/delegations/{id}"),
    ("delete", "/v1/delegations/{id}"),
    ("get", "/v1/firms/{siret}/clients"),
    ("post", "/v1/firms/{siret}/collaborators"),
    ("delete", "/v1/firms/{siret}/collaborators/{email}"),
    ("post", "/v1/firms/{siret}/grants"),
    ("get", "/v1/grants/{id}"),
    ("patch", "/v1/grants/{id}"),
    ("delete", "/v1/grants/{id}"),
    ("get", "/v1/audit"),
    ("get", "/v1/policy"),
    ("post", "/v1/policy/validate"),
    ("post", "/v1/policy/reload"),
    ("get", "/healthz"),
    ("get", "/readyz"),
]
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _template(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


# ---- health ---------------------------------------------------------------------------------


def test_healthz_is_200_without_a_key(api):
    response = api.get("/healthz", key=None)
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_readyz_reports_the_database_and_the_policy_version(api):
    response = api.get("/readyz", key=None)
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready"
    assert body["database"] == "ok"
    assert body["policy_version"] == api.get("/v1/policy", key="admin").get_json()["version"]


# ---- the loaded policy ---------------------------------------------------------------------------


def test_policy_with_an_admin_key_lists_version_files_load_time_and_rights(api):
    response = api.get("/v1/policy", key="admin")
    assert response.status_code == 200
    body = response.get_json()
    assert isinstance(body["version"], str) and body["version"]
    assert "policies.polar" in [f.rsplit("/", 1)[-1] for f in body["files"]]
    assert_time(body["loaded_at"])
    assert sorted(body["rights"]) == sorted(RIGHTS)


@pytest.mark.parametrize("key", ["pep", "portal"])
def test_policy_with_a_key_other_than_admin_is_403(api, key):
    assert_error(api.get("/v1/policy", key=key), 403)


# ---- the OpenAPI document and its page ---------------------------------------------------------------


def _spec(api) -> dict:
    response = api.get("/openapi.json", key=None)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def _resolve(spec: dict, ref: str):
    assert ref.startswith("#/"), ref
    node = spec
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolvable $ref {ref}"
        node = node[part]
    return node


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_openapi_document_is_openapi_3(api):
    spec = _spec(api)
    assert re.fullmatch(r"3\.\d+\.\d+", spec["openapi"]), spec.get("openapi")
    assert isinstance(spec["info"]["title"], str) and spec["info"]["title"]
    assert isinstance(spec["info"]["version"], str) and spec["info"]["version"]
    assert isinstance(spec["paths"], dict) and spec["paths"]
    operation_ids = []
    for path, item in spec["paths"].items():
        assert path.startswith("/"), path
        path_params = {p["name"] for p in item.get("parameters", []) if p.get("in") == "path"}
        for method, operation in item.items():
            if method == "parameters":
                continue
            assert method in HTTP_METHODS, (path, method)
            responses = operation["responses"]
            assert responses, (path, method)
            for status, answer in responses.items():
                assert status == "default" or re.fullmatch(r"[1-5](\d\d|XX)", status), (path, method, status)
                assert "$ref" in answer or isinstance(answer.get("description"), str), (path, method, status)
            for parameter in operation.get("parameters", []):
                if "$ref" in parameter:
                    continue
                assert parameter.get("name"), (path, method, parameter)
                assert parameter.get("in") in {"query", "header", "path", "cookie"}, (path, method, parameter)
                assert "schema" in parameter or "content" in parameter, (path, method, parameter)
                if parameter["in"] == "path":
                    assert parameter.get("required") is True, (path, method, parameter)
            declared = path_params | {p["name"] for p in operation.get("parameters", []) if p.get("in") == "path"}
            assert set(re.findall(r"\{([^}]+)\}", path)) == declared, (path, method, declared)
            if "operationId" in operation:
                operation_ids.append(operation["operationId"])
            for requirement in operation.get("security", []):
                for scheme in requirement:
                    assert scheme in spec["components"]["securitySchemes"], scheme
    assert len(operation_ids) == len(set(operation_ids)), "operationId must be unique"
    for ref in _refs(spec):
        _resolve(spec, ref)


def test_openapi_document_has_every_path_of_the_contract(api):
    documented = {_template(p): item for p, item in _spec(api)["paths"].items()}
    missing = [f"{method.upper()} {path}" for method, path in CONTRACT
               if method not in documented.get(_template(path), {})]
    assert missing == []


def test_openapi_document_describes_the_error_envelope(api):
    spec = _spec(api)
    answer = spec["paths"]["/access/v1/evaluation"]["post"]["responses"]["401"]
    schema = answer["content"]["application/json"]["schema"]
    schema = _resolve(spec, schema["$ref"]) if "$ref" in schema else schema
    inner = schema["properties"]["error"]
    inner = _resolve(spec, inner["$ref"]) if "$ref" in inner else inner
    assert {"code", "message", "details"} <= set(inner["properties"])


def test_docs_page_is_html_listing_the_operations(api):
    response = api.get("/docs", key=None)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    text = response.get_data(as_text=True)
    assert text.lstrip().lower().startswith("<!doctype html")
    for path in ("/access/v1/evaluation", "/v1/companies", "/v1/audit"):
        assert path in text
