"""What an impact report may assume about a policy, read from its text.

An impact report asks the policy about every shape of facts in the store
(``authz.impact_shapes``), under the running policy and under a draft. Three readings
let it ask fewer questions with the same answers:

* **identifiers by equality**: every ordering comparison (``<``, ``<=``, ``>``, ``>=``)
  has an instant (``X.ends_at`` or ``X.now``) as an operand, and no list pattern or
  ``cut`` could see which element of a sorted list comes first. Polar refuses to
  order a number against a string, so nothing can order two identifiers: only which
  identifiers are equal can matter, not how they sort.
* **one right at a time**: a scope is read only as ``right in X.scope``, where
  ``right`` always holds the right asked of ``allow(user, right, company)``. Then
  whether a user holds right ``r`` depends on each scope only through ``r in scope``.
* **rights answered alike**: for a right ``r``, the two policies are the same text
  once the rules ``allow`` can never reach are left out, and so are the facts that
  can never match a question about ``r`` (``right("formation")`` when ``r`` is
  ``compte``, if ``right`` is only ever asked about the right in question). The
  draft's answers about ``r`` are then the running policy's.

The engine's decision memo uses the first two too (``Engine.answer``), and asks one
more of a policy it groups one right at a time: that ``holds_right(user, right,
company, rule)``, which names the rule behind an allow, is reached from ``allow``
with the question's user, right and company, so that its answers group alike.

Each reading is conservative: what it does not understand (a resource block with
rules in it, a call it cannot parse, an operand it cannot name, ``new``) answers no,
and the report asks more questions, never gets a different answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = r"[A-Za-z_][A-Za-z0-9_]*"
_BLOCK = re.compile(rf"\b(?:actor|resource)\s+{_WORD}\s*\{{([^{{}}]*)\}}")
_BLOCK_START = re.compile(rf"\b(?:actor|resource)\s+{_WORD}\s*\{{")
_NEW = re.compile(rf"\bnew\s+{_WORD}")
_IF = re.compile(r"\bif\b")
_HEAD = re.compile(rf"\s*({_WORD})\s*\((.*)\)\s*", re.DOTALL)
_VARIABLE = re.compile(rf"({_WORD})(?:\s*:\s*{_WORD})?")
_SPECIALIZER = re.compile(rf"{_WORD}\s*:\s*({_WORD})\s*(?:\{{.*\}})?", re.DOTALL)
_CALL = re.compile(rf"(?<![\w.])({_WORD})\s*\(")
_NOT_RULES = frozenset({"not", "forall", "print", "debug", "and", "or", "in", "matches", "if", "cut", "new"})
_ORDERING = re.compile(r"<=|>=|<|>")
_INSTANT = re.compile(rf"{_WORD}(?:\.{_WORD})*\.(?:ends_at|now)")
_OPERAND_BEFORE = re.compile(r"([\w.]*)\s*$")
_OPERAND_AFTER = re.compile(r"\s*([\w.]*)")
_LIST = re.compile(r"\[([^\[\]]*)\]")
_CUT = re.compile(r"\bcut\b")
_SCOPE = re.compile(r"\bscope\b")
_SCOPE_TEST = re.compile(rf"(?<![\w.])({_WORD})\s+in\s+{_WORD}(?:\.{_WORD})*\.scope(?![\w.(])")
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?|\S')
_PLAIN_STRING = re.compile(r'"[^"\\]*"')


@dataclass(frozen=True)
class Coarsening:
    """Which coarser shapes a policy allows, and why not when it does not."""

    identifiers_by_equality: bool
    one_right_at_a_time: bool
    reasons: tuple[str, ...] = ()
    rule_one_right_at_a_time: bool = False  # holds_right's rule names group like allow's answers


def coarsening(sources: dict[str, str]) -> Coarsening:
    """Read ``sources`` for the first two readings (see the module docstring)."""
    policy = _Policy(sources)
    reasons = []
    ordering = policy.order_problem()
    if ordering:
        reasons.append(ordering)
    scope = policy.scope_problem()
    if scope:
        reasons.append(scope)
    by_right = not ordering and not scope
    return Coarsening(not ordering, by_right, tuple(reasons), by_right and policy.asks_holds_right_as_allow())


def rights_answered_alike(before: dict[str, str], after: dict[str, str], rights: set[str]) -> frozenset[str]:
    """The rights of ``rights`` about which ``after`` answers exactly as ``before``."""
    old, new = _Policy(before), _Policy(after)
    if old.unreadable or new.unreadable:
        return frozenset()
    return frozenset(right for right in rights if old.slice(right) == new.slice(right))


@dataclass(frozen=True)
class _Statement:
    masked: str  # comments and string contents blanked, same length as ``plain``
    plain: str  # comments blanked
    name: str | None = None  # the rule's name; None: a block, or not a rule this reading parses
    head: tuple[str | None, ...] = ()  # the variable at each head position, if a plain variable
    classes: tuple[str | None, ...] = ()  # the class each head position is specialized on, if any
    literals: tuple[str | None, ...] = ()  # the string at each head position of a fact, if a plain string
    body: str = ""  # masked
    calls: tuple[tuple[str, tuple[str | None, ...]], ...] = ()

    @property
    def key(self) -> tuple[str, int] | None:
        return None if self.name is None else (self.name, len(self.head))


class _Policy:
    """The statements of a policy, in load order, and what ``allow`` can reach."""

    def __init__(self, sources: dict[str, str]):
        masked, plain = [], []
        for text in sources.values():
            one_masked, one_plain = _mask(text)
            masked.append(one_masked + " ;\n")
            plain.append(one_plain + " ;\n")
        self.masked, self.plain = "".join(masked), "".join(plain)
        self.statements = [_statement(self.masked[a:b], self.plain[a:b]) for a, b in _spans(self.masked)]
        blocks = [s for s in self.statements if _BLOCK.fullmatch(s.masked.strip())]
        self.unreadable = (
            any(block.masked.strip().split("{", 1)[1].strip() != "}" for block in blocks)
            or len(blocks) != len(_BLOCK_START.findall(self.masked))
            or bool(_NEW.search(self.masked))
            or any(s.name is None and s not in blocks for s in self.statements)
        )
        # A question about a right is allow(<a User>, "<right>", <a Company>): definitions whose
        # head asks another class where the user or the company is passed never match it.
        self.live = [s for s in self.statements if s.name is not None]
        while True:
            self.reachable = _reachable(self.live)
            self.holding = _positions_holding(self.live, self.reachable)
            live = [rule for rule in self.live if not _never_matches(rule, self.holding)]
            if len(live) == len(self.live):
                break
            self.live = live
        self.asked = self.holding["right"]

    def order_problem(self) -> str | None:
        """Why the policy might tell how identifiers sort (None: it cannot)."""
        code = self.masked
        for operator in _ORDERING.finditer(code):
            before = _OPERAND_BEFORE.search(code[: operator.start()])
            after = _OPERAND_AFTER.match(code, operator.end())
            operands = (before.group(1) if before else "", after.group(1) if after else "")
            if not any(_INSTANT.fullmatch(operand) for operand in operands):
                return f"orders {operands[0] or '?'} {operator.group()} {operands[1] or '?'}, not an instant"
        # A set may reach the policy as a sorted list: a list pattern or a cut after
        # `x in list` could see which element comes first.
        for found in _LIST.finditer(code):
            if found.group(1).replace('"', " ").replace(",", " ").strip():
                return "matches a list against a pattern with variables"
        if _CUT.search(code):
            return "uses cut"
        return None

    def scope_problem(self) -> str | None:
        if self.unreadable:
            return "has a statement the impact report does not read (resource block with rules, new ...)"
        for rule in self.live:
            if rule.key not in self.reachable:
                continue  # never evaluated for a decision about a right
            head = _IF.split(rule.masked, maxsplit=1)[0]
            if _SCOPE.search(head):
                return f"rule {rule.name} matches a scope in its head"
            mine = self._asked_variables(rule)
            tests = list(_SCOPE_TEST.finditer(rule.body))
            if len(_SCOPE.findall(rule.body)) != len(tests) or any(test.group(1) not in mine for test in tests):
                return f"rule {rule.name} reads a scope other than as `right in X.scope` for the right asked"
        return None

    def asks_holds_right_as_allow(self) -> bool:
        """Whether every call that ``allow`` may reach passes ``holds_right`` the question's
        user, right and company (then the checks above cover it asked directly)."""
        return ("holds_right", 4) in self.reachable and all(
            ("holds_right", 4, position) in self.holding[what]
            for position, what in enumerate(("user", "right", "company"))
        )

    def slice(self, right: str) -> list[tuple[str, ...]]:
        """The statements that can matter to ``allow(user, right, company)``, as tokens."""
        asked = f'"{right}"'
        kept = []
        live = {id(rule) for rule in self.live}
        for statement in self.statements:
            if statement.name is not None:
                if statement.key not in self.reachable or id(statement) not in live:
                    continue
                if statement.literals and any(
                    literal is not None and literal != asked and (statement.name, len(statement.head), i) in self.asked
                    for i, literal in enumerate(statement.literals)
                ):
                    continue  # a fact about another right: a question about `right` never matches it
            kept.append(tuple(_TOKEN.findall(statement.plain)))
        return kept

    def _asked_variables(self, rule: _Statement) -> set[str]:
        return _variables_at(rule, self.asked)


def _mask(text: str) -> tuple[str, str]:
    """(masked, plain): comments blanked in both, string contents blanked in ``masked``."""
    masked, plain, i = [], [], 0
    while i < len(text):
        char = text[i]
        if char == "#":
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            masked.append(" " * (end - i))
            plain.append(" " * (end - i))
            i = end
        elif char == '"':
            end = i + 1
            while end < len(text) and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            end = min(end + 1, len(text))
            masked.append('"' + " " * (end - i - 2) + '"' if end - i >= 2 else '"')
            plain.append(text[i:end])
            i = end
        else:
            masked.append(char)
            plain.append(char)
            i += 1
    return "".join(masked), "".join(plain)


def _spans(code: str) -> list[tuple[int, int]]:
    """Where each statement is: ends at a ``;`` outside brackets, or at a block's ``}``."""
    cuts = sorted({block.end() for block in _BLOCK.finditer(code)})
    spans, depth, start = [], 0, 0
    for i, char in enumerate(code):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if (char == ";" and depth == 0) or (cuts and i + 1 == cuts[0]):
            if cuts and i + 1 == cuts[0]:
                cuts.pop(0)
            end = i if char == ";" else i + 1
            if code[start:end].strip():
                spans.append((start, end))
            start = i + 1
    if code[start:].strip():
        spans.append((start, len(code)))
    return spans


