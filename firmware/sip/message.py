"""SIP messages: parse, frame, build and encode requests and responses (RFC 3261 §7, §8.2.6, §20).

`parse` takes one datagram (or one frame cut by `frame_stream`) and returns a Request or Response,
or raises SipError, and nothing else. It checks the start line and the syntax of the headers the
stack relies on (Via, From, To, Contact, Route, Record-Route, CSeq, Call-ID, Max-Forwards,
Content-Length, Date); other headers are kept as text. Whether required headers are present or
single-valued is a separate question answered by `validate.check_request`.

Header values are kept as received (unfolded, trimmed) in `Headers`; typed views (`vias`, `from_`,
`cseq` …) are parsed on access. Text is decoded as UTF-8 with surrogateescape, so any byte
survives parse→encode unchanged.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from .uri import (AbsoluteUri, NameAddr, SipError, SipUri, UriError, is_digits, is_token, param_text,
                  parse_hostport, parse_name_addr_list, parse_params, parse_uri, split_commas)

__all__ = ["SipError", "Headers", "Via", "Request", "Response", "parse", "frame_stream", "StreamFramer",
           "make_response", "new_tag", "new_branch", "MAX_MESSAGE", "MAX_LINE", "MAX_HEADERS"]

MAX_MESSAGE = 65535   # bytes in one message (the UDP limit, RFC 3261 §18.1.1)
MAX_LINE = 8192       # bytes in the start line or one header after unfolding
MAX_HEADERS = 128     # header fields in one message
_INTERNAL = "Malformed message (parser fault)"  # the reason of the safety net in parse(); see tests

# compact forms (RFC 3261 §7.3.3 and later RFCs' registrations)
_COMPACT = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact", "k": "Supported",
    "l": "Content-Length", "m": "Contact", "n": "Identity-Info", "o": "Event", "r": "Refer-To",
    "s": "Subject", "t": "To", "u": "Allow-Events", "v": "Via", "x": "Session-Expires", "y": "Identity",
}
_KNOWN = {n.lower(): n for n in (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length", "Content-Type",
    "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "History-Info", "Identity",
    "Identity-Info", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE",
    "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Priority", "Privacy",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route",
    "Refer-To", "Referred-By", "Reject-Contact", "Replaces", "Reply-To", "Request-Disposition",
    "Require", "Retry-After", "Route", "RSeq", "Server", "Service-Route", "Session-Expires",
    "SIP-ETag", "SIP-If-Match", "Subject", "Subscription-State", "Supported", "Timestamp", "To",
    "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate")}
# headers whose grammar is a comma list; getall() splits these. Authorization, WWW-Authenticate,
# Date, User-Agent … contain commas inside one value and are never split.
_LIST_HEADERS = frozenset(n.lower() for n in (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Call-Info", "Contact", "Content-Encoding", "Content-Language", "Error-Info",
    "History-Info", "In-Reply-To", "P-Asserted-Identity", "P-Preferred-Identity", "Path",
    "Proxy-Require", "Reason", "Record-Route", "Reject-Contact", "Require", "Route",
    "Security-Client", "Security-Server", "Security-Verify", "Service-Route", "Supported",
    "Unsupported", "Via", "Warning"))


def canonical_name(name: str) -> str:
    """The full, conventionally capitalised header name (compact forms expanded)."""
    low = name.lower()
    if len(low) == 1 and low in _COMPACT:
        return _COMPACT[low]
    return _KNOWN.get(low, name)


# --- headers -------------------------------------------------------------------------------------
class Headers:
    """Ordered, case-insensitive header fields; one entry per header line as received.

    Names are stored in canonical form (`i` → `Call-ID`, `cseq` → `CSeq`); unknown names keep
    their spelling. Values are single-line text without CR/LF.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []  # (lowercase key, name, value)
        for name, value in items:
            self.add(name, value)

    @staticmethod
    def _key(name: str) -> str:
        return canonical_name(name).lower()

    @staticmethod
    def _check(name: str, value: str) -> None:
        if not isinstance(name, str) or not is_token(name):
            raise ValueError(f"header name must be a token, got {name!r}")
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise ValueError(f"header {name} value must be a str without CR/LF")

    def _append(self, name: str, value: str) -> None:  # parser path: already checked
        cname = canonical_name(name)
        self._items.append((cname.lower(), cname, value))

    def get(self, name: str) -> str | None:
        """The first value of this header, or None."""
        key = self._key(name)
        for k, _, v in self._items:
            if k == key:
                return v
        return None

    def getall(self, name: str) -> list[str]:
        """Every value in order; list-valued headers (Via, Contact, Route, Accept …) are split on
        top-level commas and empty elements dropped. Other headers give one value per line."""
        key = self._key(name)
        values = [v for k, _, v in self._items if k == key]
        if key not in _LIST_HEADERS:
            return values
        return [e for v in values for e in split_commas(v) if e]

    def count(self, name: str) -> int:
        """How many header lines of this name there are."""
        key = self._key(name)
        return sum(1 for k, _, _ in self._items if k == key)

    def set(self, name: str, value: str) -> None:
        """Replace every line of this header with one (at the first one's place, or at the end)."""
        self._check(name, value)
        cname = canonical_name(name)
        key = cname.lower()
        for i, (k, _, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (key, cname, value)
                self._items[i + 1:] = [it for it in self._items[i + 1:] if it[0] != key]
                return
        self._items.append((key, cname, value))

    def add(self, name: str, value: str, first: bool = False) -> None:
        """Add a line: at the end, or with first=True above the topmost line of this name
        (at the very top when there is none)."""
        self._check(name, value)
        cname = canonical_name(name)
        key = cname.lower()
        item = (key, cname, value)
        if first:
            for i, (k, _, _) in enumerate(self._items):
                if k == key:
                    self._items.insert(i, item)
                    return
            self._items.insert(0, item)
        else:
            self._items.append(item)

    def remove(self, name: str) -> None:
        """Remove every line of this header (no error when there is none)."""
        key = self._key(name)
        self._items = [it for it in self._items if it[0] != key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter([(n, v) for _, n, v in self._items])

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    def copy(self) -> "Headers":
        h = Headers()
        h._items = list(self._items)
        return h

    def __repr__(self) -> str:
        return f"Headers({[(n, v) for _, n, v in self._items]!r})"


# --- Via -----------------------------------------------------------------------------------------
_VIA_PROTO = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)"
                        r"[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+")
