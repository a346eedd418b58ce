"""The policy engine: the only module that imports oso.

It loads ``policies.polar`` and ``policies/*.polar`` in one call, then answers
questions over fact objects from ``authz.model``. It holds no data and no rule: every
yes or no comes from Polar. Any failure inside the engine raises ``PolicyError`` so
callers fail closed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from oso import Oso, Variable
from polar.exceptions import OsoError
from polar.ffi import PolarSource

from authz import impact_shapes, model, policy_reading, shapes
from authz.errors import PolicyError

FACT_CLASSES = (
    model.User,
    model.Company,
    model.CompanySpace,
    model.Firm,
    model.Delegation,
    model.Grant,
    model.ApiKey,
)


def read_policy(root: Path) -> dict[str, str]:
    """Read ``policies.polar`` then ``policies/*.polar`` under ``root`` as {relative path: text}."""
    root = Path(root)
    paths = [root / "policies.polar"] if (root / "policies.polar").is_file() else []
    if (root / "policies").is_dir():
        paths.extend(sorted((root / "policies").glob("*.polar")))
    try:
        return {path.relative_to(root).as_posix(): path.read_text(encoding="utf-8") for path in paths}
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read the policy under {root}: {exc}") from exc


def policy_version(sources: dict[str, str]) -> str:
    """Hash file names and contents, so any edit, addition or rename gives a new version."""
    digest = hashlib.sha256()
    for name in sorted(sources):
        digest.update(name.encode())
        digest.update(b"\0")
        digest.update(sources[name].encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Problem:
    """One error in a policy draft, where an editor can jump to it."""

    file: str | None
    line: int | None
    column: int | None
    message: str


_WHERE = re.compile(r"at line (\d+), column (\d+)(?: of file (\S+?))?:")


def _problem(text: str) -> Problem:
    found = _WHERE.search(text)
    first = text.strip().splitlines()[0] if text.strip() else text
    headline = _WHERE.split(first)[0].strip() if found else first.strip()
    headline = headline.removeprefix("[warning] ")
    if not found:
        return Problem(None, None, None, headline)
    return Problem(found.group(3), int(found.group(1)), int(found.group(2)), headline)


@dataclass(frozen=True)
class PolicyInfo:
    version: str
    files: tuple[str, ...]
    loaded_at: datetime
    rights: tuple[str, ...]
    delegable: frozenset[str]


class PolicyRejected(PolicyError):
    """A draft that does not compile cleanly; ``problems`` says where and why."""

    code = "policy_invalid"

    def __init__(self, problems: list[Problem]):
        super().__init__(
            "the policy is invalid: " + "; ".join(p.message for p in problems[:3]),
            {"errors": [p.__dict__ for p in problems]},
        )
        self.problems = problems


# The memo's bound, in facts held (see ``_weight``). A fact costs 0.5-0.7 KiB of a
# worker's memory, so a full memo holds about 6 MiB; under the soak's traffic it fills
# in about ten thousand requests, then stays at that size (RELIABILITY.md, Soak).
MEMO_SIZE = 10_000


class Engine:
    """A loaded policy. Build a new one to reload; never reload one in place."""

    def __init__(self, sources: dict[str, str] | Path, memo_size: int = MEMO_SIZE):
        """Compile ``sources`` ({file name: Polar text}, or a folder to read) in one load.

        Warnings are refused like errors: oso only prints some traps on stdout (an
        unknown class specializer makes a rule that can never match), so they are
        captured here. Rules that nothing calls are refused too.
        """
        if not isinstance(sources, dict):
            sources = read_policy(Path(sources))
        if not sources:
            raise PolicyRejected([Problem(None, None, None, "no policy files")])
        oso = Oso()
        printed = io.StringIO()
        try:
            for cls in FACT_CLASSES:
                oso.register_class(cls)
            with contextlib.redirect_stdout(printed):
                oso._load_sources([PolarSource(text, name) for name, text in sources.items()])
            rights = tuple(self._all(oso, "right"))
            delegable = frozenset(self._all(oso, "delegable"))
        except OsoError as exc:
            raise PolicyRejected([_problem(str(exc))]) from exc
        problems = [_problem(chunk) for chunk in printed.getvalue().split("[warning]")[1:]]
        problems += _unused_rules(sources)
        if not rights:
            problems.append(Problem(None, None, None, "the policy declares no right(...) fact"))
        if problems:
            raise PolicyRejected(problems)
        self._oso = oso
        self.sources = dict(sources)
        # Shapes are safe only for a policy that cannot see through placeholders.
        self.opacity_problems = shapes.opacity_problems(sources)
        self.memoizable = not self.opacity_problems
        # A policy also read as blind to identifier order and reading scopes one right at
        # a time shares an answer between far more questions (``impact_shapes.question``).
        reading = policy_reading.coarsening(sources) if self.memoizable else None
        self.by_question = bool(reading and reading.one_right_at_a_time and reading.rule_one_right_at_a_time)
        # The memo keeps, per shape (or question), the answer of each right asked; it is
        # bounded by the facts it holds (one per shape plus one per link), not by its
        # entries: a company with a long history makes a big key. See MEMO_SIZE for what it costs.
        self.memo_size = memo_size
        self._memo: OrderedDict[Hashable, tuple[int, dict[str, str | None]]] = OrderedDict()
        self._memo_weight = 0
        self._memo_lock = threading.Lock()
        self._key_answers: dict[tuple[model.ApiKey, str], bool] = {}
        self.info = PolicyInfo(
            version=policy_version(sources),
            files=tuple(sources),
            loaded_at=datetime.now(UTC),
            rights=tuple(sorted(set(rights))),
            delegable=delegable,
        )

    @staticmethod
    def _all(oso: Oso, rule: str) -> Iterable[str]:
        for result in oso.query_rule(rule, Variable("x")):
            yield result["bindings"]["x"]

    @property
    def rights(self) -> tuple[str, ...]:
        return self.info.rights

    @property
    def version(self) -> str:
        return self.info.version

    def allows(self, actor: object, action: str, resource: object) -> bool:
        """Answer the policy's entry rule ``allow(actor, action, resource)``."""
        return self._once("allow", actor, action, resource)

    def key_may_call(self, key: model.ApiKey, area: str) -> bool:
        """``allow(key, "call", area)``, remembered: it depends on nothing but its arguments."""
        found = self._key_answers.get((key, area))
        if found is None:
            found = self._key_answers[(key, area)] = self.allows(key, "call", area)
        return found

    def answer(self, user: model.User, right: str, company: model.Company) -> str | None:
        """The rule that gives ``right`` to ``user`` on ``company``, or None if denied.

        The right is asked of the entry rule ``allow``, exactly as a single decision;
        the rule name only labels an allow. When the policy is opaque to identifiers
        and instants (see ``authz.shapes``), one evaluation serves every question of
        the same shape; when it is also read as blind to their order and reading scopes
        one right at a time (see ``authz.policy_reading``), every question of the same
        ``impact_shapes.question``.
        """
        if not self.memoizable:
            return self._answer(user, right, company)
        weight = _weight(user, company)
        question = impact_shapes.question(user, right, company) if self.by_question else None
        if question is not None:
            return self._memoised(question, right, lambda: shapes.canonical(user, company), weight)
        relabelled = shapes.canonical(user, company)
        return self._memoised(relabelled, right, lambda: relabelled, weight)

    def _memoised(self, key: Hashable, right: str, relabelled: Callable[[], tuple[model.User, model.Company]],
                  weight: int) -> str | None:
        """The memo's answer under ``key``, else the policy's about the ``relabelled`` facts
        (relabelled, so that the rule name it keeps cannot carry an identifier)."""
        with self._memo_lock:
            held = self._memo.get(key)
            if held is not None:
                self._memo.move_to_end(key)
                if right in held[1]:
                    return held[1][right]
        user, company = relabelled()
        found = self._answer(user, right, company)
        if weight > self.memo_size:
            return found
        with self._memo_lock:
            held = self._memo.get(key)
            if held is None:
                held = self._memo[key] = (weight, {})
                self._memo_weight += weight
                while self._memo_weight > self.memo_size:
                    _, (evicted, _) = self._memo.popitem(last=False)
                    self._memo_weight -= evicted
            held[1][right] = found
        return found

    def _answer(self, user: model.User, right: str, company: model.Company) -> str | None:
        if not self.allows(user, right, company):
            return None
        return preferred_rule(self.rules_granting(user, right, company))

    def rights_table(self, user: model.User, company: model.Company) -> dict[str, str | None]:
        """``answer`` for every right of the policy."""
        return {right: self.answer(user, right, company) for right in self.info.rights}

    def rules_granting(self, user: model.User, right: str, company: model.Company) -> list[str]:
        """Name the ``holds_right`` rules that give ``right`` (for reasons and explain)."""
        try:
            found = self._oso.query_rule(
                "holds_right", user, right, company, Variable("rule")
            )
            return sorted({result["bindings"]["rule"] for result in found})
        except OsoError as exc:
            raise PolicyError(f"policy evaluation failed: {exc}") from exc

    def firm_holds(self, firm: str, right: str, company: model.Company, now: float) -> bool:
        return self._once("firm_holds", firm, right, company, now)

    def rights_firm_holds(self, firm: str, company: model.Company, now: float) -> set[str]:
        """Every right the firm holds on the company at ``now``, in one query."""
        try:
            found = self._oso.query_rule("firm_holds", firm, Variable("right"), company, now)
            return {result["bindings"]["right"] for result in found}
        except OsoError as exc:
            raise PolicyError(f"policy evaluation failed: {exc}") from exc

    def may_delegate(self, right: str) -> bool:
        return self._once("may_delegate", right)

    def may_grant(self, user: model.User, right: str, firm: model.Firm, company: model.Company) -> bool:
        return self._once("may_grant", user, right, firm, company)

    def _once(self, rule: str, *args: object) -> bool:
        try:
            return bool(self._oso.query_rule_once(rule, *args))
        except OsoError as exc:
            raise PolicyError(f"policy evaluation failed: {exc}") from exc


def _weight(user: model.User, company: model.Company) -> int:
    """What a memo entry costs: its shape, and each link and membership it holds."""
    return 1 + len(company.delegations) + len(company.grants) + len(user.admin_of) + len(user.manages) \
        + len(user.collaborates)


# Order in which a reason prefers the rules that allowed.
RULE_ORDER = ("company_admin", "firm_manager", "collaborator_grant")


def preferred_rule(rules: list[str]) -> str:
    """The rule a reason names when several allowed."""
    for rule in RULE_ORDER:
        if rule in rules:
            return rule
    return rules[0] if rules else "allowed"


# Rules the engine (Python) queries by name, and oso's own entry points.
ENTRY_RULES = frozenset({
    "allow", "has_permission", "has_role", "has_relation", "right", "delegable",
    "holds_right", "firm_holds", "may_grant", "may_delegate",
})
_HEAD = re.compile(r"^\s*([a-z_][A-Za-z0-9_]*)\s*\(", re.MULTILINE)
_CALL = re.compile(r"([a-z_][A-Za-z0-9_]*)\s*\(")
_COMMENT = re.compile(r"#[^\n]*")


class _IF:
    """Split a Polar statement into head and body at its first ``if`` keyword."""

    _word = re.compile(r"\bif\b")

    @classmethod
    def partition(cls, statement: str) -> tuple[str, str, str]:
        parts = cls._word.split(statement, maxsplit=1)
        return (parts[0], "if", parts[1]) if len(parts) == 2 else (statement, "", "")


def _unused_rules(sources: dict[str, str]) -> list[Problem]:
    """Report rules nothing calls: neither the engine nor another rule (they never fire)."""
    heads: dict[str, tuple[str, int]] = {}
    calls: set[str] = set()
    for name, text in sources.items():
        code = _COMMENT.sub("", text)
        for statement in code.split(";"):
            head, _, body = _IF.partition(statement)
            calls.update(_CALL.findall(body))
            found = _HEAD.match(head)
            if found and found.group(1) not in heads:
                line = code[: code.find(statement)].count("\n") + statement[: found.start(1)].count("\n") + 1
                heads[found.group(1)] = (name, line)
    return [
        Problem(file, line, 1, f"rule {rule} is never called: it can never fire")
        for rule, (file, line) in sorted(heads.items())
        if rule not in ENTRY_RULES and rule not in calls
    ]


class LoadedPolicy:
    """The engine in service; a reload swaps the reference, never edits an engine in place."""

    def __init__(self, root: Path, engine: Engine | None = None):
        """Load the files under ``root``, or serve ``engine`` (built elsewhere) from them."""
        self.root = Path(root)
        self.current = engine or Engine(self.root)
        # Set when the files on disk were refused at start and ``engine`` stands in.
        self.refused_on_disk: list[Problem] = []

    def __call__(self) -> Engine:
        return self.current

    def swap(self, fresh: Engine) -> Engine:
        """Put a fully loaded engine in service; return the one it replaces."""
        previous, self.current = self.current, fresh
        return previous
