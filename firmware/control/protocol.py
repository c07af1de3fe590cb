"""FreeSWITCH's inbound event-socket framing (mod_event_socket), byte for byte.

What the server sends:

- ``auth/request`` greeting, ``command/reply`` (``Reply-Text``), ``api/response`` and
  ``text/disconnect-notice`` / ``text/rude-rejection`` with a body: every Content-Length counts the
  UTF-8 bytes that follow, never characters.
- Events as ``text/event-plain`` (``Name: url-encoded value`` lines, FreeSWITCH's
  ``switch_event_serialize``), ``text/event-json`` (one object, the body under ``_body``) or
  ``text/event-xml`` (``<event><headers>…</headers><body>…</body></event>``).

What the client sends: a packet is a command line, optional ``Name: value`` header lines, a blank
line, and a body of ``Content-Length`` bytes when that header is present (``sendevent``).
``read_packet`` enforces limits; a malformed packet raises ``ProtocolError`` (the connection is
then closed: its framing can no longer be trusted).
"""
from __future__ import annotations

import json
import re

from firmware.switch.events import Event

MAX_LINE_BYTES = 16 * 1024      # one command or header line
MAX_HEADER_BYTES = 64 * 1024    # the whole header block of one packet
MAX_BODY_BYTES = 256 * 1024     # a sendevent body; FreeSWITCH allows 10 MB, nothing here needs it

UNDEF = "_undef_"  # what switch_event_serialize writes for an empty value
FORMATS = ("plain", "json", "xml")

# switch_utils.h SWITCH_URL_UNSAFE; control characters and every non-ASCII byte are encoded too.
_UNSAFE = "\r\n #%&+:;<=>?@[\\]^`{|}\""
_ENCODE = ["%%%02X" % b if b < 0x20 or b > 0x7E or chr(b) in _UNSAFE else chr(b) for b in range(256)]
_NEEDS = re.compile(r"[^\x21-\x7e]|[#%&+:;<=>?@\[\\\]^`{|}\"]")
_XML_NAME = re.compile(r"[A-Za-z_][\w.-]*\Z")


class ProtocolError(ValueError):
    """A packet that breaks the framing (bad Content-Length, oversize, not UTF-8)."""


def url_encode(text: str) -> str:
    """FreeSWITCH's ``switch_url_encode`` on the UTF-8 bytes of ``text``.

    Deliberate difference: ``%`` is always encoded (FreeSWITCH leaves an existing ``%XX`` alone),
    so every value decodes back to exactly what was sent.
    """
    if not _NEEDS.search(text):
        return text
    return "".join([_ENCODE[b] for b in text.encode("utf-8")])


# --- events -----------------------------------------------------------------------------------------

def serialize_plain(event: Event) -> str:
    """``switch_event_serialize(event, encode=TRUE)``: header lines, then the body if any."""
    parts = [f"{name}: {url_encode(value) or UNDEF}\n" for name, value in event.headers.items()
             if name != "Content-Length"]
    if event.body:
        parts.append(f"Content-Length: {len(event.body.encode('utf-8'))}\n\n{event.body}")
    else:
        parts.append("\n")
    return "".join(parts)


def serialize_json(event: Event) -> str:
    """``switch_event_serialize_json``: one flat object of strings; the body under ``_body``."""
    obj = {name: value for name, value in event.headers.items() if name != "Content-Length"}
    if event.body:
        obj["Content-Length"] = str(len(event.body.encode("utf-8")))
        obj["_body"] = event.body
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def xml_escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&apos;"))


def serialize_xml(event: Event) -> str:
    """``switch_event_xmlize``: one element per header with its url-encoded value.

    A header whose name cannot be an XML element name (only possible through ``sendevent``) is
    left out rather than producing a document no parser accepts.
    """
    lines = ["<event>\n", "  <headers>\n"]
    for name, value in event.headers.items():
        if name == "Content-Length" or not _XML_NAME.match(name):
            continue
        lines.append(f"    <{name}>{xml_escape(url_encode(value))}</{name}>\n")
    if event.body:
        lines.append(f"    <Content-Length>{len(event.body.encode('utf-8'))}</Content-Length>\n")
    lines.append("  </headers>\n")
    if event.body:
        lines.append(f"  <body>{xml_escape(event.body)}</body>\n")
    lines.append("</event>")
    return "".join(lines)


_SERIALIZERS = {"plain": serialize_plain, "json": serialize_json, "xml": serialize_xml}