def _statement(masked: str, plain: str) -> _Statement:
    if _BLOCK.fullmatch(masked.strip()):
        return _Statement(masked, plain)
    found = _IF.search(masked)
    head_end = found.start() if found else len(masked)
    head = _HEAD.fullmatch(masked, 0, head_end)
    if not head:
        return _Statement(masked, plain)
    args = _arguments(masked, head.start(2), head.end(2))
    variables = tuple(_variable(masked[a:b]) for a, b in args)
    classes = tuple(found_class.group(1) if (found_class := _SPECIALIZER.fullmatch(masked[a:b].strip())) else None
                    for a, b in args)
    literals: tuple[str | None, ...] = ()
    if not found:
        literals = tuple(plain[a:b].strip() if _PLAIN_STRING.fullmatch(plain[a:b].strip()) else None for a, b in args)
    body = masked[found.end():] if found else ""
    return _Statement(masked, plain, head.group(1), variables, classes, literals, body, _calls(body))


def _arguments(code: str, start: int, end: int) -> list[tuple[int, int]]:
    """Where each argument between ``start`` and ``end`` is (split at commas outside brackets)."""
    if not code[start:end].strip():
        return []
    spans, depth, first = [], 0, start
    for i in range(start, end):
        char = code[i]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            spans.append((first, i))
            first = i + 1
    spans.append((first, end))
    return spans


