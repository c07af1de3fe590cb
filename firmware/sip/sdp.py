"""SDP (RFC 4566) parsing and encoding, and audio offer/answer (RFC 3264).

Works on text only; the SIP layer hands us message bodies and sends what we return.
One audio stream per call: the first acceptable audio section is used, every other
section is answered with port 0 in the same position, as RFC 3264 §6 requires.

SRTP (``srtp=`` "off" | "offer" | "require"): keys by SDES (``a=crypto``, see ``sdes``). "offer"
offers RTP/AVP with a=crypto (best effort: a plain answer means plain RTP) and accepts plain or
keyed offers; "require" offers RTP/SAVP and accepts only offers with a usable a=crypto. "off"
ignores a=crypto and refuses RTP/SAVP.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import secrets
from dataclasses import dataclass, field

from . import sdes

__all__ = [
    "SdpError", "NoCommonCodec", "Origin", "Connection", "Timing", "RtpMap", "Media",
    "SessionDescription", "Negotiated", "parse", "make_offer", "negotiate", "parse_answer",
    "bump_version", "DIRECTIONS", "STATIC_PAYLOAD_TYPES", "SRTP_POLICIES", "offered_cryptos",
]

SRTP_POLICIES = ("off", "offer", "require")

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

#: RFC 3551 static payload types we can name when no rtpmap is given: pt -> (name, clock rate).
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 8: ("PCMA", 8000),
    9: ("G722", 8000), 13: ("CN", 8000), 18: ("G729", 8000),
}
_STATIC_BY_NAME = {name: (pt, rate) for pt, (name, rate) in STATIC_PAYLOAD_TYPES.items()}

TELEPHONE_EVENT = "telephone-event"
#: RFC 4733 events we handle: DTMF 0-9 * # A-D.
TELEPHONE_EVENT_FMTP = "0-15"
#: Packetisation assumed when the peer does not say (RFC 3551 §4.5 default for G.711).
DEFAULT_PTIME = 20


class SdpError(ValueError):
    """Malformed SDP. ``line`` is the 1-based line number (None when not line-specific)."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)


class NoCommonCodec(ValueError):
    """The offer has no audio stream we can accept; the caller answers 488 Not Acceptable Here.

    Deliberately not an SdpError: the SDP was well formed (400 is for SdpError).
    """


@dataclass
class Origin:
    username: str
    session_id: str
    version: int
    nettype: str
    addrtype: str
    address: str