def event_frame(event: Event, fmt: str = "plain") -> bytes:
    """One event as the socket carries it: Content-Length, Content-Type, blank line, payload."""
    try:
        serializer = _SERIALIZERS[fmt]
    except KeyError:
        raise ValueError(f"unknown event format {fmt!r} (expected plain, json or xml)") from None
    payload = serializer(event).encode("utf-8")
    return b"Content-Length: %d\nContent-Type: text/event-%s\n\n" % (len(payload), fmt.encode()) + payload


# --- replies ----------------------------------------------------------------------------------------

AUTH_REQUEST = b"Content-Type: auth/request\n\n"


def _one_line(text: str) -> str:
    # a header value cannot carry a newline: it would end the header block early
    return text.replace("\r", " ").replace("\n", " ")


def command_reply(text: str, headers: dict[str, str] | None = None) -> bytes:
    """``Content-Type: command/reply`` with ``Reply-Text`` (and extra headers, e.g. Job-UUID)."""
    out = f"Content-Type: command/reply\nReply-Text: {_one_line(text)}\n"
    for name, value in (headers or {}).items():
        out += f"{name}: {_one_line(value)}\n"
    return (out + "\n").encode("utf-8")


def _with_body(content_type: str, body: str) -> bytes:
    data = body.encode("utf-8")
    return b"Content-Type: %s\nContent-Length: %d\n\n" % (content_type.encode(), len(data)) + data


def api_response(body: str) -> bytes:
    return _with_body("api/response", body)


def disconnect_notice(message: str = "Disconnected, goodbye.\n") -> bytes:
    return _with_body("text/disconnect-notice", message)


def rude_rejection(message: str = "Access Denied, go away.\n") -> bytes:
    return _with_body("text/rude-rejection", message)


# --- what the client sends --------------------------------------------------------------------------

class Packet:
    """One client packet: the command line, its headers (in order) and the body."""

    __slots__ = ("command", "headers", "body")

    def __init__(self, command: str, headers: list[tuple[str, str]] | None = None, body: str = "") -> None:
        self.command = command
        self.headers = headers or []
        self.body = body

    def header(self, name: str) -> str | None:
        """A header by name, case-insensitively (FreeSWITCH's switch_event_get_header)."""
        low = name.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return None

    def __repr__(self) -> str:
        verb = self.command.split(" ", 1)[0]
        return f"<Packet {verb} headers={len(self.headers)} body={len(self.body)}>"


def parse_content_length(text: str) -> int:
    value = text.strip()
    if not value.isdigit():
        raise ProtocolError(f"Content-Length must be a non-negative integer (got {value[:20]!r})")
    n = int(value)
    if n > MAX_BODY_BYTES:
        raise ProtocolError(f"Content-Length {n} exceeds the limit of {MAX_BODY_BYTES} bytes")
    return n


def parse_header_block(lines: list[str]) -> Packet:
    """The command line and ``Name: value`` lines (lines without a colon are ignored, as in FS)."""
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip():
            headers.append((name.strip(), value.lstrip(" ")))
    return Packet(lines[0], headers)


async def read_packet(reader, *, max_header_bytes: int = MAX_HEADER_BYTES) -> Packet | None:
    """Read one packet; None at end of stream (also mid-packet); ProtocolError when malformed.

    Blank lines before a command are skipped, as FreeSWITCH does. ``\\r\\n`` line ends are accepted.
    """
    lines: list[str] = []
    total = 0
    while True:
        try:
            raw = await reader.readline()
        except ValueError:  # CPython: the line outgrew the stream's buffer limit
            raise ProtocolError(f"line longer than {MAX_LINE_BYTES} bytes") from None
        if not raw:
            return None
        total += len(raw)
        if len(raw) > MAX_LINE_BYTES or total > max_header_bytes:
            raise ProtocolError(f"command header block longer than {max_header_bytes} bytes")
        if not raw.endswith(b"\n"):
            return None  # end of stream inside a line
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise ProtocolError("command is not valid UTF-8") from None
        if not line:
            if lines:
                break
            continue
        lines.append(line)
    packet = parse_header_block(lines)
    clen = packet.header("Content-Length")
    if clen is not None:
        n = parse_content_length(clen)
        packet.headers = [(k, v) for k, v in packet.headers if k.lower() != "content-length"]
        if n:
            try:
                data = await reader.readexactly(n)
            except EOFError:  # IncompleteReadError: the client went away mid-body
                return None
            try:
                packet.body = data.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("body is not valid UTF-8") from None
    return packet