def _variable(arg: str) -> str | None:
    found = _VARIABLE.fullmatch(arg.strip())
    return found.group(1) if found and found.group(1) != "_" else None


def _calls(body: str) -> tuple[tuple[str, tuple[str | None, ...]], ...]:
    calls = []
    for call in _CALL.finditer(body):
        if call.group(1) in _NOT_RULES:
            continue
        depth, i = 1, call.end()
        while i < len(body) and depth:
            depth += {"(": 1, ")": -1}.get(body[i], 0)
            i += 1
        args = [body[a:b].strip() for a, b in _arguments(body, call.end(), i - 1)]
        calls.append((call.group(1), tuple(arg if re.fullmatch(_WORD, arg) else None for arg in args)))
    return tuple(calls)


def _reachable(rules: list[_Statement]) -> set[tuple[str, int]]:
    """The rules ``allow(actor, action, resource)`` may call, directly or not."""
    found: set[tuple[str, int]] = set()
    todo = [("allow", 3)]
    while todo:
        here = todo.pop()
        if here in found:
            continue
        found.add(here)
        for rule in rules:
            if rule.key == here:
                todo.extend((name, len(args)) for name, args in rule.calls)
    return found


_ROOTS = {"user": ("allow", 3, 0), "right": ("allow", 3, 1), "company": ("allow", 3, 2)}
_CLASSES = {"user": "User", "company": "Company"}


def _positions_holding(rules: list[_Statement],
                       reachable: set[tuple[str, int]]) -> dict[str, set[tuple[str, int, int]]]:
    """Head positions that always hold the user, the right, the company of the question.

    ``allow(user, right, company)`` holds them in its three positions; a position of
    another rule holds one when every call ``allow`` may reach passes there a variable
    that holds it.
    """
    holding = {}
    for what, root in _ROOTS.items():
        positions = {root} | {(name, arity, i) for name, arity in reachable if name != "allow" for i in range(arity)}
        changed = True
        while changed:
            changed = False
            for rule in rules:
                if rule.key not in reachable:
                    continue
                mine = _variables_at(rule, positions)
                for name, args in rule.calls:
                    for i, arg in enumerate(args):
                        if (name, len(args), i) in positions and arg not in mine:
                            positions.discard((name, len(args), i))
                            changed = True
        holding[what] = positions
    return holding


def _variables_at(rule: _Statement, positions: set[tuple[str, int, int]]) -> set[str]:
    found = {rule.head[i] for i in range(len(rule.head)) if (rule.name, len(rule.head), i) in positions}
    return {variable for variable in found if variable is not None}


def _never_matches(rule: _Statement, holding: dict[str, set[tuple[str, int, int]]]) -> bool:
    """Whether the rule's head asks, where the user or the company is passed, for another class."""
    for what in _CLASSES:
        for i, wanted in enumerate(rule.classes):
            if wanted is not None and wanted != _CLASSES[what] and (rule.name, len(rule.head), i) in holding[what]:
                return True
    return False