_SENT_BY = re.compile(r"[^;\s]+")


@dataclass
class Via:
    """One Via value: SIP/2.0/<transport> <host>[:<port>] with parameters (names lowercased).

    `"rport" in via.params` says the sender asked for rport (RFC 3581); `via.rport` is its value.
    """
    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "Via":
        s = text.strip(" \t")
        m = _VIA_PROTO.match(s)
        if m is None:
            raise SipError("Bad Via sent-protocol")
        if m.group(1).upper() != "SIP" or m.group(2) != "2.0":
            raise SipError("Via protocol is not SIP/2.0")
        sb = _SENT_BY.match(s, m.end())
        if sb is None:
            raise SipError("Via has no sent-by")
        try:
            host, port = parse_hostport(sb.group(), "Via sent-by")
            params = parse_params(s, sb.end())
        except UriError as exc:
            raise SipError(exc.reason) from None
        rport = params.get("rport")
        if rport is not None and not (is_digits(rport) and len(rport) <= 5):
            raise SipError("Bad Via rport")
        return cls(m.group(3).upper(), host, port, params)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The rport value when it has one (a number), else None."""
        v = self.params.get("rport")
        return int(v) if v is not None and is_digits(v) else None

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{param_text(self.params)}"


def parse_cseq(value: str) -> tuple[int, str]:
    """`CSeq` → (number, method); the number must fit 32 bits unsigned."""
    parts = value.split()
    if len(parts) != 2:
        raise SipError("Bad CSeq header")
    num, method = parts
    if not is_digits(num):
        raise SipError("Bad CSeq number")
    if len(num.lstrip("0")) > 10 or int(num) > 0xFFFFFFFF:
        raise SipError("CSeq number out of range")
    if not is_token(method):
        raise SipError("Bad CSeq method")
    return int(num), method


def _small_int(value: str, what: str, limit: int) -> int:
    v = value.strip(" \t")
    if v.startswith("-") and is_digits(v[1:]):
        raise SipError(f"Negative {what}")
    if not is_digits(v):
        raise SipError(f"Bad {what}")
    if len(v.lstrip("0")) > 10 or int(v) > limit:
        raise SipError(f"{what} out of range")
    return int(v)


# --- messages ------------------------------------------------------------------------------------
class _Message:
    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        """The Call-ID ("" when absent; validate.check_request answers that with a 400)."""
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """(number, method) of the CSeq; SipError when absent or malformed."""
        v = self.headers.get("CSeq")
        if v is None:
            raise SipError("Missing CSeq")
        return parse_cseq(v)

    @property
    def vias(self) -> list[Via]:
        """Every Via value, topmost first (a fresh list of fresh objects on each access)."""
        return [Via.parse(v) for v in self.headers.getall("Via")]

    @property
    def from_(self) -> NameAddr | None:
        """The From value (None when absent)."""
        v = self.headers.get("From")
        return None if v is None else NameAddr.parse(v)

    @property
    def to(self) -> NameAddr | None:
        """The To value (None when absent)."""
        v = self.headers.get("To")
        return None if v is None else NameAddr.parse(v)

    @property
    def max_forwards(self) -> int | None:
        v = self.headers.get("Max-Forwards")
        return None if v is None else _small_int(v, "Max-Forwards", 255)

    def _start_line(self) -> str:
        raise NotImplementedError

    def encode(self) -> bytes:
        """The message as bytes; Content-Length is (re)written from the body, in place of the
        first Content-Length line (others dropped), or appended."""
        body = bytes(self.body)
        lines = [self._start_line()]
        wrote_length = False
        for key, name, value in self.headers._items:
            if key == "content-length":
                if wrote_length:
                    continue
                value, wrote_length = str(len(body)), True
            lines.append(f"{name}: {value}")
        if not wrote_length:
            lines.append(f"Content-Length: {len(body)}")
        lines += ["", ""]
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body


@dataclass(eq=True)
class Request(_Message):
    method: str
    uri: SipUri | AbsoluteUri
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def _start_line(self) -> str:
        if not is_token(self.method):
            raise ValueError(f"method must be a token, got {self.method!r}")
        return f"{self.method} {self.uri} SIP/2.0"


@dataclass(eq=True)
class Response(_Message):
    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def _start_line(self) -> str:
        if not (isinstance(self.status, int) and 100 <= self.status <= 699):
            raise ValueError(f"status must be 100..699, got {self.status!r}")
        if "\r" in self.reason or "\n" in self.reason:
            raise ValueError("reason phrase must not contain CR/LF")
        return f"SIP/2.0 {self.status} {self.reason}"


# --- parsing -------------------------------------------------------------------------------------
_VERSION_RE = re.compile(r"SIP/[0-9]{1,3}\.[0-9]{1,3}", re.IGNORECASE)
_DATE_RE = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct"
                      r"|Nov|Dec) ([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT")
_CALL_ID_RE = re.compile(r"[^\x00-\x20\x7f]+")  # lenient: any visible text, no whitespace


def _check_version(version: str) -> None:
    if version.upper() == "SIP/2.0":
        return
    if _VERSION_RE.fullmatch(version):
        raise SipError("SIP Version Not Supported", 505)
    raise SipError("Bad SIP-Version")


def _parse_request_line(line: bytes) -> tuple[str, SipUri | AbsoluteUri]:
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise SipError("Non-ASCII character in request line") from None
    if text != text.rstrip(" \t"):
        raise SipError("Trailing whitespace in request line")
    if "\t" in text or "  " in text:
        raise SipError("Extra whitespace in request line")
    parts = text.split(" ")
    if len(parts) < 3:
        raise SipError("Request line has no SIP-Version")
    if len(parts) > 3:
        raise SipError("Whitespace in Request-URI")
    method, uri_text, version = parts
    if not is_token(method):
        raise SipError("Bad method")
    _check_version(version)
    if uri_text.startswith("<"):
        raise SipError("Request-URI must not be enclosed in <>")
    try:
        uri = parse_uri(uri_text)
    except UriError as exc:
        raise SipError(f"Bad Request-URI: {exc.reason}") from None
    if isinstance(uri, SipUri) and uri.headers:
        raise SipError("Headers not allowed in Request-URI")
    return method, uri


def _parse_status_line(line: bytes) -> tuple[int, str]:
    text = line.decode("utf-8", "surrogateescape")
    parts = text.split(" ", 2)
    _check_version(parts[0])
    if len(parts) < 2:
        raise SipError("Status line has no status code")
    code = parts[1]
    if len(code) != 3 or not is_digits(code):
        raise SipError("Status code must be three digits")
    status = int(code)
    if not 100 <= status <= 699:
        raise SipError("Status code out of range")
    return status, parts[2] if len(parts) == 3 else ""


def _check_call_id(value: str) -> None:
    if _CALL_ID_RE.fullmatch(value) is None:
        raise SipError("Bad Call-ID")


def _check_contact(value: str) -> None:
    if value.strip(" \t") != "*":
        parse_name_addr_list(value)


def _check_via(value: str) -> None:
    for item in split_commas(value):
        if not item:
            raise SipError("Empty Via value")
        Via.parse(item)


def _check_date(value: str) -> None:
    m = _DATE_RE.fullmatch(value)
    if m is None or int(m.group(2)) > 31 or int(m.group(5)) > 23 or int(m.group(6)) > 59 \
            or int(m.group(7)) > 60:
        raise SipError("Date must be an RFC 1123 date in GMT")


_CHECKS = {
    "via": _check_via,
    "from": NameAddr.parse,
    "to": NameAddr.parse,
    "contact": _check_contact,
    "route": parse_name_addr_list,
    "record-route": parse_name_addr_list,
    "cseq": parse_cseq,
    "call-id": _check_call_id,
    "max-forwards": lambda v: _small_int(v, "Max-Forwards", 255),
    "content-length": lambda v: _small_int(v, "Content-Length", 0xFFFFFFFF),
    "date": _check_date,
}


def _split_head(data: bytes) -> tuple[list[bytes], int, bool]:
    """Start line + header lines, where the body starts, and whether the empty line was missing."""
    start = 0
    while data.startswith(b"\r\n", start):  # CRLFs before the start line are ignored (§7.5)
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end >= 0:
        head, body_start, missing = data[start:end], end + 4, False
    else:
        head, body_start, missing = data[start:], len(data), True
        if head.endswith(b"\r\n"):
            head = head[:-2]
    if not head:
        raise SipError("Empty message")
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
        raise SipError("Bare CR or LF in header section")
    return head.split(b"\r\n"), body_start, missing


def _parse_headers(lines: list[bytes]) -> Headers:
    fields: list[list[bytes]] = []
    for raw in lines:
        if raw[:1] in (b" ", b"\t"):
            if not fields:
                raise SipError("Continuation line before the first header")
            fields[-1].append(raw)
        else:
            fields.append([raw])
            if len(fields) > MAX_HEADERS:
                raise SipError("Too many header fields")
    headers = Headers()
    for parts in fields:
        first = parts[0]
        colon = first.find(b":")
        if colon < 0:
            raise SipError("Header line without a colon")
        name_bytes = first[:colon].rstrip(b" \t")
        try:
            name = name_bytes.decode("ascii")
        except UnicodeDecodeError:
            name = ""
        if not is_token(name):
            raise SipError("Bad header name")
        if len(parts) == 1:
            value = first[colon + 1:].strip(b" \t")
        else:  # unfold: each line break + indent becomes one SP
            pieces = [p.strip(b" \t") for p in [first[colon + 1:], *parts[1:]]]
            value = b" ".join(p for p in pieces if p)
        if len(value) + len(name_bytes) > MAX_LINE:
            raise SipError("Header field too long")
        headers._append(name, value.decode("utf-8", "surrogateescape"))
    return headers


def parse(data: bytes) -> Request | Response:
    """Parse one message (a UDP datagram or one `frame_stream` frame).

    The body is Content-Length bytes (extra bytes after it are ignored, RFC 3261 §18.3); with no
    Content-Length — or conflicting ones, which validate answers with a 400 — it is the rest of the
    data. For any bytes it raises SipError (status 400, 505 or 513, reason saying what was wrong)
    and nothing else; a non-bytes argument is a TypeError.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse() takes bytes, not {type(data).__name__}")
    try:
        return _parse(bytes(data))
    except SipError:
        raise
    except Exception as exc:  # safety net for the contract; the fuzz tests assert it never fires
        raise SipError(_INTERNAL) from exc


