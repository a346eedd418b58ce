"""The policy engine: the only module that imports oso.

It loads ``policies.polar`` and ``policies/*.polar`` in one call, then answers
questions over fact objects from ``authz.model``. It holds no data and no rule: every
yes or no comes from Polar. Any failure inside the engine raises ``PolicyError`` so
callers fail closed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from oso import Oso, Variable
from polar.exceptions import OsoError

from authz import model
from authz.errors import PolicyError

FACT_CLASSES = (
    model.User,
    model.Company,
    model.Firm,
    model.Delegation,
    model.Grant,
    model.ApiKey,
)


def policy_files(root: Path) -> list[Path]:
    """Return the policy files under ``root``: ``policies.polar`` then ``policies/*.polar``."""
    root = Path(root)
    files = [root / "policies.polar"] if (root / "policies.polar").is_file() else []
    folder = root / "policies"
    if folder.is_dir():
        files.extend(sorted(folder.glob("*.polar")))
    return files


def policy_version(files: Sequence[Path], root: Path) -> str:
    """Hash file names and contents, so any edit or rename gives a new version."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class PolicyInfo:
    version: str
    files: tuple[str, ...]
    loaded_at: datetime
    rights: tuple[str, ...]
    delegable: frozenset[str]


class Engine:
    """A loaded policy. Build a new one to reload; never reload one in place."""

    def __init__(self, root: Path):
        root = Path(root).resolve()
        files = policy_files(root)
        if not files:
            raise PolicyError(f"no policy files under {root}")
        oso = Oso()
        try:
            for cls in FACT_CLASSES:
                oso.register_class(cls)
            oso.load_files([str(path) for path in files])
            rights = tuple(self._all(oso, "right"))
            delegable = frozenset(self._all(oso, "delegable"))
        except (OsoError, OSError) as exc:
            raise PolicyError(f"policy failed to load: {exc}") from exc
        if not rights:
            raise PolicyError("the policy declares no right(...) fact")
        self._oso = oso
        self.info = PolicyInfo(
            version=policy_version(files, root),
            files=tuple(str(path.relative_to(root)) for path in files),
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

    def rights_held(self, user: model.User, company: model.Company) -> set[str]:
        """Every right ``allow(user, right, company)`` gives, in one query."""
        try:
            found = self._oso.query_rule("allow", user, Variable("right"), company)
            return {result["bindings"]["right"] for result in found} & set(self.info.rights)
        except OsoError as exc:
            raise PolicyError(f"policy evaluation failed: {exc}") from exc

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


class LoadedPolicy:
    """The engine in service; a reload swaps the reference, never edits an engine in place."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.current = Engine(self.root)

    def __call__(self) -> Engine:
        return self.current

    def reload(self) -> Engine:
        """Build and load a new engine, then swap; on failure the running one stays."""
        fresh = Engine(self.root)
        self.current = fresh
        return fresh
