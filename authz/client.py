"""A small Python client for portals: decisions, searches and the management API.

Only the standard library and ``httpx``: a portal installs this module without the
service's own dependencies (Flask, oso, SQLAlchemy).

    from authz.client import AuthzClient, AuthzClientError

    with AuthzClient("https://authz.internal", api_key, acting_user=session_email) as authz:
        if authz.can(session_email, "declarations", siret):
            ...
        try:
            authz.grant(firm, "chloe@legrand.example", siret, ["compte"])
        except AuthzClientError as refused:
            show(refused.code, refused.message, refused.details)

Behaviour:

- Every call has a timeout (``timeout`` seconds, default 2).
- Only connection failures (refused, connect timeout) are retried, ``retries`` times by
  httpx's transport with a short backoff: a request that never reached the server is
  safe to send again, even a management POST. Nothing is retried once the request was
  sent (a read timeout, a 5xx), so a management change is never applied twice.
- Decisions FAIL CLOSED: ``can`` and ``can_many`` answer ``False`` on any failure
  (timeout, refused connection, non-200 status, malformed body) and log a warning;
  they never raise and never answer ``True`` unless the service said exactly ``true``.
- Everything else raises ``AuthzClientError`` on failure, built from the service's
  error envelope ``{"error": {"code", "message", "details"}}``; transport failures
  have ``status=None`` and code ``timeout`` or ``unavailable``.
- ``request_id`` (any call) is sent as ``X-Request-ID``; the service echoes it and
  records it in the audit log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

__all__ = ["AuthzClient", "AuthzClientError"]

log = logging.getLogger(__name__)

SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")

_UNSET: Any = object()  # "leave unchanged" in PATCH calls, where None means "remove the end date"


class AuthzClientError(Exception):
    """A call the service refused or that could not be completed.

    ``status`` is the HTTP status (None when no answer came), ``code`` the service's
    snake_case error code, ``details`` its ``details`` object (e.g. ``{"exceeding": [...]}``
    on a grant beyond the firm's rights).
    """

    def __init__(self, status: int | None, code: str, message: str, details: dict | None = None):
        super().__init__(f"{status or 'no answer'} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


class AuthzClient:
    """Talk to the authorization service with one API key (role ``portal`` or ``pep``).

    ``acting_user`` is the default ``Acting-User`` of management calls; each call may
    name another with its own ``acting_user=``. Use as a context manager, or ``close()``.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 2.0, retries: int = 2,
                 acting_user: str | None = None):
        self.acting_user = acting_user
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout),
            # Retries connection failures only (the request was never sent), never a sent request.
            transport=httpx.HTTPTransport(retries=retries),
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AuthzClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- decisions: fail closed ----------------------------------------------------------

    def can(self, user: str, right: str, siret: str, *, request_id: str | None = None) -> bool:
        """Whether ``user`` may exercise ``right`` for the company ``siret``; False on any error."""
        try:
            body = self._call("POST", "/access/v1/evaluation", _question(user, right, siret), request_id=request_id)
            return _decision(body)
        except Exception as failure:  # noqa: BLE001 - fail closed whatever went wrong
            log.warning("authz decision failed closed (deny) for %s %s %s: %s", user, right, siret, failure)
            return False

    def can_many(self, questions: Iterable[Sequence[str]], semantic: str = "execute_all", *,
                 request_id: str | None = None) -> list[bool]:
        """Decide many ``(user, right, siret)`` questions in one call; the answers in the same order.

        With ``deny_on_first_deny`` / ``permit_on_first_permit`` the service stops early;
        the questions it did not evaluate are answered False. Any error: all False.
        """
        asked = [tuple(question) for question in questions]
        if not asked:
            return []
        if semantic not in SEMANTICS:
            raise ValueError(f"semantic must be one of {', '.join(SEMANTICS)}")
        payload = {"evaluations": [_question(*question) for question in asked],
                   "options": {"evaluations_semantic": semantic}}
        try:
            body = self._call("POST", "/access/v1/evaluations", payload, request_id=request_id)
            answers = body["evaluations"] if isinstance(body, dict) else None
            if not isinstance(answers, list) or len(answers) > len(asked):
                raise ValueError(f"malformed evaluations body: {body!r:.200}")
            decided = [_decision(answer) for answer in answers]
            return decided + [False] * (len(asked) - len(decided))
        except Exception as failure:  # noqa: BLE001 - fail closed whatever went wrong
            log.warning("authz batch decision failed closed (deny all %d): %s", len(asked), failure)
            return [False] * len(asked)

    # ---- searches and explanations: raise on error ----------------------------------------

    def clients(self, user: str, right: str, *, page_size: int | None = None,
                request_id: str | None = None) -> list[str]:
        """The SIRETs of the companies ``user`` may exercise ``right`` for, every page."""
        found = self._search("/access/v1/search/resource", {
            "subject": {"type": "user", "id": user}, "action": {"name": right}, "resource": {"type": "company"},
        }, page_size, request_id)
        return [result["id"] for result in found]

    def subjects(self, siret: str, right: str, *, page_size: int | None = None,
                 request_id: str | None = None) -> list[str]:
        """The e-mails of the users who may exercise ``right`` for the company ``siret``."""
        found = self._search("/access/v1/search/subject", {
            "subject": {"type": "user"}, "action": {"name": right}, "resource": {"type": "company", "id": siret},
        }, page_size, request_id)
        return [result["id"] for result in found]

    def actions(self, user: str, siret: str, *, page_size: int | None = None,
                request_id: str | None = None) -> list[str]:
        """The rights ``user`` holds on the company ``siret``."""
        found = self._search("/access/v1/search/action", {
            "subject": {"type": "user", "id": user}, "resource": {"type": "company", "id": siret},
        }, page_size, request_id)
        return [result["name"] for result in found]

    def explain(self, user: str, right: str, siret: str, *, request_id: str | None = None) -> dict:
        """The decision with the chain of links that allowed it, or the first broken one."""
        return self._call("POST", "/v1/explain", _question(user, right, siret), request_id=request_id)

    # ---- management: acting_user per call, raise on error ----------------------------------

    def register_company(self, siret: str, name: str, admin_email: str, **kw) -> dict:
        return self._manage("POST", "/v1/companies", {"siret": siret, "name": name, "admin_email": admin_email}, **kw)

    def get_company(self, siret: str, **kw) -> dict:
        return self._manage("GET", f"/v1/companies/{_seg(siret)}", **kw)

    def add_admin(self, siret: str, email: str, **kw) -> dict:
        return self._manage("POST", f"/v1/companies/{_seg(siret)}/admins", {"email": email}, **kw)

    def remove_admin(self, siret: str, email: str, **kw) -> dict:
        return self._manage("DELETE", f"/v1/companies/{_seg(siret)}/admins/{_seg(email)}", **kw)

    def designate(self, siret: str, manager_email: str, scope: Iterable[str], ends_at: datetime | str | None = None,
                  **kw) -> dict:
        """Designate a firm; the answer carries ``activation.token``, shown only here."""
        body = {"manager_email": manager_email, "scope": list(scope), "ends_at": _time(ends_at)}
        return self._manage("POST", f"/v1/companies/{_seg(siret)}/delegations", body, **kw)

    def list_delegations(self, siret: str, **kw) -> list[dict]:
        return self._manage("GET", f"/v1/companies/{_seg(siret)}/delegations", **kw)["delegations"]

    def activate(self, token: str, firm_siret: str, firm_name: str, **kw) -> dict:
        body = {"token": token, "firm_siret": firm_siret, "firm_name": firm_name}
        return self._manage("POST", "/v1/activations", body, **kw)

    def get_delegation(self, delegation_id: str, **kw) -> dict:
        return self._manage("GET", f"/v1/delegations/{_seg(delegation_id)}", **kw)

    def change_delegation(self, delegation_id: str, *, scope: Iterable[str] | None = None,
                          ends_at: datetime | str | None = _UNSET, **kw) -> dict:
        """Narrow or widen the scope, or change the end date (``ends_at=None`` removes it)."""
        return self._manage("PATCH", f"/v1/delegations/{_seg(delegation_id)}", _patch(scope, ends_at), **kw)

    def revoke_delegation(self, delegation_id: str, **kw) -> dict:
        return self._manage("DELETE", f"/v1/delegations/{_seg(delegation_id)}", **kw)

    def firm_clients(self, firm_siret: str, **kw) -> list[dict]:
        """The firm's client companies with the scope it holds on each (its manager only)."""
        return self._manage("GET", f"/v1/firms/{_seg(firm_siret)}/clients", **kw)["clients"]

    def collaborators(self, firm_siret: str, **kw) -> list[dict]:
        return self._manage("GET", f"/v1/firms/{_seg(firm_siret)}/collaborators", **kw)["collaborators"]

    def add_collaborator(self, firm_siret: str, email: str, **kw) -> dict:
        return self._manage("POST", f"/v1/firms/{_seg(firm_siret)}/collaborators", {"email": email}, **kw)

    def remove_collaborator(self, firm_siret: str, email: str, **kw) -> dict:
        """Remove a collaborator; the answer lists the grants that ended with it."""
        return self._manage("DELETE", f"/v1/firms/{_seg(firm_siret)}/collaborators/{_seg(email)}", **kw)

    def grant(self, firm_siret: str, collaborator: str, company: str, scope: Iterable[str],
              ends_at: datetime | str | None = None, **kw) -> dict:
        """Sub-delegate; a right beyond the firm's raises 403 with ``details["exceeding"]``."""
        body = {"collaborator": collaborator, "company": company, "scope": list(scope), "ends_at": _time(ends_at)}
        return self._manage("POST", f"/v1/firms/{_seg(firm_siret)}/grants", body, **kw)

    def get_grant(self, grant_id: str, **kw) -> dict:
        return self._manage("GET", f"/v1/grants/{_seg(grant_id)}", **kw)

    def change_grant(self, grant_id: str, *, scope: Iterable[str] | None = None,
                     ends_at: datetime | str | None = _UNSET, **kw) -> dict:
        return self._manage("PATCH", f"/v1/grants/{_seg(grant_id)}", _patch(scope, ends_at), **kw)

    def revoke_grant(self, grant_id: str, **kw) -> dict:
        return self._manage("DELETE", f"/v1/grants/{_seg(grant_id)}", **kw)

    def audit(self, *, company: str | None = None, user: str | None = None, since: datetime | str | None = None,
              after: int | None = None, limit: int | None = None, **kw) -> dict:
        """One page of the audit log: ``{"records": [...], "next_after": id or None}``."""
        query = {"company": company, "user": user, "since": _time(since), "after": after, "limit": limit}
        return self._manage("GET", "/v1/audit", params={k: v for k, v in query.items() if v is not None}, **kw)

    # ---- plumbing ---------------------------------------------------------------------------

    def _manage(self, method: str, path: str, body: dict | None = None, *, acting_user: str | None = None,
                request_id: str | None = None, params: dict | None = None) -> Any:
        return self._call(method, path, body, acting_user=acting_user or self.acting_user,
                          request_id=request_id, params=params)

    def _search(self, path: str, payload: dict, page_size: int | None, request_id: str | None) -> list[dict]:
        results: list[dict] = []
        token = ""
        while True:
            page = {k: v for k, v in (("limit", page_size), ("token", token)) if v}
            body = self._call("POST", path, {**payload, "page": page} if page else payload, request_id=request_id)
            try:
                results.extend(body["results"])
                token = (body.get("page") or {}).get("next_token") or ""
            except (KeyError, TypeError, AttributeError) as exc:
                raise AuthzClientError(200, "malformed_response", f"unexpected search body: {body!r:.200}") from exc
            if not token:
                return results

    def _call(self, method: str, path: str, body: dict | None = None, *, acting_user: str | None = None,
              request_id: str | None = None, params: dict | None = None) -> Any:
        """Send one request; return the decoded JSON of a 2xx answer, raise AuthzClientError otherwise."""
        headers = {}
        if acting_user:
            headers["Acting-User"] = acting_user
        if request_id:
            headers["X-Request-ID"] = request_id
        try:
            response = self._http.request(method, path, json=body, headers=headers, params=params)
        except httpx.TimeoutException as exc:
            raise AuthzClientError(None, "timeout", f"{method} {path}: no answer in time ({exc})") from exc
        except httpx.HTTPError as exc:
            raise AuthzClientError(None, "unavailable", f"{method} {path}: {exc or type(exc).__name__}") from exc
        try:
            decoded = response.json()
        except ValueError:
            decoded = None
        if response.is_success and decoded is not None:
            return decoded
        raise _refusal(response, decoded)


