"""SIP transports: UDP and TCP on one host:port, TLS on another (RFC 3261 §18, §26, RFC 3581).

    t = Transport(host="127.0.0.1", port=0)        # port 0: ephemeral; read t.port after start()
    t.on_message = lambda msg, source: ...           # parsed Request/Response, source Target
    await t.start()
    t.send(request, Target("udp", "127.0.0.1", 5060))
    t.send_response(response, source)                # routed by the top Via (§18.2.2 / RFC 3581)
    await t.close()

Incoming requests get `received` (and `rport` when asked for) written into their top Via before
`on_message` sees them, so responses built from them route back through NATs. Junk that cannot be
parsed is answered with a 400 when it is a request whose Via, From, To, Call-ID and CSeq can be read,
otherwise dropped; either way it is logged once per source per `log_interval`. A per-source token
bucket drops datagrams/messages beyond `flood_rate`/`flood_burst` before parsing them, so one source
cannot starve the others. TCP connections are reused by (transport, host, port) and closed after
`idle_timeout` seconds without traffic.

TLS (`tls=` a server context from sip.tls, `tls_port`, 0 = ephemeral) listens on its own port with
the same framing, limits and idle close as TCP; a client that does not finish its handshake within
`tls_handshake_timeout` is dropped by asyncio without ever reaching us. Outgoing `Target("tls", …)`
connections verify the peer with `tls_client` (sip.tls.client_context(): verification on); the host
name checked (and sent as SNI) is `tls_names[(ip, port)]` when the UA resolved one, else the IP;
hosts in `tls_unverified` (names or IPs) are connected to without verification.

This is an I/O edge: it uses full CPython asyncio (datagram endpoints, call_later).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import secrets
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from .message import Request, Response, SipError, Via, frame_stream, parse

log = logging.getLogger("earshot.sip.transport")

# 65536 is the largest UDP SIP message (RFC 3261 allows 65535) and stays below glibc's mmap threshold,
# which is what made asyncio's default 256 KiB recvfrom slow (dsp-and-performance.md §4.2).
UDP_MAX_SIZE = 65536
TCP_MAX_MESSAGE = 65535
DEFAULT_PORT = 5060
DEFAULT_TLS_PORT = 5061
STREAM_TRANSPORTS = ("tcp", "tls")


def use_uvloop() -> bool:
    """Install uvloop's event loop policy when uvloop is importable; True if it was."""
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


class Target(NamedTuple):
    """Where a message comes from or goes to: transport ("udp"/"tcp"/"tls"), IP host, port."""
    transport: str
    host: str
    port: int


@dataclass
class TransportStats:
    received: int = 0
    sent: int = 0
    malformed: int = 0
    answered_400: int = 0
    flood_dropped: int = 0
    send_errors: int = 0
    tcp_accepted: int = 0
    tcp_closed_idle: int = 0
    tls_accepted: int = 0


@dataclass
class _Bucket:
    tokens: float
    stamp: float


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def response_target(via: Via, source: Target | None) -> Target:
    """Where a response to a request with this top Via goes (RFC 3261 §18.2.2, RFC 3581 §4)."""
    transport = via.transport.lower()
    if transport not in ("udp", "tcp", "tls"):
        transport = "tcp" if transport in ("sctp", "ws", "wss") else "udp"
    default_port = DEFAULT_TLS_PORT if transport == "tls" else DEFAULT_PORT
    maddr = via.params.get("maddr")
    host = via.received or via.host
    rport = via.params.get("rport")
    if maddr:
        return Target(transport, maddr, via.port or default_port)
    if rport:
        return Target(transport, host, int(rport))
    if source is not None and transport == "udp" and "rport" in via.params:
        return Target("udp", source.host, source.port)
    return Target(transport, host, via.port or default_port)


