"""SIP URIs and name-addr values (RFC 3261 §19.1, §20.10, §25.1).

`SipUri` fields hold *unescaped* text; `str()` re-escapes whatever the grammar requires, so
`SipUri.parse(str(u)) == u`. Parameter names are lowercased (they compare case-insensitively),
values keep their case. Hosts are lowercased; an IPv6 host keeps its brackets ("[2001:db8::1]").
Other schemes (tel:, http:, isbn:, …) parse as `AbsoluteUri`, kept as opaque text.

The scanners here are linear (str.find, anchored regexes without nested repeats), so hostile
input such as long runs of spaces, quotes or semicolons cannot make them backtrack.
"""
from __future__ import annotations

import ipaddress
import re
import string
from dataclasses import dataclass, field


class SipError(ValueError):
    """A SIP message (or part of one) that cannot be accepted.

    `status` and `reason` are the response to answer with when one can be sent: 400 for syntax,
    505 for an unknown SIP version, 513 for an oversized message. `reason` says what was wrong.
    """

    status: int = 400
    reason: str

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class UriError(SipError):
    """A malformed URI, name-addr or parameter list."""


# --- character classes (RFC 3261 §25.1) -------------------------------------------------------
_ALNUM = string.ascii_letters + string.digits
_UNRESERVED = _ALNUM + "-_.!~*'()"
TOKEN_CHARS = frozenset(_ALNUM + "-.!%*_+`'~")
_USER_OK = frozenset(_UNRESERVED + "&=+$,;?/")
_USER_LAX = _USER_OK | {"#"}          # '#' is sent unescaped by many phones (feature codes); accept it
_PASSWORD_OK = frozenset(_UNRESERVED + "&=+$,")
_PARAM_OK = frozenset(_UNRESERVED + "[]/:&+$")
_HNV_OK = frozenset(_UNRESERVED + "[]/?:+$")
_GEN_VALUE_OK = TOKEN_CHARS | frozenset(":[]")  # token / host (incl. IPv6 references)
_HEX = frozenset(string.hexdigits)

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_GEN_VALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+")
_WS_RE = re.compile(r"[ \t]*")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_QUOTE_STOP = re.compile(r'[\\"]')
_SPLIT_STOP = re.compile(r'[",<>\\]')
_BAD_URI_CHARS = re.compile(r'[\x00-\x20\x7f<>"]')
_HOST_RE = re.compile(r"[A-Za-z0-9\-._]+")  # '_' is not in the grammar but real host names have it


def _class_re(chars: frozenset[str]) -> re.Pattern[str]:
    return re.compile("[" + "".join(sorted(re.escape(c) for c in chars)) + "]*")


_CLASS_RES: dict[frozenset[str], re.Pattern[str]] = {}


def is_token(text: str) -> bool:
    """True if text is a non-empty RFC 3261 token."""
    return _TOKEN_RE.fullmatch(text) is not None


def is_digits(text: str) -> bool:
    """True if text is one or more ASCII digits (str.isdigit also accepts other scripts' digits)."""
    return bool(text) and text.isascii() and text.isdigit()


def _unescape(text: str, allowed: frozenset[str], what: str) -> str:
    """Check text against a character class plus %HH escapes and decode it (UTF-8, lossless)."""
    if "%" not in text:
        pattern = _CLASS_RES.get(allowed)
        if pattern is None:
            pattern = _CLASS_RES[allowed] = _class_re(allowed)
        if pattern.fullmatch(text) is None:
            raise UriError(f"Invalid character in {what}")
        return text
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "%":
            h = text[i + 1:i + 3]
            if len(h) != 2 or h[0] not in _HEX or h[1] not in _HEX:
                raise UriError(f"Bad %-escape in {what}")
            out.append(int(h, 16))
            i += 3
        elif c in allowed:
            out.append(ord(c))
            i += 1
        else:
            raise UriError(f"Invalid character in {what}")
    return out.decode("utf-8", "surrogateescape")


def _escape(text: str, allowed: frozenset[str]) -> str:
    if all(c in allowed for c in text):
        return text
    return "".join(chr(b) if chr(b) in allowed else f"%{b:02X}"
                   for b in text.encode("utf-8", "surrogateescape"))