@dataclass
class Connection:
    nettype: str
    addrtype: str
    address: str  # may carry a multicast /ttl[/count] suffix, kept verbatim

    @property
    def host(self) -> str:
        """The address without a multicast /ttl[/count] suffix."""
        return self.address.partition("/")[0]

    @property
    def is_ip(self) -> bool:
        """An IP literal (the parser has checked it matches the address type); else a host name,
        which the media plane does not resolve."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def is_hold(self) -> bool:
        """RFC 2543 hold: an unspecified address means "do not send to me"."""
        return self.address in ("0.0.0.0", "::")


@dataclass
class Timing:
    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)  # r= lines, verbatim


@dataclass
class RtpMap:
    encoding: str
    clock_rate: int
    channels: int | None = None

    def __str__(self) -> str:
        text = f"{self.encoding}/{self.clock_rate}"
        return text if self.channels is None else f"{text}/{self.channels}"


Attribute = tuple[str, "str | None"]  # (name, value); value None for a flag like a=rtcp-mux


@dataclass
class Media:
    kind: str                       # audio, video, image, application, ...
    port: int
    proto: str                      # RTP/AVP, RTP/SAVP, udptl, ...
    formats: list[str]
    port_count: int | None = None   # the /2 of "m=audio 49170/2 ..."
    info: str | None = None
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    key: str | None = None
    rtpmap: dict[int, RtpMap] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    ptime: int | None = None
    direction: str | None = None
    attributes: list[Attribute] = field(default_factory=list)  # all other a= lines, in order

    @property
    def payload_types(self) -> list[int]:
        """Formats as RTP payload types (non-numeric formats are skipped)."""
        return [int(f) for f in self.formats if f.isascii() and f.isdigit()]

    def codec(self, pt: int) -> RtpMap | None:
        """The rtpmap for ``pt``, falling back to the static table for 0-95."""
        if pt in self.rtpmap:
            return self.rtpmap[pt]
        if pt in STATIC_PAYLOAD_TYPES:
            name, rate = STATIC_PAYLOAD_TYPES[pt]
            return RtpMap(name, rate)
        return None


@dataclass
class SessionDescription:
    origin: Origin
    name: str = "-"
    version: int = 0
    info: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    timing: list[Timing] = field(default_factory=lambda: [Timing()])
    zone: str | None = None
    key: str | None = None
    direction: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    media: list[Media] = field(default_factory=list)

    def media_connection(self, m: Media) -> Connection | None:
        return m.connection or self.connection

    def media_direction(self, m: Media) -> str:
        """A section's direction: its own attribute, else the session's, else sendrecv."""
        return m.direction or self.direction or "sendrecv"

    def encode(self) -> bytes:
        """The description as SDP text with CRLF line ends, lines in RFC 4566 order."""
        out: list[str] = [f"v={self.version}"]
        o = self.origin
        out.append(f"o={o.username} {o.session_id} {o.version} {o.nettype} {o.addrtype} {o.address}")
        out.append(f"s={self.name}")
        _opt(out, "i", self.info)
        _opt(out, "u", self.uri)
        out += [f"e={e}" for e in self.emails]
        out += [f"p={p}" for p in self.phones]
        if self.connection:
            out.append(_conn(self.connection))
        out += [f"b={b}" for b in self.bandwidths]
        for t in self.timing:
            out.append(f"t={t.start} {t.stop}")
            out += [f"r={r}" for r in t.repeats]
        _opt(out, "z", self.zone)
        _opt(out, "k", self.key)
        out += [_attr(a) for a in self.attributes]
        if self.direction:
            out.append(f"a={self.direction}")
        for m in self.media:
            _encode_media(out, m)
        return ("\r\n".join(out) + "\r\n").encode("utf-8")


def _opt(out: list[str], kind: str, value: str | None) -> None:
    if value is not None:
        out.append(f"{kind}={value}")


def _conn(c: Connection) -> str:
    return f"c={c.nettype} {c.addrtype} {c.address}"


def _attr(a: Attribute) -> str:
    return f"a={a[0]}" if a[1] is None else f"a={a[0]}:{a[1]}"


def _encode_media(out: list[str], m: Media) -> None:
    port = f"{m.port}/{m.port_count}" if m.port_count is not None else str(m.port)
    out.append(" ".join([f"m={m.kind} {port} {m.proto}", *m.formats]))
    _opt(out, "i", m.info)
    if m.connection:
        out.append(_conn(m.connection))
    out += [f"b={b}" for b in m.bandwidths]
    _opt(out, "k", m.key)
    # rtpmap/fmtp in format order first (the usual layout), then any for unlisted pts.
    listed = [pt for pt in m.payload_types]
    order = listed + sorted((set(m.rtpmap) | set(m.fmtp)) - set(listed))
    seen: set[int] = set()
    for pt in order:
        if pt in seen:
            continue
        seen.add(pt)
        if pt in m.rtpmap:
            out.append(f"a=rtpmap:{pt} {m.rtpmap[pt]}")
        if pt in m.fmtp:
            out.append(f"a=fmtp:{pt} {m.fmtp[pt]}")
    if m.ptime is not None:
        out.append(f"a=ptime:{m.ptime}")
    out += [_attr(a) for a in m.attributes]
    if m.direction:
        out.append(f"a={m.direction}")


# --- parsing -------------------------------------------------------------------------------

_SESSION_TYPES = set("vosiuepcbtrzka")
_MEDIA_TYPES = set("micbka")
_SINGLE_SESSION = set("vosiuczk")  # at most once at session level


def parse(text: str | bytes) -> SessionDescription:
    """Parse an SDP body. Raises SdpError naming the line and the reason."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        raw = bytes(text)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SdpError("not valid UTF-8", raw[: e.start].count(b"\n") + 1) from None
    if not isinstance(text, str):
        raise SdpError(f"expected str or bytes, got {type(text).__name__}")
    try:
        text.encode("utf-8")  # lone surrogates would only fail later, in encode()
    except UnicodeEncodeError as e:
        raise SdpError("not valid UTF-8", text[: e.start].count("\n") + 1) from None
    lines = text.split("\n")
    while lines and lines[-1].strip("\r") == "":
        lines.pop()  # trailing line ends
    if not lines:
        raise SdpError("empty session description")
    return _Parser().run(lines)


