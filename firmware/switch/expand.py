"""Channel-variable expansion, FreeSWITCH style.

- ``${name}``: the channel variable, else the global, else "".
- ``${api(args)}``: an API call through the ``ApiRegistry`` (``${db(select/spymap/1001)}``); the
  arguments are expanded first, so ``${db(select/spymap/${caller_id_number})}`` works.
- ``${${name}}``: nested; the inner text is expanded, then looked up.
- ``$${name}``: a global (FreeSWITCH does these at load time; here at expansion time).
- An unterminated ``${`` is left as written.

``substitute_captures`` is the other half: the regex captures ``$0..$N`` of a dialplan condition,
substituted into action data while hunting (before any ``${}`` expansion, as FreeSWITCH does).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

ApiFunction = Callable[[str, Any], str]  # (args, channel or None) -> result text

_API_CALL = re.compile(r"([A-Za-z_][\w.-]*)\((.*)\)\Z", re.S)
_CAPTURE = re.compile(r"\$(\d+)")
MAX_DEPTH = 16


class ApiRegistry:
    """Named API functions usable as ``${name(args)}`` (the control socket adds its own)."""

    def __init__(self) -> None:
        self._apis: dict[str, ApiFunction] = {}

    def register(self, name: str, fn: ApiFunction) -> None:
        self._apis[name] = fn

    def unregister(self, name: str) -> None:
        self._apis.pop(name, None)

    def __contains__(self, name: str) -> bool:
        return name in self._apis

    def names(self) -> list[str]:
        return sorted(self._apis)

    def call(self, name: str, args: str, channel: Any = None) -> str:
        """The API's text; an unknown API or a failing one logs and gives ""."""
        fn = self._apis.get(name)
        if fn is None:
            log.warning("unknown API %r in expansion", name)
            return ""
        try:
            result = fn(args, channel)
        except Exception:
            log.exception("API %s(%s) failed", name, args)
            return ""
        return "" if result is None else str(result)


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` matching the ``{`` at ``start``, or -1."""
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def expand(text: str, variables: Mapping[str, str] | Callable[[str], str | None],
           apis: ApiRegistry | None = None, globals_: Mapping[str, str] | None = None,
           channel: Any = None, _depth: int = 0) -> str:
    """Expand ``${…}`` and ``$${…}`` in ``text``; ``variables`` is a mapping or a lookup function."""
    if "$" not in text:
        return text
    if _depth > MAX_DEPTH:
        raise ValueError("variable expansion nested too deeply")
    lookup = variables.get if isinstance(variables, Mapping) else variables
    glob = globals_ or {}
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c != "$":
            out.append(c)
            i += 1
            continue
        is_global = text.startswith("$${", i)
        brace = i + 2 if is_global else i + 1
        if brace >= n or text[brace] != "{":
            out.append(c)
            i += 1
            continue
        end = _closing_brace(text, brace)
        if end < 0:  # unterminated: keep the rest literally
            out.append(text[i:])
            break
        inner = expand(text[brace + 1:end], variables, apis, globals_, channel, _depth + 1)
        if is_global:
            out.append(str(glob.get(inner, "")))
        else:
            m = _API_CALL.match(inner)
            if m and apis is not None:
                out.append(apis.call(m.group(1), m.group(2), channel))
            else:
                value = lookup(inner)
                if value is None:
                    value = glob.get(inner)
                out.append("" if value is None else str(value))
        i = end + 1
    return "".join(out)


def substitute_captures(data: str, groups: Sequence[str | None]) -> str:
    """Replace ``$N`` by capture N (``$0`` the whole match); a missing or unmatched group gives ""."""
    if "$" not in data:
        return data

    def repl(m: re.Match) -> str:
        k = int(m.group(1))
        return (groups[k] or "") if k < len(groups) else ""

    return _CAPTURE.sub(repl, data)