def _parse(data: bytes) -> Request | Response:
    if len(data) > MAX_MESSAGE:
        raise SipError("Message Too Large", 513)
    lines, body_start, missing_blank = _split_head(data)
    if len(lines[0]) > MAX_LINE:
        raise SipError("Start line too long")
    is_response = lines[0][:4].upper() == b"SIP/"
    if is_response:
        status, reason = _parse_status_line(lines[0])
    else:
        method, uri = _parse_request_line(lines[0])
    headers = _parse_headers(lines[1:])
    lengths = []
    for key, name, value in headers._items:
        check = _CHECKS.get(key)
        if check is None:
            continue
        try:
            result = check(value)
        except SipError as exc:
            raise SipError(f"Bad {name} header: {exc.reason}") from None
        if key == "cseq" and not is_response and result[1] != method:
            raise SipError("CSeq method does not match the request method")
        if key == "content-length":
            lengths.append(result)
    if missing_blank:
        raise SipError("No empty line after the headers")
    if len(lengths) == 1:
        if lengths[0] > len(data) - body_start:
            raise SipError("Content-Length larger than the message")
        body = data[body_start:body_start + lengths[0]]
    else:
        body = data[body_start:]
    if is_response:
        return Response(status, reason, headers, body)
    return Request(method, uri, headers, body)