class _Parser:
    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.session_attrs: list[Attribute] = []
        self.session_dir: str | None = None
        self.timing: list[Timing] = []
        self.media: list[Media] = []
        self.media_lines: list[int] = []
        self.session_conn: Connection | None = None

    def run(self, lines: list[str]) -> SessionDescription:
        s: dict = {"emails": [], "phones": [], "bandwidths": []}
        for no, line in enumerate(lines, 1):
            if line.endswith("\r"):
                line = line[:-1]
            if "\r" in line or "\x00" in line:
                raise SdpError("stray CR or NUL character", no)
            if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
                raise SdpError(f"expected '<type>=<value>', got {line[:40]!r}", no)
            kind, value = line[0], line[2:]
            if no == 1:
                if kind != "v":
                    raise SdpError("first line must be v=", no)
                if value != "0":
                    raise SdpError(f"unsupported version v={value[:20]}", no)
                continue
            if kind == "m":
                self.media.append(_parse_m(value, no))
                self.media_lines.append(no)
                continue
            if self.media:
                self._media_line(self.media[-1], kind, value, no)
            else:
                self._session_line(s, kind, value, no)
        if "origin" not in s:
            raise SdpError("missing o= line")
        if "name" not in s:
            raise SdpError("missing s= line")
        for m, no in zip(self.media, self.media_lines):
            if m.port != 0 and m.connection is None and self.session_conn is None:
                raise SdpError("media section has no c= line and the session has none", no)
        return SessionDescription(
            origin=s["origin"], name=s["name"], version=0, info=s.get("info"), uri=s.get("uri"),
            emails=s["emails"], phones=s["phones"], connection=self.session_conn,
            bandwidths=s["bandwidths"], timing=self.timing, zone=s.get("zone"), key=s.get("key"),
            direction=self.session_dir, attributes=self.session_attrs, media=self.media)

    def _session_line(self, s: dict, kind: str, value: str, no: int) -> None:
        if kind not in _SESSION_TYPES:
            raise SdpError(f"unknown line type '{kind}='", no)
        if kind in _SINGLE_SESSION:
            if kind in self.seen:
                raise SdpError(f"more than one {kind}= line", no)
            self.seen.add(kind)
        if kind == "v":
            raise SdpError("v= must be the first line", no)
        elif kind == "o":
            s["origin"] = _parse_o(value, no)
        elif kind == "s":
            s["name"] = value  # RFC 4317 examples use an empty s=; accept it
        elif kind == "i":
            s["info"] = value
        elif kind == "u":
            s["uri"] = value
        elif kind == "e":
            s["emails"].append(value)
        elif kind == "p":
            s["phones"].append(value)
        elif kind == "c":
            self.session_conn = _parse_c(value, no)
        elif kind == "b":
            s["bandwidths"].append(_parse_b(value, no))
        elif kind == "t":
            self.timing.append(_parse_t(value, no))
        elif kind == "r":
            if not self.timing:
                raise SdpError("r= without a preceding t=", no)
            self.timing[-1].repeats.append(value)
        elif kind == "z":
            s["zone"] = value
        elif kind == "k":
            s["key"] = value
        elif kind == "a":
            name, val = _split_attr(value, no)
            if name in DIRECTIONS and val is None:
                if self.session_dir is not None and self.session_dir != name:
                    raise SdpError(f"conflicting direction a={name} after a={self.session_dir}", no)
                self.session_dir = name
            else:
                self.session_attrs.append((name, val))

    def _media_line(self, m: Media, kind: str, value: str, no: int) -> None:
        if kind not in _MEDIA_TYPES:
            if kind in _SESSION_TYPES:
                raise SdpError(f"{kind}= is a session-level line but appears in a media section", no)
            raise SdpError(f"unknown line type '{kind}='", no)
        if kind == "i":
            if m.info is not None:
                raise SdpError("more than one i= line in a media section", no)
            m.info = value
        elif kind == "c":
            if m.connection is not None:
                raise SdpError("more than one c= line in a media section (multicast layers unsupported)", no)
            m.connection = _parse_c(value, no)
        elif kind == "b":
            m.bandwidths.append(_parse_b(value, no))
        elif kind == "k":
            m.key = value
        else:
            _media_attr(m, *_split_attr(value, no), no)