def parse_hostport(text: str, what: str = "host") -> tuple[str, int | None]:
    """Split and check `host[:port]`; host lowercased, IPv6 kept in brackets."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UriError(f"Unterminated IPv6 reference in {what}")
        try:
            ipaddress.IPv6Address(text[1:end])
        except ValueError:
            raise UriError(f"Bad IPv6 address in {what}") from None
        host, rest = text[:end + 1].lower(), text[end + 1:]
    else:
        colon = text.find(":")
        host, rest = (text, "") if colon < 0 else (text[:colon], text[colon:])
        if _HOST_RE.fullmatch(host) is None:
            raise UriError(f"Bad {what}")
        host = host.lower()
    if not rest:
        return host, None
    port = rest[1:]
    if rest[0] != ":" or not is_digits(port) or len(port) > 5 or int(port) > 65535:
        raise UriError(f"Bad port in {what}")
    return host, int(port)


@dataclass
class AbsoluteUri:
    """A URI of a scheme other than sip/sips, kept as opaque text (scheme lowercased)."""
    scheme: str
    text: str

    @classmethod
    def parse(cls, text: str) -> "AbsoluteUri":
        colon = text.find(":")
        if colon <= 0 or not _SCHEME_RE.fullmatch(text[:colon]):
            raise UriError("Bad URI scheme")
        if colon == len(text) - 1:
            raise UriError("Empty URI")
        if _BAD_URI_CHARS.search(text):
            raise UriError("Whitespace or invalid character in URI")
        return cls(text[:colon].lower(), text)

    def __str__(self) -> str:
        return self.text


@dataclass
class SipUri:
    """A sip: or sips: URI with unescaped user, password, parameters and headers."""
    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "SipUri":
        colon = text.find(":")
        scheme = text[:colon].lower() if colon > 0 else ""
        if scheme not in ("sip", "sips"):
            raise UriError("Not a sip: or sips: URI")
        if _BAD_URI_CHARS.search(text):
            raise UriError("Whitespace or invalid character in URI")
        rest = text[colon + 1:]
        user = password = None
        at = rest.find("@")  # '@' is escaped everywhere but as the userinfo delimiter
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1:]
            pc = userinfo.find(":")
            raw_user = userinfo if pc < 0 else userinfo[:pc]
            if not raw_user:
                raise UriError("Empty user in URI")
            user = _unescape(raw_user, _USER_LAX, "URI user")
            if pc >= 0:
                password = _unescape(userinfo[pc + 1:], _PASSWORD_OK, "URI password")
        q = rest.find("?")
        headers_text = None
        if q >= 0:
            rest, headers_text = rest[:q], rest[q + 1:]
        semi = rest.find(";")
        hostport, params_text = (rest, None) if semi < 0 else (rest[:semi], rest[semi + 1:])
        host, port = parse_hostport(hostport, "URI host")
        params: dict[str, str | None] = {}
        if params_text is not None:
            for item in params_text.split(";"):
                name, eq, value = item.partition("=")
                if not name:
                    raise UriError("Empty URI parameter")
                key = _unescape(name, _PARAM_OK, "URI parameter").lower()
                if eq and not value:
                    raise UriError("Empty URI parameter value")
                params.setdefault(key, _unescape(value, _PARAM_OK, "URI parameter") if eq else None)
        headers: dict[str, str] = {}
        if headers_text is not None:
            for item in headers_text.split("&"):
                name, eq, value = item.partition("=")
                if not name or not eq:
                    raise UriError("Bad URI header")
                headers.setdefault(_unescape(name, _HNV_OK, "URI header"), _unescape(value, _HNV_OK, "URI header"))
        return cls(scheme, user, password, host, port, params, headers)

    @property
    def transport(self) -> str:
        """The transport parameter, lowercased; "udp" by default ("tls" for sips:)."""
        t = self.params.get("transport")
        if t:
            return t.lower()
        return "tls" if self.scheme == "sips" else "udp"

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(_escape(self.user, _USER_OK))
            if self.password is not None:
                out += [":", _escape(self.password, _PASSWORD_OK)]
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        for k, v in self.params.items():
            out += [";", _escape(k, _PARAM_OK)]
            if v is not None:
                out += ["=", _escape(v, _PARAM_OK)]
        if self.headers:
            out.append("?")
            out.append("&".join(f"{_escape(k, _HNV_OK)}={_escape(v, _HNV_OK)}" for k, v in self.headers.items()))
        return "".join(out)


def parse_uri(text: str) -> SipUri | AbsoluteUri:
    """A sip:/sips: URI as SipUri, any other scheme as AbsoluteUri."""
    colon = text.find(":")
    if colon > 0 and text[:colon].lower() in ("sip", "sips"):
        return SipUri.parse(text)
    return AbsoluteUri.parse(text)


# --- quoted strings, parameters, comma lists -----------------------------------------------------
def read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read the quoted-string starting at text[pos] == '"'; return (unescaped content, end index)."""
    out = []
    i = pos + 1
    while True:
        m = _QUOTE_STOP.search(text, i)
        if m is None:
            raise UriError("Unterminated quoted string")
        j = m.start()
        out.append(text[i:j])
        if text[j] == '"':
            return "".join(out), j + 1
        if j + 1 >= len(text):
            raise UriError("Unterminated quoted string")
        out.append(text[j + 1])  # quoted-pair
        i = j + 2


def quote(text: str) -> str:
    """text as a quoted-string (backslash-escaping quote, backslash and control characters)."""
    out = ['"']
    for c in text:
        if c in "\r\n":
            c = " "  # cannot be carried in a header; a space is the nearest meaning
        elif c in '"\\' or ord(c) < 0x20 or c == "\x7f":
            out.append("\\")
        out.append(c)
    out.append('"')
    return "".join(out)