def _stream_content_length(head: bytes) -> int:
    values = set()
    logical: list[bytes] = []
    for raw in head.split(b"\r\n")[1:]:
        if raw[:1] in (b" ", b"\t") and logical:
            logical[-1] += b" " + raw.strip(b" \t")
        else:
            logical.append(raw)
    for line in logical:
        name, colon, value = line.partition(b":")
        if colon and name.rstrip(b" \t").lower() in (b"content-length", b"l"):
            values.add(value.strip(b" \t"))
    if not values:
        raise SipError("Content-Length is required on a stream transport")
    if len(values) > 1:
        raise SipError("Conflicting Content-Length values")
    try:
        text = values.pop().decode("ascii")
    except UnicodeDecodeError:
        raise SipError("Bad Content-Length") from None
    return _small_int(text, "Content-Length", 0xFFFFFFFF)


def frame_stream(buf: bytearray, max_size: int) -> bytes | None:
    """Pop one complete message off a TCP receive buffer, or return None when more is needed.

    CRLFs before a message (keep-alives) are discarded. Content-Length is required (§18.3).
    SipError (513 when a message would exceed max_size) means the stream cannot be framed any
    more (the buffer keeps the bad message); the connection should be closed.
    Each call searches the whole buffer again, so a peer trickling bytes costs O(n²) in total;
    `StreamFramer` remembers how far it has looked and stays linear.
    """
    i = 0
    while buf[i:i + 2] == b"\r\n":
        i += 2
    if i:
        del buf[:i]
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > max_size:
            raise SipError("Message Too Large", 513)
        return None
    total = end + 4 + _stream_content_length(bytes(buf[:end]))
    if total > max_size:
        raise SipError("Message Too Large", 513)
    if len(buf) < total:
        return None
    msg = bytes(buf[:total])
    del buf[:total]
    return msg


