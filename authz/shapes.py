"""Answer many questions with one policy evaluation per *shape* of facts.

Thousands of questions differ only in identifiers: every client of a firm has its own
SIRET and delegation id, but the same status, scope and dates. For a policy that
treats identifiers and instants opaquely, the answer depends only on the shape of the
facts: which identifiers are equal, how they and the instants are ordered, and every
other value as it is. ``canonical`` replaces identifiers and instants by placeholders
that keep exactly that, so one evaluation serves every question of the same shape.

The engine uses this only when ``opacity_problems`` finds nothing in the policy that
could see through the placeholders: no method call, no arithmetic, no number literal,
no ordering comparison with a literal, no string literal that looks like an
identifier. Otherwise it evaluates every question directly.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from authz import model

# A placeholder can never equal a string a policy or a request contains.
_MARK = "\x00"

_COMMENT = re.compile(r"#[^\n]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_CHECKS = (
    (re.compile(r"\.\s*[A-Za-z_][A-Za-z0-9_]*\s*\("), "calls a method"),
    (re.compile(r"(?<![<>!=])(?:[+*/]|(?<![\w\s])-|\s-\s|\bmod\b|\brem\b)"), "uses arithmetic"),
    (re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])"), "has a number literal"),
    (re.compile(r'(?:<=?|>=?)\s*"|"\s*(?:<=?|>=?)'), "compares a string literal by order"),
)
_IDENTIFIER_LIKE = re.compile(r"@|^\d{9,}$|^[0-9a-f]{24}$")


def opacity_problems(sources: dict[str, str]) -> list[str]:
    """Why this policy might see through placeholders (empty: shapes are safe)."""
    problems = []
    for name, text in sources.items():
        code = _COMMENT.sub("", text)
        for literal in _STRING.findall(code):
            if _IDENTIFIER_LIKE.search(literal[1:-1]):
                problems.append(f"{name}: the literal {literal} looks like an identifier")
        bare = _STRING.sub('""', code)
        for pattern, what in _CHECKS:
            if pattern.search(bare if what != "compares a string literal by order" else code):
                problems.append(f"{name} {what}")
    return problems


def canonical(user: model.User, company: model.Company) -> tuple[model.User, model.Company]:
    """Relabel identifiers and instants, keeping equalities and order, and nothing else."""
    names = _Relabel(_identifiers(user, company))
    times = _Relabel(_instants(user, company), numeric=True)
    return (
        model.User(
            email=names(user.email),
            now=times(user.now),
            admin_of=frozenset(map(names, user.admin_of)),
            manages=frozenset(map(names, user.manages)),
            collaborates=frozenset(map(names, user.collaborates)),
        ),
        model.Company(
            siret=names(company.siret),
            delegations=tuple(sorted(
                (replace(d, id=names(d.id), company=names(d.company), manager_email=names(d.manager_email),
                         firm=names(d.firm), ends_at=times(d.ends_at)) for d in company.delegations),
                key=repr,
            )),
            grants=tuple(sorted(
                (replace(g, id=names(g.id), firm=names(g.firm), collaborator=names(g.collaborator),
                         company=names(g.company), ends_at=times(g.ends_at)) for g in company.grants),
                key=repr,
            )),
        ),
    )


def _identifiers(user: model.User, company: model.Company) -> set[str]:
    found: set[str | None] = {user.email, company.siret, *user.admin_of, *user.manages, *user.collaborates}
    for d in company.delegations:
        found.update((d.id, d.company, d.manager_email, d.firm))
    for g in company.grants:
        found.update((g.id, g.firm, g.collaborator, g.company))
    return {value for value in found if value is not None}


def _instants(user: model.User, company: model.Company) -> set[float]:
    links: list[model.Delegation | model.Grant] = [*company.delegations, *company.grants]
    ends = [link.ends_at for link in links]
    return {user.now, *(end for end in ends if end is not None)}


class _Relabel:
    """Map values to placeholders in the same order (None stays None)."""

    def __init__(self, values: set, numeric: bool = False):
        ordered = sorted(values)
        self.table: dict[Any, Any]
        if numeric:
            self.table = {value: float(rank) for rank, value in enumerate(ordered)}
        else:
            self.table = {value: f"{_MARK}{rank:06d}" for rank, value in enumerate(ordered)}

    def __call__(self, value):
        return None if value is None else self.table[value]
