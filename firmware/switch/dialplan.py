"""FreeSWITCH's XML dialplan: load and validate at once, hunt per call.

Format: ``<include>`` / ``<document>`` / ``<section name="dialplan">`` around ``<context name>``s;
a context holds ``<extension name continue>``s; an extension holds ``<condition field expression
break>``s (nested conditions allowed); a condition holds ``<action application data inline loop>``
and ``<anti-action>``s.

Hunting follows mod_dialplan_xml: extensions in order; in each, conditions in order. A condition
without a field is true. A true condition adds its actions (``$N`` replaced by its own regex
captures), a false one its anti-actions; an extension whose last evaluated condition was true (or
added anti-actions) has matched, and hunting stops at the first matched extension without
``continue="true"``. ``break`` (default on-false) stops the extension's conditions: on-false after
a false one, on-true after a true one, always, or never. ``inline="true"`` actions run during
hunting; the others are collected and run afterwards, with ``${…}`` expanded just before each one.

A file that is not valid XML, has an unknown element or attribute, misses a required attribute or
holds a bad regex is rejected whole with its line and the reason (``DialplanError``);
``DialplanHolder.reload`` keeps the dialplan in force when that happens.
"""
from __future__ import annotations

import logging
from importlib import resources
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from xml.parsers import expat

from .expand import substitute_captures

log = logging.getLogger(__name__)

BREAKS = ("on-false", "on-true", "always", "never")
# switch_caller_get_field_by_name: the caller-profile fields a condition may name
PROFILE_FIELDS = frozenset({
    "destination_number", "caller_id_number", "caller_id_name", "ani", "aniii", "network_addr",
    "rdnis", "uuid", "source", "context", "chan_name", "username", "dialplan",
    "caller_ton", "caller_numplan", "destination_number_ton", "destination_number_numplan",
    "rdnis_ton", "rdnis_numplan", "uuid_str",
})
_TIME_ATTRS = frozenset({"year", "yday", "mon", "mday", "week", "mweek", "wday", "hour", "minute",
                         "minute-of-day", "time-of-day", "date-time", "tod_tz_offset"})
_ALLOWED_ATTRS = {
    "include": frozenset(),
    "document": frozenset({"type"}),
    "section": frozenset({"name", "description"}),
    "context": frozenset({"name"}),
    "extension": frozenset({"name", "continue"}),
    "condition": frozenset({"field", "expression", "break", "require-nested"}),
    "action": frozenset({"application", "data", "inline", "loop"}),
    "anti-action": frozenset({"application", "data", "inline", "loop"}),
    "expression": frozenset(),
}
_CHILDREN = {
    "include": ("document", "section", "context", "extension"),
    "document": ("section",),
    "section": ("context",),
    "context": ("extension",),
    "extension": ("condition",),
    "condition": ("condition", "action", "anti-action", "expression"),
    "action": (),
    "anti-action": (),
    "expression": (),
}
MAX_NESTING = 100
DEFAULT_CONTEXT = "default"


class DialplanError(ValueError):
    """An unusable dialplan file: ``source``, ``line`` and ``reason``."""

    def __init__(self, source: str, line: int | None, reason: str) -> None:
        self.source = source
        self.line = line
        self.reason = reason
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {reason}")


# --- the parsed form --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Action:
    application: str
    data: str
    inline: bool = False
    loop: int = 1
    line: int = 0


@dataclass
class Condition:
    field: str | None
    expression: str | None
    regex: re.Pattern | None  # None: absolute, or compiled per call (the expression holds ${…})
    brk: str = "on-false"
    require_nested: bool = True
    actions: list[Action] = field(default_factory=list)
    anti_actions: list[Action] = field(default_factory=list)
    children: list[Condition] = field(default_factory=list)
    line: int = 0


@dataclass
class Extension:
    name: str
    cont: bool
    conditions: list[Condition]
    line: int = 0


@dataclass(frozen=True)
class PlannedAction:
    """One application collected by hunting: run after hunting, in order."""

    application: str
    data: str
    extension: str


class HuntHost(Protocol):
    """What hunting needs from the switch: expansion and inline execution."""

    def expand(self, channel: Any, text: str) -> str: ...

    async def run_app(self, channel: Any, application: str, data: str, extension: str,
                      inline: bool = False) -> None: ...