class StreamFramer:
    """Linear-time TCP framing: `feed(data)` returns the complete messages now in the buffer.

    Same rules and errors as `frame_stream` (after a SipError, close the connection). `pings`
    counts the CRLFCRLF keep-alives discarded so far; RFC 5626 §4.4.1 answers each with a CRLF.
    """

    def __init__(self, max_size: int = MAX_MESSAGE) -> None:
        self.buf = bytearray()
        self.max_size = max_size
        self.pings = 0
        self._scanned = 0            # no end-of-headers before this offset (less 3)
        self._total: int | None = None  # the current message's length once its head is complete
        self._crlfs = 0              # CRLFs seen since the last ping or message

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out: list[bytes] = []
        buf = self.buf
        while True:
            if self._total is None:
                i = 0
                while buf.startswith(b"\r\n", i):
                    i += 2
                if i:
                    self._crlfs += i // 2
                    self.pings += self._crlfs // 2
                    self._crlfs %= 2
                    del buf[:i]
                    self._scanned = max(0, self._scanned - i)
                if buf[:1] not in (b"", b"\r"):
                    self._crlfs = 0  # a message starts: a lone CRLF before it was no ping
                end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
                if end < 0:
                    self._scanned = len(buf)
                    if len(buf) > self.max_size:
                        raise SipError("Message Too Large", 513)
                    return out
                total = end + 4 + _stream_content_length(bytes(buf[:end]))
                if total > self.max_size:
                    raise SipError("Message Too Large", 513)
                self._total = total
            if len(buf) < self._total:
                return out
            out.append(bytes(buf[:self._total]))
            del buf[:self._total]
            self._total, self._scanned = None, 0