def _split_attr(value: str, no: int) -> tuple[str, str | None]:
    name, sep, val = value.partition(":")
    if not name or any(ch.isspace() for ch in name):
        raise SdpError(f"bad attribute name in a={value[:40]!r}", no)
    return name, (val if sep else None)


def _media_attr(m: Media, name: str, val: str | None, no: int) -> None:
    if name in DIRECTIONS and val is None:
        if m.direction is not None and m.direction != name:
            raise SdpError(f"conflicting direction a={name} after a={m.direction}", no)
        m.direction = name
    elif name == "rtpmap":
        pt, rtpmap = _parse_rtpmap(val, no)
        if pt in m.rtpmap:
            raise SdpError(f"duplicate rtpmap for payload type {pt}", no)
        m.rtpmap[pt] = rtpmap
    elif name == "fmtp" and val is not None and val.split(" ", 1)[0].isdigit():
        fmt, _, params = val.partition(" ")
        pt = _pt(fmt, no)
        if pt in m.fmtp:
            raise SdpError(f"duplicate fmtp for payload type {pt}", no)
        m.fmtp[pt] = params.strip()
    elif name == "ptime":
        m.ptime = _parse_ptime(val, no)
    else:
        m.attributes.append((name, val))


def _int(text: str, what: str, no: int, lo: int = 0, hi: int | None = None) -> int:
    if not text.isascii() or not text.isdigit():
        raise SdpError(f"{what} is not a number: {text[:20]!r}", no)
    n = int(text)
    if n < lo or (hi is not None and n > hi):
        raise SdpError(f"{what} {n} out of range", no)
    return n


def _pt(text: str, no: int) -> int:
    return _int(text, "payload type", no, 0, 127)


def _parse_o(value: str, no: int) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpError(f"o= needs 6 fields, got {len(parts)}", no)
    user, sid, ver, net, addrtype, addr = parts
    return Origin(user, sid, _int(ver, "session version", no), net, addrtype, addr)


# RFC 4566 FQDN (RFC 1123 labels); a last label of digits only is a malformed IPv4 address instead
_HOSTNAME = re.compile(r"(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$")
_MULTICAST_SUFFIX = re.compile(r"(?:/[0-9]{1,3}){1,2}$")


def _parse_c(value: str, no: int) -> Connection:
    """RFC 4566 §5.7: ``IN IP4|IP6 <address>[/ttl[/count]]``, the address an IP literal of that
    type or a host name. Everything after this trusts the address (sockets, logs, answers)."""
    parts = value.split()
    if len(parts) != 3:
        raise SdpError(f"c= needs 3 fields, got {len(parts)}", no)
    nettype, addrtype, address = parts[0].upper(), parts[1].upper(), parts[2]
    if nettype != "IN":
        raise SdpError(f"c= network type {parts[0][:16]!r} is not IN", no)
    if addrtype not in ("IP4", "IP6"):
        raise SdpError(f"c= address type {parts[1][:16]!r} is not IP4 or IP6", no)
    host, slash, suffix = address.partition("/")
    if slash and not _MULTICAST_SUFFIX.match(slash + suffix):
        raise SdpError(f"c= address {address[:60]!r}: bad /ttl[/count] suffix", no)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host) or host.rstrip(".").rsplit(".", 1)[-1].isdigit():
            raise SdpError(f"c= address {address[:60]!r} is neither an {addrtype} address nor a host name",
                           no) from None
    else:
        if (ip.version == 6) != (addrtype == "IP6"):
            raise SdpError(f"c= address {host} is not an {addrtype} address", no)
    return Connection(nettype, addrtype, address)