class Transport:
    """UDP + TCP SIP transport bound to one host:port. See the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 advertised_host: str | None = None,
                 tcp: bool = True,
                 max_tcp_message: int = TCP_MAX_MESSAGE,
                 idle_timeout: float = 300.0,
                 max_connections: int = 512,
                 flood_rate: float = 400.0,
                 flood_burst: float = 800.0,
                 log_interval: float = 60.0,
                 tls: ssl.SSLContext | None = None,
                 tls_port: int = 0,
                 tls_host: str | None = None,
                 tls_client: ssl.SSLContext | None = None,
                 tls_handshake_timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.advertised_host = advertised_host or host
        self.tcp_enabled = tcp
        self.max_tcp_message = max_tcp_message
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.flood_rate = flood_rate
        self.flood_burst = flood_burst
        self.log_interval = log_interval
        self.tls_server_context = tls
        self.tls_port = tls_port if tls is not None else 0
        self.tls_host = tls_host or host
        self.tls_client = tls_client
        self.tls_handshake_timeout = tls_handshake_timeout
        self.tls_names: dict[tuple[str, int], str] = {}   # (ip, port) -> host name to check
        self.tls_unverified: set[str] = set()             # hosts connected to without verification
        self._tls_insecure: ssl.SSLContext | None = None
        self._tls: asyncio.base_events.Server | None = None
        self.stats = TransportStats()
        self.on_message: Callable[[Request | Response, Target], None] = lambda msg, src: None
        self.on_error: Callable[[Target, Exception], None] = lambda target, exc: None
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.base_events.Server | None = None
        self._conns: dict[Target, _TcpConnection] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._logged: dict[str, tuple[float, int]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for attempt in range(20):
            udp, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self),
                                                         local_addr=(self.host, self.port))
            udp.max_size = UDP_MAX_SIZE  # type: ignore[attr-defined]
            port = udp.get_extra_info("sockname")[1]
            if not self.tcp_enabled:
                break
            try:
                self._server = await loop.create_server(lambda: _TcpConnection(self, None), self.host, port,
                                                        reuse_address=True)
                break
            except OSError:
                udp.close()  # the ephemeral UDP port is taken on TCP: pick another
                if self.port:
                    raise
        else:
            raise OSError(f"no port free for UDP and TCP on {self.host}")
        self._udp = udp
        self.port = port
        if self.tls_server_context is not None:
            try:
                self._tls = await loop.create_server(lambda: _TcpConnection(self, None, kind="tls"),
                                                     self.tls_host, self.tls_port, ssl=self.tls_server_context,
                                                     ssl_handshake_timeout=self.tls_handshake_timeout,
                                                     reuse_address=True)
            except OSError:
                udp.close()
                if self._server is not None:
                    self._server.close()
                raise
            self.tls_port = self._tls.sockets[0].getsockname()[1]
        self._schedule_sweep()

    async def close(self) -> None:
        """Close the UDP socket, the TCP and TLS listeners and every connection."""
        self._closed = True
        if self._sweeper:
            self._sweeper.cancel()
        for conn in list(self._conns.values()):
            conn.close()
        self._conns.clear()
        if self._udp is not None:
            self._udp.close()
        for server in (self._server, self._tls):
            if server is not None:
                server.close()
                await server.wait_closed()
        await asyncio.sleep(0)  # let transports run their connection_lost callbacks

    @property
    def connections(self) -> int:
        """Open TCP and TLS connections (accepted and outgoing)."""
        return len(self._conns)

    def via(self, transport: str, branch: str) -> Via:
        """A Via for a request we send: our sent-by, the branch, and rport (RFC 3581)."""
        port = self.tls_port if transport.lower() == "tls" and self.tls_port else self.port
        return Via(transport.upper(), self.advertised_host, port, {"branch": branch, "rport": None})

    @staticmethod
    def new_branch() -> str:
        return "z9hG4bK" + secrets.token_hex(8)

    # ---------------------------------------------------------------- sending
    def send(self, msg: Request | Response | bytes, target: Target) -> None:
        """Send a message; TCP connects (and reuses connections) as needed. Errors go to on_error."""
        data = msg if isinstance(msg, (bytes, bytearray)) else msg.encode()
        if self._closed:
            return
        if target.transport in STREAM_TRANSPORTS:
            conn = self._conns.get(target)
            if conn is None:
                enabled = self.tcp_enabled if target.transport == "tcp" else True
                if not enabled or len(self._conns) >= self.max_connections:
                    self._send_failed(target, OSError(f"no {target.transport.upper()} connection available"))
                    return
                conn = _TcpConnection(self, target, kind=target.transport)
                self._conns[target] = conn
                conn.connect()
            conn.write(data)
        else:
            if self._udp is None:
                raise RuntimeError("transport not started")
            try:
                self._udp.sendto(data, (target.host, target.port))
            except OSError as exc:
                self._send_failed(target, exc)
                return
        self.stats.sent += 1

    def send_response(self, resp: Response, source: Target | None = None) -> Target:
        """Send a response to where its top Via says (§18.2.2); over TCP, on the request's connection."""
        vias = resp.vias
        if not vias:
            raise ValueError("response has no Via")
        target = self.route_response(vias[0], source)
        self.send(resp, target)
        return target

    def route_response(self, via: Via, source: Target | None) -> Target:
        if source is not None and source.transport in STREAM_TRANSPORTS and via.transport.lower() != "udp":
            if source in self._conns:
                return source  # reuse the connection the request came in on
        return response_target(via, source)

    def client_tls(self, target: Target) -> tuple[ssl.SSLContext, str]:
        """The context and host name (SNI, certificate check) for a TLS connection to `target`."""
        name = self.tls_names.get((target.host, target.port), target.host)
        if name in self.tls_unverified or target.host in self.tls_unverified:
            if self._tls_insecure is None:
                from .tls import client_context
                self._tls_insecure = client_context(verify=False)
            return self._tls_insecure, name
        if self.tls_client is None:
            from .tls import client_context
            self.tls_client = client_context()
        return self.tls_client, name

    def _send_failed(self, target: Target, exc: Exception) -> None:
        self.stats.send_errors += 1
        self._log_once(target.host, f"send to {target} failed: {exc}")
        try:
            self.on_error(target, exc)
        except Exception:  # a TU bug must not kill the transport
            log.exception("on_error handler failed")

    # ---------------------------------------------------------------- receiving
    def _admit(self, source: Target) -> bool:
        """Per-source token bucket; False means drop without parsing."""
        now = time.monotonic()
        b = self._buckets.get(source.host)
        if b is None:
            if len(self._buckets) > 4096:  # bound the table: forget full buckets
                self._buckets = {h: x for h, x in self._buckets.items()
                                 if x.tokens + (now - x.stamp) * self.flood_rate < self.flood_burst}
            b = self._buckets[source.host] = _Bucket(self.flood_burst, now)
        b.tokens = min(self.flood_burst, b.tokens + (now - b.stamp) * self.flood_rate)
        b.stamp = now
        if b.tokens < 1.0:
            self.stats.flood_dropped += 1
            self._log_once(source.host, f"flood from {source.host}: dropping")
            return False
        b.tokens -= 1.0
        return True

    def _log_once(self, key: str, text: str) -> None:
        """Log a problem once per source per log_interval; count the suppressed ones."""
        now = time.monotonic()
        last, suppressed = self._logged.get(key, (-1e9, 0))
        if now - last >= self.log_interval:
            extra = f" ({suppressed} similar suppressed)" if suppressed else ""
            log.warning("%s%s", text, extra)
            if len(self._logged) > 4096:
                self._logged.clear()
            self._logged[key] = (now, 0)
        else:
            self._logged[key] = (last, suppressed + 1)

    def _datagram(self, data: bytes, source: Target) -> None:
        if not data.strip(b"\r\n"):
            return  # RFC 5626 keep-alive
        if not self._admit(source):
            return
        self._handle(data, source)

    def _handle(self, data: bytes, source: Target) -> None:
        self.stats.received += 1
        try:
            msg = parse(bytes(data))
        except SipError as exc:
            self._malformed(data, source, getattr(exc, "status", 400) or 400, _reason(exc))
            return
        except Exception as exc:  # a parser bug must not take the transport down
            log.exception("parser raised a non-SipError")
            self._malformed(data, source, 400, f"Bad Request ({type(exc).__name__})")
            return
        if isinstance(msg, Request):
            try:
                self._stamp_via(msg, source)
            except (SipError, ValueError, IndexError) as exc:
                self._malformed(data, source, 400, f"Bad Via ({exc})")
                return
        try:
            self.on_message(msg, source)
        except Exception:
            log.exception("message handler failed for a message from %s", source)

    def _stamp_via(self, req: Request, source: Target) -> None:
        """Write received/rport into the top Via (RFC 3261 §18.2.1, RFC 3581 §4)."""
        vias = req.vias
        if not vias:
            raise ValueError("no Via")
        top = vias[0]
        changed = False
        if "rport" in top.params and not top.params["rport"]:
            top.params["rport"] = str(source.port)
            changed = True
        if top.host != source.host or changed:
            if top.params.get("received") != source.host:
                top.params["received"] = source.host
                changed = True
        if not changed:
            return
        values = req.headers.getall("Via")
        values[0] = str(top)
        req.headers.remove("Via")
        for v in reversed(values):
            req.headers.add("Via", v, first=True)

    def _malformed(self, data: bytes, source: Target, status: int, reason: str) -> None:
        self.stats.malformed += 1
        self._log_once(source.host, f"malformed message from {source}: {status} {reason}")
        answer = bad_request_answer(data, status, reason, source)
        if answer is None:
            return
        payload, via = answer
        self.stats.answered_400 += 1
        self.send(payload, self.route_response(via, source))

    # ---------------------------------------------------------------- TCP bookkeeping
    def _conn_up(self, conn: "_TcpConnection") -> None:
        if len(self._conns) >= self.max_connections:
            conn.close()
            return
        if conn.kind == "tls":
            self.stats.tls_accepted += 1
        else:
            self.stats.tcp_accepted += 1
        self._conns[conn.peer] = conn  # type: ignore[index]

    def _conn_down(self, conn: "_TcpConnection") -> None:
        if conn.peer is not None and self._conns.get(conn.peer) is conn:
            del self._conns[conn.peer]

    def _schedule_sweep(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(max(0.05, self.idle_timeout / 2), self._sweep)

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in list(self._conns.values()):
            if now - conn.last_activity >= self.idle_timeout:
                self.stats.tcp_closed_idle += 1
                conn.close()
        self._schedule_sweep()


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or str(exc) or "Bad Request"
    return re.sub(r"[\r\n\x00-\x1f]+", " ", str(reason))[:120]


_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id"}


def bad_request_answer(data: bytes, status: int, reason: str,
                       source: Target | None = None) -> tuple[bytes, Via] | None:
    """Build a 4xx for a request the parser rejected, from the raw headers it needs, or None.

    Copies Via, From, To, Call-ID and CSeq as found (RFC 3261 §8.2.6); answers nothing that looks
    like a response or an ACK, or lacks a parsable Via.
    """
    head = bytes(data).split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    try:
        text = head.decode("utf-8", "replace")
    except Exception:
        return None
    lines = re.split(r"\r?\n", text)
    first = lines[0].strip()
    parts = first.split()
    if len(parts) < 2 or first.upper().startswith("SIP/") or parts[0].upper() == "ACK":
        return None
    fields: list[list[str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and fields:
            fields[-1][1] += " " + line.strip()  # folded continuation
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        fields.append([name.strip().lower(), value.strip()])
    wanted: dict[str, list[str]] = {"via": [], "from": [], "to": [], "call-id": [], "cseq": []}
    for name, value in fields:
        name = _COMPACT.get(name, name)
        if name in wanted:
            wanted[name].append(value)
    if not all(wanted.values()):
        return None
    cseq = wanted["cseq"][0].split()
    if len(cseq) != 2 or not cseq[0].isdigit() or cseq[1].upper() == "ACK":
        return None
    try:
        top = Via.parse(wanted["via"][0].split(",")[0].strip())
    except Exception:
        return None
    if source is not None:
        if "rport" in top.params and not top.params["rport"]:
            top.params["rport"] = str(source.port)
        top.params["received"] = source.host
    to = wanted["to"][0]
    if ";tag=" not in to.replace(" ", "").lower():
        to += ";tag=" + secrets.token_hex(4)
    out = [f"SIP/2.0 {status} {reason}"]
    out += [f"Via: {v}" for v in [str(top)] + wanted["via"][0].split(",")[1:] + wanted["via"][1:]]
    out += [f"From: {wanted['from'][0]}", f"To: {to}", f"Call-ID: {wanted['call-id'][0]}",
            f"CSeq: {wanted['cseq'][0]}", "Content-Length: 0", "", ""]
    return "\r\n".join(out).encode("utf-8", "replace"), top


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: Transport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        self.owner._datagram(data, Target("udp", addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from an earlier sendto; nothing to do per datagram
        log.debug("UDP error: %s", exc)


@dataclass
class _TcpConnection(asyncio.Protocol):
    owner: Transport
    peer: Target | None
    buf: bytearray = field(default_factory=bytearray)
    last_activity: float = field(default_factory=time.monotonic)
    transport: asyncio.Transport | None = None
    pending: list[bytes] = field(default_factory=list)
    connecting: bool = False
    closed: bool = False
    kind: str = "tcp"   # "tcp" or "tls"

    def __hash__(self) -> int:
        return id(self)

    # outgoing
    def connect(self) -> None:
        self.connecting = True
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        assert self.peer is not None
        loop = asyncio.get_running_loop()
        try:
            if self.kind == "tls":
                ctx, name = self.owner.client_tls(self.peer)
                await loop.create_connection(lambda: self, self.peer.host, self.peer.port, ssl=ctx,
                                             server_hostname=name,
                                             ssl_handshake_timeout=self.owner.tls_handshake_timeout)
            else:
                await loop.create_connection(lambda: self, self.peer.host, self.peer.port)
        except (OSError, asyncio.TimeoutError) as exc:  # ssl.SSLError (bad certificate) is an OSError
            self.closed = True
            self.owner._conn_down(self)
            self.owner._send_failed(self.peer, exc)

    def write(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if self.transport is None:
            self.pending.append(bytes(data))
        else:
            self.transport.write(data)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.peer is None:  # accepted
            host, port = transport.get_extra_info("peername")[:2]
            self.peer = Target(self.kind, host, port)
            self.owner._conn_up(self)
        self.connecting = False
        for data in self.pending:
            transport.write(data)  # type: ignore[attr-defined]
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        self.buf += data
        assert self.peer is not None
        while self.buf and not self.closed:
            if self.buf.startswith(b"\r\n"):
                if self.buf.startswith(b"\r\n\r\n"):
                    del self.buf[:4]
                    self.write(b"\r\n")  # RFC 5626 pong
                    continue
                if len(self.buf) < 4 and b"\r\n\r\n".startswith(bytes(self.buf)):
                    return  # maybe half a ping
                del self.buf[:2]
                continue
            try:
                frame = frame_stream(self.buf, self.owner.max_tcp_message)
            except SipError as exc:
                # cannot resynchronise a stream after a framing error: drop the connection
                self.owner._malformed(bytes(self.buf[:4096]), self.peer, getattr(exc, "status", 400), _reason(exc))
                self.close()
                return
            if frame is None:
                if len(self.buf) > self.owner.max_tcp_message:
                    self.owner._malformed(bytes(self.buf[:4096]), self.peer, 400, "Message Too Large")
                    self.close()
                return
            if self.owner._admit(self.peer):
                self.owner._handle(frame, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self.owner._conn_down(self)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self.owner._conn_down(self)