# --- building responses --------------------------------------------------------------------------
REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
    199: "Early Dialog Terminated", 200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 417: "Unknown Resource-Priority",
    420: "Bad Extension", 421: "Extension Required", 422: "Session Interval Too Small",
    423: "Interval Too Brief", 428: "Use Identity Header", 429: "Provide Referrer Identity",
    433: "Anonymity Disallowed", 436: "Bad Identity-Info", 437: "Unsupported Certificate",
    438: "Invalid Identity Header", 439: "First Hop Lacks Outbound Support", 440: "Max-Breadth Exceeded",
    469: "Bad Info Package", 470: "Consent Needed", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    494: "Security Agreement Required", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
    607: "Unwanted",
}
_CLASS_REASONS = {1: "Progress", 2: "OK", 3: "Redirection", 4: "Client Error", 5: "Server Error",
                  6: "Global Failure"}


def default_reason(status: int) -> str:
    return REASONS.get(status) or _CLASS_REASONS.get(status // 100, "Unknown")


def new_tag() -> str:
    """A fresh random From/To tag (RFC 3261 §19.3: at least 32 bits of randomness)."""
    return secrets.token_hex(6)


def new_branch() -> str:
    """A fresh RFC 3261 branch (magic cookie + 64 random bits)."""
    return "z9hG4bK" + secrets.token_hex(8)


def make_response(req: Request, status: int, reason: str | None = None,
                  to_tag: str | None = None) -> Response:
    """A response to req per RFC 3261 §8.2.6: the Via lines, From, Call-ID, CSeq and To copied.

    When the request's To has no tag and status > 100, the To gets `to_tag` (a fresh random tag
    when None); a To that already has a tag is copied unchanged. A 100 copies Timestamp
    (§8.2.6.1). Record-Route is not copied: that is the dialog layer's job (§12.1.1). Headers the
    request lacks are left out, so this works for the 400s answering incomplete requests.
    """
    if not (isinstance(status, int) and 100 <= status <= 699):
        raise ValueError(f"status must be 100..699, got {status!r}")
    h = Headers()
    for key, name, value in req.headers._items:
        if key == "via":
            h._append(name, value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = req.headers.get(name)
        if value is None:
            continue
        if name == "To" and (status > 100 or to_tag is not None):
            try:
                has_tag = NameAddr.parse(value).tag is not None
            except SipError:
                has_tag = True  # leave a To we cannot read as it is
            if not has_tag:
                value = f"{value};tag={to_tag or new_tag()}"
        h._append(name, value)
    if status == 100 and "Timestamp" in req.headers:
        h._append("Timestamp", req.headers.get("Timestamp") or "")
    return Response(status, reason if reason is not None else default_reason(status), h)