def _parse_b(value: str, no: int) -> str:
    bwtype, sep, bw = value.partition(":")
    if not sep or not bwtype or not (bw.isascii() and bw.isdigit()):
        raise SdpError(f"b= must be <type>:<number>, got {value[:40]!r}", no)
    return value


def _parse_t(value: str, no: int) -> Timing:
    parts = value.split()
    if len(parts) != 2:
        raise SdpError(f"t= needs 2 fields, got {len(parts)}", no)
    return Timing(_int(parts[0], "start time", no), _int(parts[1], "stop time", no))


def _parse_m(value: str, no: int) -> Media:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError("m= needs <media> <port> <proto> <fmt>...", no)
    kind, port_text, proto, *formats = parts
    port_s, sep, count_s = port_text.partition("/")
    port = _int(port_s, "port", no, 0, 65535)
    count = _int(count_s, "port count", no, 1) if sep else None
    if not formats and port != 0:
        raise SdpError("m= line lists no formats", no)
    if proto.upper().startswith("RTP/"):
        for f in formats:
            _pt(f, no)
    return Media(kind=kind, port=port, proto=proto, formats=formats, port_count=count)


def _parse_rtpmap(val: str | None, no: int) -> tuple[int, RtpMap]:
    fmt, _, enc = (val or "").partition(" ")
    pt = _pt(fmt, no)
    parts = enc.strip().split("/")
    if len(parts) not in (2, 3) or not parts[0]:
        raise SdpError(f"rtpmap must be '<pt> <name>/<rate>[/<channels>]', got {val!r:.60}", no)
    rate = _int(parts[1], "clock rate", no, 1)
    channels = _int(parts[2], "channel count", no, 1) if len(parts) == 3 else None
    return pt, RtpMap(parts[0], rate, channels)


def _parse_ptime(val: str | None, no: int) -> int:
    try:
        ms = float(val or "")
    except ValueError:
        raise SdpError(f"ptime is not a number: {val!r:.20}", no) from None
    if not (1 <= ms <= 1000) or ms != int(ms):
        raise SdpError(f"ptime {val} out of range (whole ms, 1-1000)", no)
    return int(ms)