def parse_params(text: str, pos: int = 0) -> dict[str, str | None]:
    """Parse `*( SEMI generic-param )` from text[pos:] to the end (names lowercased, first wins).

    A quoted value keeps its quotes so that str() reproduces it exactly.
    """
    params: dict[str, str | None] = {}
    n = len(text)
    while True:
        pos = _WS_RE.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= n:
            return params
        if text[pos] != ";":
            raise UriError("Unexpected text where a ;parameter was expected")
        pos = _WS_RE.match(text, pos + 1).end()  # type: ignore[union-attr]
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            empty = pos >= n or text[pos] in ";,"
            raise UriError("Empty parameter" if empty else "Invalid parameter name")
        name = m.group().lower()
        pos = _WS_RE.match(text, m.end()).end()  # type: ignore[union-attr]
        value = None
        if pos < n and text[pos] == "=":
            pos = _WS_RE.match(text, pos + 1).end()  # type: ignore[union-attr]
            if pos < n and text[pos] == '"':
                start = pos
                _, pos = read_quoted(text, pos)
                value = text[start:pos]
            else:
                m = _GEN_VALUE_RE.match(text, pos)
                if m is None:
                    raise UriError("Empty or invalid parameter value")
                value, pos = m.group(), m.end()
        params.setdefault(name, value)


def param_text(params: dict[str, str | None]) -> str:
    """`;name=value…` for a header parameter dict; values that are not tokens get quoted."""
    out = []
    for k, v in params.items():
        out += [";", k]
        if v is not None:
            out.append("=")
            ok = v and (all(c in _GEN_VALUE_OK for c in v) or (len(v) >= 2 and v[0] == v[-1] == '"'))
            out.append(v if ok else quote(v))
    return "".join(out)


def split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quoted strings and <…>; elements are stripped."""
    out = []
    start = pos = 0
    in_quote = in_angle = False
    while True:
        m = _SPLIT_STOP.search(value, pos)
        if m is None:
            break
        c, i = m.group(), m.start()
        pos = i + 1
        if in_quote:
            if c == "\\":
                pos = i + 2
            elif c == '"':
                in_quote = False
        elif c == '"' and not in_angle:
            in_quote = True
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == "," and not in_angle:
            out.append(value[start:i].strip(" \t"))
            start = i + 1
    out.append(value[start:].strip(" \t"))
    return out


# --- name-addr -----------------------------------------------------------------------------------
@dataclass
class NameAddr:
    """A From/To/Contact/Route/Record-Route value: display name, URI, header parameters (tag …)."""
    display: str | None
    uri: SipUri | AbsoluteUri
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "NameAddr":
        s = text.strip(" \t")
        if not s:
            raise UriError("Empty address")
        display: str | None
        if s[0] == '"':
            display, pos = read_quoted(s, 0)
            pos = _WS_RE.match(s, pos).end()  # type: ignore[union-attr]
            if pos >= len(s) or s[pos] != "<":
                raise UriError("Quoted display name not followed by <URI>")
            uri, pos = _read_angle(s, pos)
        elif 0 <= (lt := s.find("<")) and (";" not in s[:lt]):  # '<' after ';' is in a param value
            words = s[:lt].split()
            if not all(is_token(w) for w in words):
                raise UriError("Display name with non-token characters must be quoted")
            display = s[:lt].strip(" \t") or None
            uri, pos = _read_angle(s, lt)
        else:
            semi = s.find(";")
            pos = len(s) if semi < 0 else semi
            uri_text = s[:pos].rstrip(" \t")
            if " " in uri_text or "\t" in uri_text:
                raise UriError("Whitespace in addr-spec (a display name needs <URI>)")
            if "," in uri_text or "?" in uri_text:
                raise UriError("URI containing ',' or '?' must be enclosed in <>")
            display, uri = None, parse_uri(uri_text)
        return cls(display, uri, parse_params(s, pos))

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        head = "" if self.display is None else quote(self.display) + " "
        return f"{head}<{self.uri}>{param_text(self.params)}"


def _read_angle(s: str, pos: int) -> tuple[SipUri | AbsoluteUri, int]:
    end = s.find(">", pos + 1)
    if end < 0:
        raise UriError("Missing '>' after URI")
    inner = s[pos + 1:end]
    if not inner:
        raise UriError("Empty <URI>")
    if inner != inner.strip(" \t"):
        raise UriError("Whitespace inside <URI>")
    return parse_uri(inner), end + 1


def parse_name_addr_list(value: str) -> list[NameAddr]:
    """Parse a comma list of name-addr/addr-spec values (one header line or several joined by ", ").

    Contact's wildcard "*" is not an address: it raises UriError; test for it before calling.
    """
    out = []
    for item in split_commas(value):
        if not item:
            raise UriError("Empty element in address list")
        if item == "*":
            raise UriError("'*' is not an address")
        out.append(NameAddr.parse(item))
    return out