def _refusal(response: httpx.Response, decoded: Any) -> AuthzClientError:
    envelope = decoded.get("error") if isinstance(decoded, dict) else None
    if isinstance(envelope, dict) and isinstance(envelope.get("code"), str):
        details = envelope.get("details")
        return AuthzClientError(response.status_code, envelope["code"], str(envelope.get("message", "")),
                                details if isinstance(details, dict) else {})
    code = "malformed_response" if response.is_success else "unexpected_response"
    return AuthzClientError(response.status_code, code, response.text[:200] or response.reason_phrase)


def _question(user: str, right: str, siret: str) -> dict:
    return {"subject": {"type": "user", "id": user}, "action": {"name": right},
            "resource": {"type": "company", "id": siret}}


def _decision(body: Any) -> bool:
    """``True`` only for a body whose ``decision`` is the JSON boolean true."""
    if not isinstance(body, dict) or not isinstance(body.get("decision"), bool):
        raise ValueError(f"malformed decision body: {body!r:.200}")
    return body["decision"]


def _seg(value: str) -> str:
    """One URL path segment (e-mails carry '@' and maybe '+' or '/')."""
    return quote(str(value), safe="")


def _time(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def _patch(scope: Iterable[str] | None, ends_at: Any) -> dict:
    body: dict[str, Any] = {}
    if scope is not None:
        body["scope"] = list(scope)
    if ends_at is not _UNSET:
        body["ends_at"] = _time(ends_at)
    return body