# --- offer/answer ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Negotiated:
    """The outcome of offer/answer for our one audio stream.

    ``direction`` is seen from us: "sendonly" means we send and do not receive.
    ``ptime`` is the packetisation to send with (the peer's a=ptime, else 20 ms).
    """

    codec: str
    payload_type: int
    clock_rate: int
    telephone_event_pt: int | None
    ptime: int
    remote_addr: str
    remote_port: int
    direction: str
    media_index: int = 0
    crypto_local: sdes.Crypto | None = None    # our SDES key (what we send with)
    crypto_remote: sdes.Crypto | None = None   # the peer's (what we receive with)

    @property
    def secure(self) -> bool:
        """True when this stream runs SRTP."""
        return self.crypto_local is not None and self.crypto_remote is not None

    @property
    def sending(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def receiving(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


def _dir_flags(direction: str) -> tuple[bool, bool]:
    """(sends, receives) for a direction attribute, from the describing party's view."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; expected one of {DIRECTIONS}")
    return direction in ("sendrecv", "sendonly"), direction in ("sendrecv", "recvonly")


def _direction(send: bool, recv: bool) -> str:
    return {(True, True): "sendrecv", (True, False): "sendonly",
            (False, True): "recvonly", (False, False): "inactive"}[(send, recv)]


def _addrtype(addr: str) -> str:
    try:
        return "IP6" if ipaddress.ip_address(addr).version == 6 else "IP4"
    except ValueError:
        if not addr or any(ch.isspace() for ch in addr):
            raise ValueError(f"bad media address {addr!r}") from None
        return "IP4"  # a host name (RFC 4566 allows FQDNs)


def _check_codecs(names: tuple[str, ...] | list[str]) -> list[tuple[str, int, int]]:
    out = []
    for name in names:
        key = name.upper()
        if key not in _STATIC_BY_NAME:
            raise ValueError(f"unknown codec {name!r}; known: {sorted(_STATIC_BY_NAME)}")
        pt, rate = _STATIC_BY_NAME[key]
        out.append((key, pt, rate))
    if not out:
        raise ValueError("no codecs given")
    return out


def _check_port(port: int) -> int:
    if not isinstance(port, int) or not (1 <= port <= 65535):
        raise ValueError(f"bad RTP port {port!r}")
    return port


def _new_session(addr: str, session_id: int | str | None, version: int, name: str) -> SessionDescription:
    sid = str(secrets.randbelow(2**62)) if session_id is None else str(session_id)
    addrtype = _addrtype(addr)
    return SessionDescription(
        origin=Origin("-", sid, version, "IN", addrtype, addr), name=name,
        connection=Connection("IN", addrtype, addr), timing=[Timing(0, 0)])


def _check_policy(srtp: str) -> str:
    if srtp not in SRTP_POLICIES:
        raise ValueError(f"srtp policy must be one of {SRTP_POLICIES}, got {srtp!r}")
    return srtp


def offered_cryptos(m: Media) -> tuple[list[sdes.Crypto], list[str]]:
    """The a=crypto lines of ``m`` we could use, and why each of the others is not usable."""
    good, bad = [], []
    for name, val in m.attributes:
        if name != "crypto":
            continue
        try:
            c = sdes.parse(val or "")
        except sdes.SdesError as exc:
            bad.append(str(exc))
            continue
        why = sdes.usable(c)
        if why:
            bad.append(why)
        else:
            good.append(c)
    return good, bad


def _audio_media(port: int, codecs: list[tuple[str, int, int]], te_pt: int | None,
                 ptime: int, direction: str, proto: str = "RTP/AVP") -> Media:
    m = Media(kind="audio", port=port, proto=proto, formats=[], ptime=ptime, direction=direction)
    for name, pt, rate in codecs:
        m.formats.append(str(pt))
        m.rtpmap[pt] = RtpMap(name, rate)
    if te_pt is not None:
        m.formats.append(str(te_pt))
        m.rtpmap[te_pt] = RtpMap(TELEPHONE_EVENT, 8000)
        m.fmtp[te_pt] = TELEPHONE_EVENT_FMTP
    return m


def make_offer(addr: str, port: int, codecs: tuple[str, ...] = ("PCMU", "PCMA"),
               telephone_event_pt: int | None = 101, ptime: int = 20,
               direction: str = "sendrecv", session_id: int | str | None = None,
               version: int = 1, session_name: str = "Earshot", srtp: str = "off",
               cryptos: list[sdes.Crypto] | None = None) -> SessionDescription:
    """An audio offer. For a re-offer pass the previous session_id and version + 1.

    ``srtp`` "offer"/"require" adds a=crypto lines (``cryptos``, or fresh keys for every suite we
    support) on RTP/AVP or RTP/SAVP respectively."""
    _dir_flags(direction)
    _check_policy(srtp)
    chosen = _check_codecs(codecs)
    if telephone_event_pt is not None and not (96 <= telephone_event_pt <= 127):
        raise ValueError(f"telephone-event payload type {telephone_event_pt} is not dynamic (96-127)")
    if not (10 <= ptime <= 200):
        raise ValueError(f"ptime {ptime} out of range 10-200 ms")
    sd = _new_session(addr, session_id, version, session_name)
    m = _audio_media(_check_port(port), chosen, telephone_event_pt, ptime, direction,
                     "RTP/SAVP" if srtp == "require" else "RTP/AVP")
    if srtp != "off":
        m.attributes += [("crypto", c.encode()) for c in (cryptos or sdes.offer_cryptos())]
    sd.media.append(m)
    return sd


def bump_version(sd: SessionDescription) -> SessionDescription:
    """A copy of ``sd`` with the o= session version incremented (for a re-offer)."""
    new = copy.deepcopy(sd)
    new.origin.version += 1
    return new


def _find_te(m: Media) -> int | None:
    for pt in m.payload_types:
        c = m.codec(pt)
        if c and c.encoding.lower() == TELEPHONE_EVENT and c.clock_rate == 8000:
            return pt
    return None


def _match_codec(m: Media, wanted: list[tuple[str, int, int]]) -> tuple[str, int, int] | None:
    """First format of ``m`` (the describing party's preference order) that we support."""
    names = {name: rate for name, _, rate in wanted}
    for pt in m.payload_types:
        c = m.codec(pt)
        if c is None or c.channels not in (None, 1):
            continue
        name = c.encoding.upper()
        if names.get(name) == c.clock_rate:
            return name, pt, c.clock_rate
    return None


def _rejected(m: Media) -> Media:
    # RFC 3264 §6: same position, port 0, at least one format.
    return Media(kind=m.kind, port=0, proto=m.proto, formats=list(m.formats) or ["0"])


def negotiate(offer: SessionDescription, local_addr: str, local_port: int,
              supported: tuple[str, ...] = ("PCMU", "PCMA"), telephone_event: bool = True,
              ptime: int = 20, local_direction: str = "sendrecv",
              session_id: int | str | None = None, version: int = 1,
              session_name: str = "Earshot", srtp: str = "off",
              srtp_key: sdes.Crypto | None = None) -> tuple[SessionDescription, Negotiated]:
    """Answer ``offer``; accept the first usable audio stream, reject the rest with port 0.

    Raises NoCommonCodec when no audio stream can be accepted (answer 488), with the reason.
    ``local_direction`` is what we want (e.g. "sendonly" when we hold the peer). ``srtp`` is our
    policy; ``srtp_key`` is our key from the previous answer, reused when the suite is unchanged
    (so a re-INVITE keeps the SRTP session).
    """
    _check_policy(srtp)
    wanted = _check_codecs(supported)
    if not (10 <= ptime <= 200):
        raise ValueError(f"ptime {ptime} out of range 10-200 ms")
    local_send, local_recv = _dir_flags(local_direction)
    local_type = _addrtype(local_addr)
    answer = _new_session(local_addr, session_id, version, session_name)
    answer.timing = [Timing(t.start, t.stop) for t in offer.timing] or [Timing(0, 0)]
    result: Negotiated | None = None
    reasons: list[str] = []
    for index, m in enumerate(offer.media):
        conn = offer.media_connection(m)
        usable = (result is None and m.kind == "audio" and m.port != 0
                  and m.proto in ("RTP/AVP", "RTP/SAVP")
                  and conn is not None and conn.nettype == "IN" and conn.addrtype == local_type)
        if usable and not conn.is_ip:
            usable = False
            reasons.append(f"c= names host {conn.host!r}; only IP addresses are supported")
        theirs: sdes.Crypto | None = None
        if usable and (srtp != "off" or m.proto == "RTP/SAVP"):
            good, bad = offered_cryptos(m) if srtp != "off" else ([], [])
            if good:
                theirs = good[0]          # the offerer's preference order
            elif m.proto == "RTP/SAVP" or srtp == "require":
                usable = False
                reasons.append("SRTP is off here" if srtp == "off" else
                               "no usable a=crypto" + (f" ({'; '.join(bad)})" if bad else ""))
        match = _match_codec(m, wanted) if usable else None
        if match is None or conn is None:
            answer.media.append(_rejected(m))
            continue
        name, pt, rate = match
        remote_send, remote_recv = _dir_flags(offer.media_direction(m))
        if conn.is_hold:
            remote_recv = False  # RFC 2543 hold: nothing may be sent to 0.0.0.0
        direction = _direction(remote_recv and local_send, remote_send and local_recv)
        te = _find_te(m) if telephone_event else None
        am = _audio_media(_check_port(local_port), [(name, pt, rate)], te, ptime, direction, m.proto)
        ours: sdes.Crypto | None = None
        if theirs is not None:
            if srtp_key is not None and srtp_key.suite == theirs.suite:
                ours = sdes.Crypto(theirs.tag, theirs.suite, srtp_key.key)
            else:
                ours = sdes.new_crypto(theirs.tag, theirs.suite)
            am.attributes.append(("crypto", ours.encode()))
        answer.media.append(am)
        result = Negotiated(codec=name, payload_type=pt, clock_rate=rate, telephone_event_pt=te,
                            ptime=m.ptime or DEFAULT_PTIME, remote_addr=conn.host,
                            remote_port=m.port, direction=direction, media_index=index,
                            crypto_local=ours, crypto_remote=theirs)
    if result is None:
        why = f": {reasons[0]}" if reasons else ""
        raise NoCommonCodec("no acceptable audio stream in the offer "
                            f"(we support {', '.join(n for n, _, _ in wanted)} over RTP/AVP"
                            f"{'' if srtp == 'off' else ' or RTP/SAVP'} {local_type}){why}")
    return answer, result


def parse_answer(offer_we_sent: SessionDescription, answer: SessionDescription) -> Negotiated:
    """What the peer accepted of our offer. Raises SdpError for a malformed answer and
    NoCommonCodec when it accepted none of our audio (or answered an RTP/SAVP offer without
    a usable a=crypto for one of our keys)."""
    why = "the answer accepted none of our audio codecs"
    if len(answer.media) != len(offer_we_sent.media):
        raise SdpError(f"answer has {len(answer.media)} media sections, offer had {len(offer_we_sent.media)}")
    for index, (om, am) in enumerate(zip(offer_we_sent.media, answer.media)):
        if om.kind != am.kind:
            raise SdpError(f"answer media section {index + 1} is {am.kind}, offer's is {om.kind}")
        if om.kind != "audio" or om.port == 0 or am.port == 0 or am.proto != om.proto:
            continue
        ours = [(c.encoding.upper(), pt, c.clock_rate)
                for pt in om.payload_types if (c := om.codec(pt)) and c.encoding.lower() != TELEPHONE_EVENT]
        match = _match_codec(am, ours)
        conn = answer.media_connection(am)
        if match is None or conn is None:
            continue
        if not conn.is_ip:
            why = f"the answer's c= names host {conn.host!r}; only IP addresses are supported"
            continue
        name, pt, rate = match
        ours, theirs = _answered_crypto(om, am)
        if om.proto == "RTP/SAVP" and theirs is None:
            why = "the answer to our RTP/SAVP offer has no usable a=crypto"
            continue
        our_send, our_recv = _dir_flags(offer_we_sent.media_direction(om))
        peer_send, peer_recv = _dir_flags(answer.media_direction(am))
        if conn.is_hold:
            peer_recv = False
        te = _find_te(am) if _find_te(om) is not None else None
        return Negotiated(codec=name, payload_type=pt, clock_rate=rate, telephone_event_pt=te,
                          ptime=am.ptime or DEFAULT_PTIME, remote_addr=conn.host,
                          remote_port=am.port, direction=_direction(our_send and peer_recv, our_recv and peer_send),
                          media_index=index, crypto_local=ours, crypto_remote=theirs)
    raise NoCommonCodec(why)


def _answered_crypto(om: Media, am: Media) -> tuple[sdes.Crypto | None, sdes.Crypto | None]:
    """(our offered key, the peer's key) for the a=crypto the answer chose, or (None, None)."""
    offered = {c.tag: c for c in offered_cryptos(om)[0]}
    if not offered:
        return None, None
    for c in offered_cryptos(am)[0]:
        mine = offered.get(c.tag)
        if mine is not None and mine.suite == c.suite:
            return mine, c
    return None, None