# --- loading ----------------------------------------------------------------------------------------

class _Node:
    __slots__ = ("tag", "attrs", "line", "children", "text")

    def __init__(self, tag: str, attrs: dict[str, str], line: int) -> None:
        self.tag = tag
        self.attrs = attrs
        self.line = line
        self.children: list[_Node] = []
        self.text: list[str] = []


def _parse_xml(text: str, source: str) -> _Node:
    parser = expat.ParserCreate()
    stack: list[_Node] = []
    root: list[_Node] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        node = _Node(tag, attrs, parser.CurrentLineNumber)
        if stack:
            stack[-1].children.append(node)
        else:
            root.append(node)
        stack.append(node)

    def end(tag: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        if stack:
            stack[-1].text.append(data)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(text, True)
    except expat.ExpatError as exc:
        raise DialplanError(source, exc.lineno, f"not well-formed XML: {expat.ErrorString(exc.code)}") from None
    return root[0]


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("true", "yes", "on", "1", "enabled", "active", "allow")


class _Loader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: _Node, reason: str) -> DialplanError:
        return DialplanError(self.source, node.line, reason)

    def check(self, node: _Node, parent: str | None) -> None:
        if node.tag not in _ALLOWED_ATTRS:
            hint = ""
            if node.tag == "regex":
                hint = " (regex=any/all/xor conditions are not supported)"
            elif node.tag.upper() == "X-PRE-PROCESS":
                hint = " (pre-processor includes are not supported: put everything in one file)"
            raise self.fail(node, f"unknown element <{node.tag}>{hint}")
        if parent is not None and node.tag not in _CHILDREN[parent]:
            raise self.fail(node, f"<{node.tag}> is not allowed inside <{parent}>")
        allowed = _ALLOWED_ATTRS[node.tag]
        for attr in node.attrs:
            if attr not in allowed:
                if node.tag == "condition" and attr in _TIME_ATTRS:
                    raise self.fail(node, f"time-of-day condition attribute {attr!r} is not supported")
                if node.tag == "condition" and attr == "regex":
                    raise self.fail(node, "regex=any/all/xor conditions are not supported")
                expected = ", ".join(sorted(allowed)) or "none"
                raise self.fail(node, f"unknown attribute {attr!r} on <{node.tag}> (expected: {expected})")
        if node.tag not in ("action", "anti-action", "expression") and "".join(node.text).strip():
            raise self.fail(node, f"unexpected text inside <{node.tag}>")

    def load(self, root: _Node) -> dict[str, list[Extension]]:
        self.check(root, None)
        contexts: dict[str, list[Extension]] = {}
        if root.tag in ("action", "anti-action", "condition", "extension", "expression"):
            raise self.fail(root, f"<{root.tag}> cannot be the document root (expected <include> or <context>)")
        self._walk(root, contexts)
        if not contexts:
            raise DialplanError(self.source, root.line, "no <context> found")
        return contexts

    def _walk(self, node: _Node, contexts: dict[str, list[Extension]]) -> None:
        if node.tag == "context":
            name = node.attrs.get("name", "").strip()
            if not name:
                raise self.fail(node, "<context> needs a name attribute")
            exts = contexts.setdefault(name, [])
            for child in node.children:
                self.check(child, "context")
                exts.append(self._extension(child))
            return
        if node.tag == "section" and node.attrs.get("name", "dialplan") != "dialplan":
            return  # other sections of a full freeswitch.xml are not ours
        for child in node.children:
            self.check(child, node.tag)
            if child.tag == "extension":  # a dialplan/default/*.xml style file: extensions of "default"
                contexts.setdefault(DEFAULT_CONTEXT, []).append(self._extension(child))
            else:
                self._walk(child, contexts)

    def _extension(self, node: _Node) -> Extension:
        name = node.attrs.get("name", "").strip()
        if not name:
            raise self.fail(node, "<extension> needs a name attribute")
        conds = []
        for child in node.children:
            self.check(child, "extension")
            conds.append(self._condition(child, 1))
        return Extension(name, _is_true(node.attrs.get("continue")), conds, node.line)

    def _condition(self, node: _Node, depth: int) -> Condition:
        if depth > MAX_NESTING:
            raise self.fail(node, "conditions nested too deeply")
        a = node.attrs
        brk = a.get("break", "on-false").strip().lower()
        if brk not in BREAKS:
            raise self.fail(node, f"break must be one of {', '.join(BREAKS)} (got {a.get('break')!r})")
        cond = Condition(field=None, expression=None, regex=None, brk=brk, line=node.line,
                         require_nested=_is_true(a.get("require-nested", "true")))
        expression = a.get("expression")
        for child in node.children:
            self.check(child, "condition")
            if child.tag == "expression":
                if expression is not None:
                    raise self.fail(child, "expression given twice (attribute and element)")
                expression = "".join(child.text).strip()
            elif child.tag == "condition":
                cond.children.append(self._condition(child, depth + 1))
            else:
                act = self._action(child)
                (cond.actions if child.tag == "action" else cond.anti_actions).append(act)
        fld = a.get("field")
        if fld is not None:
            fld = fld.strip()
            if not fld:
                raise self.fail(node, "empty field attribute")
            if "$" not in fld and fld not in PROFILE_FIELDS:
                raise self.fail(node, f"unknown field {fld!r} (use a caller-profile field such as "
                                      "destination_number, or ${variable})")
            if expression is None:
                raise self.fail(node, f"condition on field {fld!r} needs an expression")
        elif expression is not None:
            raise self.fail(node, "expression without a field attribute")
        cond.field = fld
        cond.expression = expression
        if expression is not None and not _has_variables(expression):
            try:
                cond.regex = re.compile(expression)
            except re.error as exc:
                raise self.fail(node, f"bad regular expression {expression!r}: {exc}") from None
        return cond

    def _action(self, node: _Node) -> Action:
        app = node.attrs.get("application", "").strip()
        if not app:
            raise self.fail(node, f"<{node.tag}> needs an application attribute")
        if not re.fullmatch(r"[A-Za-z_][\w-]*", app):
            raise self.fail(node, f"bad application name {app!r}")
        text = "".join(node.text).strip()
        if text and "data" in node.attrs:
            raise self.fail(node, "data given twice (attribute and element text)")
        loop_text = node.attrs.get("loop", "1").strip()
        if not loop_text.isdigit() or not 1 <= int(loop_text) <= 1000:
            raise self.fail(node, f"loop must be a number 1-1000 (got {loop_text!r})")
        return Action(app, text or node.attrs.get("data", ""), _is_true(node.attrs.get("inline")),
                      int(loop_text), node.line)


