"""The OpenAPI 3 document, built from the routes' ``api_doc`` facts and their schemas."""

from __future__ import annotations

import re
from html import escape
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask

from service.schemas import ErrorSchema

ERROR_TEXT = {
    400: "Invalid input (see error.details)",
    401: "Missing or unknown API key",
    403: "Not allowed (key role or policy)",
    404: "Not found",
    409: "Conflicts with the current state",
    410: "Activation link used or expired",
    413: "Body too large",
    415: "Body is not JSON",
    422: "Policy draft refused (errors with file, line, column)",
    429: "Too many wrong keys or activation links from this address, or too many reports under way (see Retry-After)",
    503: "Database or policy unavailable; nothing was decided or changed",
}


def _path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def build_spec(app: Flask) -> dict:
    spec = APISpec(
        title="authz: delegated access for the building trade's paid-leave fund",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "AuthZEN 1.0 decisions and the delegation management API."},
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Error", schema=ErrorSchema)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        doc = getattr(view, "api_doc", None)
        if doc is None:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            spec.path(path=_path(rule.rule), operations={method.lower(): _operation(rule, view, doc)})
    return spec.to_dict()


def _operation(rule, view, doc: dict) -> dict:
    operation: dict = {"summary": doc["summary"], "operationId": rule.endpoint.replace(".", "_"), "parameters": []}
    for name in rule.arguments:
        operation["parameters"].append({"name": name, "in": "path", "required": True, "schema": {"type": "string"}})
    if doc["acting_user"]:
        operation["parameters"].append({
            "name": "Acting-User", "in": "header", "required": True,
            "description": "E-mail of the person the portal authenticated", "schema": {"type": "string"},
        })
    if doc["query"]:
        operation["parameters"].append({"in": "query", "schema": doc["query"]})
    operation["parameters"].append({"name": "X-Request-ID", "in": "header", "required": False,
                                    "schema": {"type": "string"}})
    for name, description in doc["headers"].items():
        operation["parameters"].append({"name": name, "in": "header", "required": False,
                                        "description": description, "schema": {"type": "string"}})
    if doc["body"]:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": doc["body"]}}}
    responses: dict[str, dict[str, Any]] = {str(doc["status"]): {"description": "Success"}}
    if doc["response"]:
        responses[str(doc["status"])]["content"] = {"application/json": {"schema": doc["response"]}}
    for status, (description, schema) in doc["also"].items():
        responses[str(status)] = {"description": description, "content": {"application/json": {"schema": schema}}}
    errors = set(doc["errors"])
    if doc["body"]:
        errors |= {413, 415}
    if hasattr(view, "api_area"):
        errors |= {429, 503}
    for status in sorted(errors):
        responses[str(status)] = {"description": ERROR_TEXT[status],
                                  "content": {"application/json": {"schema": "Error"}}}
    operation["responses"] = responses
    if hasattr(view, "api_area"):
        operation["security"] = [{"bearer": []}]
    return operation


def docs_page(spec: dict) -> str:
    """A self-contained HTML page listing every operation (no CDN, works offline)."""
    rows = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            statuses = ", ".join(sorted(op["responses"]))
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{escape(path)}</code></td>"
                f"<td>{escape(op['summary'])}</td><td>{statuses}</td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>authz API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em .8em;border-bottom:1px solid #ddd}"
        "</style></head><body>"
        f"<h1>{escape(spec['info']['title'])}</h1><p>{escape(spec['info']['description'])} "
        "The machine-readable document is at <a href='/openapi.json'>/openapi.json</a>.</p>"
        "<table><tr><th>method</th><th>path</th><th>what it does</th><th>statuses</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