def _has_variables(expression: str) -> bool:
    # ${var} / $${var} are expanded per call; a bare $ is a regex anchor
    return "${" in expression


# --- hunting ----------------------------------------------------------------------------------------

def _profile_field(channel: Any, name: str) -> str:
    if name == "chan_name":
        return channel.name
    if name in ("uuid", "uuid_str"):
        return channel.uuid
    v = channel.get_variable(name)
    if v is None and name in ("ani",):
        v = channel.get_variable("caller_id_number")
    return v or ""


class Dialplan:
    """A validated dialplan: contexts of extensions."""

    def __init__(self, contexts: dict[str, list[Extension]], source: str = "<string>") -> None:
        self.contexts = contexts
        self.source = source

    @classmethod
    def parse(cls, text: str, source: str = "<string>") -> Dialplan:
        loader = _Loader(source)
        return cls(loader.load(_parse_xml(text, source)), source)

    @classmethod
    def load(cls, path: str | Path) -> Dialplan:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DialplanError(str(p), None, f"cannot read: {exc}") from None
        return cls.parse(text, str(p))

    @classmethod
    def builtin(cls) -> Dialplan:
        # package data (pyproject's package-data ships it in the wheel), read wherever installed
        text = resources.files(__package__).joinpath("builtin_dialplan.xml").read_text(encoding="utf-8")
        return cls.parse(text, "<built-in dialplan>")

    def applications(self) -> set[str]:
        """Every application name the dialplan uses (for checks against the registry)."""
        names: set[str] = set()

        def walk(conds: list[Condition]) -> None:
            for c in conds:
                names.update(a.application for a in c.actions + c.anti_actions)
                walk(c.children)

        for exts in self.contexts.values():
            for ext in exts:
                walk(ext.conditions)
        return names

    def context(self, name: str) -> list[Extension] | None:
        """The named context, else FreeSWITCH's fallback: a context called "global"."""
        return self.contexts.get(name, self.contexts.get("global"))

    async def hunt(self, channel: Any, host: HuntHost) -> list[PlannedAction]:
        """Collect the actions for ``channel`` (running inline ones now)."""
        ctx_name = channel.get_variable("context") or "default"
        exts = self.context(ctx_name)
        if exts is None:
            log.warning("%s: context %r not found in %s", channel.name, ctx_name, self.source)
            return []
        log.info("%s: processing %s <%s> -> %s in context %s", channel.name,
                 channel.get_variable("caller_id_name") or "", channel.get_variable("caller_id_number") or "",
                 channel.get_variable("destination_number") or "", ctx_name)
        plan: list[PlannedAction] = []
        for ext in exts:
            matched = await self._conditions(channel, host, ext, ext.conditions, plan, nested=False,
                                             require_nested=True)
            if matched and not ext.cont:
                break
        return plan

    async def _conditions(self, channel: Any, host: HuntHost, ext: Extension, conds: list[Condition],
                          plan: list[PlannedAction], nested: bool, require_nested: bool) -> bool:
        proceed = False
        for cond in conds:
            matched, groups = self._evaluate(channel, host, ext, cond)
            proceed = matched
            if not matched:
                for act in cond.anti_actions:
                    await self._add(channel, host, ext, act, act.data, plan)
                    proceed = True
            else:
                subst = groups is not None and cond.expression is not None and "(" in cond.expression
                for act in cond.actions:
                    data = substitute_captures(act.data, groups) if subst else act.data
                    await self._add(channel, host, ext, act, data, plan)
            if (matched and cond.brk == "on-true") or (not matched and cond.brk == "on-false") \
                    or cond.brk == "always":
                break
            if proceed and cond.children:
                proceed = await self._conditions(channel, host, ext, cond.children, plan, True,
                                                 cond.require_nested)
                if not proceed:
                    if cond.brk == "never":
                        continue
                    break
        if nested and not require_nested:
            proceed = True
        return proceed

    def _evaluate(self, channel: Any, host: HuntHost, ext: Extension,
                  cond: Condition) -> tuple[bool, tuple | None]:
        if cond.field is None:
            return True, None
        if "$" in cond.field:
            data = host.expand(channel, cond.field)
        else:
            data = _profile_field(channel, cond.field)
        regex = cond.regex
        if regex is None:
            expr = host.expand(channel, cond.expression or "")
            try:
                regex = re.compile(expr)
            except re.error as exc:
                log.error("%s: [%s] line %d: bad regular expression %r after expansion: %s",
                          channel.name, ext.name, cond.line, expr, exc)
                return False, None
        m = regex.search(data)
        log.debug("%s: [%s] %s(%s) =~ /%s/ %s", channel.name, ext.name, cond.field, data,
                  regex.pattern, "PASS" if m else "FAIL")
        if not m:
            return False, None
        return True, (m.group(0),) + m.groups()

    async def _add(self, channel: Any, host: HuntHost, ext: Extension, act: Action, data: str,
                   plan: list[PlannedAction]) -> None:
        for _ in range(act.loop):
            if act.inline:
                await host.run_app(channel, act.application, data, ext.name, inline=True)
            else:
                plan.append(PlannedAction(act.application, data, ext.name))


class DialplanHolder:
    """The dialplan in force; a failed reload keeps the previous one."""

    def __init__(self, dialplan: Dialplan | None = None) -> None:
        self.current = dialplan if dialplan is not None else Dialplan.builtin()
        self.last_error: DialplanError | None = None

    def reload(self, path: str | Path | None = None) -> bool:
        """Load ``path`` (None: the built-in dialplan); on error log it, keep the old one, False."""
        try:
            new = Dialplan.load(path) if path else Dialplan.builtin()
        except DialplanError as exc:
            self.last_error = exc
            log.error("dialplan rejected, keeping %s: %s", self.current.source, exc)
            return False
        self.current = new
        self.last_error = None
        log.info("dialplan loaded from %s (%d contexts)", new.source, len(new.contexts))
        return True
