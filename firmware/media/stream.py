"""One RTP session per call leg: a UDP endpoint from the port range, the jitter buffer, RFC 4733.

Receive side: only packets from the remote address agreed in SDP are taken (or, with ``latch``,
from the first source that sends, once); anything else is dropped and counted. Valid audio goes
into a jitter buffer that the media clock drains with ``read_frame()``; telephone-events become
digits through ``on_digit``. A relay may take the packets instead (``sink``), bypassing both.

Send side: ``send_frame(pcm)`` once per clock tick encodes and sends one 20 ms frame with this
leg's own SSRC, sequence number and timestamp; queued digits (``send_digit``) replace the audio
while they play.

SRTP: with ``srtp`` set (a ``firmware.media.srtp.SrtpContext``) every datagram is authenticated
and decrypted before anything else looks at it (failures are dropped and counted by the
context) and every packet sent, the relay's included, is protected with this leg's own key. A
relay therefore always works on plain RTP and each leg encrypts for its own peer.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from cython_mixer import FRAME_BYTES, FRAME_SAMPLES, g711
from cython_mixer.jitter import JitterBuffer
from cython_mixer.rtp import parse_header

from .ports import PortAllocator, PortsExhausted
from .rfc4733 import DtmfReceiver, DtmfSender
from .rtp import HEADER_SIZE, MAX_PACKET, RECV_SIZE

if TYPE_CHECKING:
    from .srtp import SrtpContext

log = logging.getLogger(__name__)

_STATIC_PT = {"PCMU": 0, "PCMA": 8}
_HEADER = struct.Struct("!BBHII")
DIGIT_GAP_TICKS = 2            # audio ticks between two queued digits, so each is a new event


def tune_transport(transport: asyncio.DatagramTransport) -> None:
    """Read datagrams into a small buffer (dsp-and-performance.md §4.2): CPython's default of
    256 KiB costs an mmap/mremap/munmap per datagram. A longer datagram arrives cut to RECV_SIZE
    and is then rejected as oversized. uvloop's transport has no such attribute and needs none."""
    try:
        transport.max_size = RECV_SIZE   # type: ignore[attr-defined]
    except AttributeError:
        pass


class _Endpoint(asyncio.DatagramProtocol):
    """Hands datagrams straight to a callable (no per-packet method lookup on the stream)."""

    def __init__(self, receive: Callable[[bytes, tuple], None], lost: Callable[[], None]) -> None:
        self.datagram_received = receive   # type: ignore[method-assign]
        self._lost = lost

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that went away: nothing to do but note it
        log.debug("RTP socket error: %s", exc)


class RtpStream:
    """The RTP session of one leg. Create with ``await RtpStream.open(...)``; ``close()`` frees
    the ports (``await wait_closed()`` for them to be free). ``sink``, when set, receives every datagram from the accepted source instead of
    the jitter buffer (the relay's pass-through)."""

    # Whether the relay may send on this stream (pass-through packets and tap frames alike). A leg
    # shuts it while another producer (a prompt, echo) owns its audio or the far end is on hold.
    relay_open = True

    def __init__(self, ports: PortAllocator, local_ip: str, *, codec: str = "PCMU",
                 payload_type: int | None = None, telephone_event_pt: int | None = 101,
                 latch: bool = False, on_digit: Callable[[str], object] | None = None,
                 jitter_target: int = 2, ssrc: int | None = None) -> None:
        self.ports = ports
        self.local_ip = str(ipaddress.ip_address(local_ip))
        self._family = socket.AF_INET6 if ":" in self.local_ip else socket.AF_INET
        self.latch = latch
        self.on_digit = on_digit
        self.digit_hook: Callable[[str], object] | None = None   # the relay's, in tap mode
        self.sink: Callable[[bytes], object] | None = None
        self.srtp: SrtpContext | None = None
        self.local_port = 0
        self.rtcp_port = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._closed = False
        self._open_sockets = 0
        self._released = asyncio.Event()
        self.set_codec(codec, payload_type, telephone_event_pt)
        self.jitter = JitterBuffer(FRAME_SAMPLES, jitter_target)
        self._dtmf_rx = DtmfReceiver()
        self.remote: tuple[str, int] | None = None   # where we send
        self._src: tuple | None = None                 # accepted source, exactly as recvfrom gives it
        self._latched = False
        self._in_ssrc: int | None = None
        self._event_ssrc: int | None = None
        # send side: our own RTP identity; a random start, as RFC 3550 asks
        self.ssrc = random.getrandbits(32) if ssrc is None else ssrc & 0xFFFFFFFF
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._talkspurt = False            # False: the next audio packet gets the marker bit
        self._digits: deque[DtmfSender] = deque()
        self._sending_digit: DtmfSender | None = None
        self._event_ts = 0
        self._gap = 0
        self._out = bytearray(HEADER_SIZE + FRAME_SAMPLES)
        self._out_payload = memoryview(self._out)[HEADER_SIZE:]
        self._c: dict[str, int] = dict.fromkeys((
            "rx_packets", "rx_dropped_source", "rx_oversized", "rx_truncated", "rx_malformed",
            "rx_unknown_pt", "rx_bad_size", "rx_ssrc_changes", "rx_digits", "rtcp_packets",
            "tx_packets", "tx_events", "tx_no_remote"), 0)

    # --- lifecycle ----------------------------------------------------------------------------

    @classmethod
    async def open(cls, ports: PortAllocator, local_ip: str, **kwargs) -> RtpStream:
        """A bound stream: the first free port pair of ``ports`` that can be bound on local_ip."""
        stream = cls(ports, local_ip, **kwargs)
        await stream._bind()
        return stream

    async def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.ports.capacity):
            port = self.ports.allocate()           # PortsExhausted propagates
            socks = []
            try:
                for p in (port, port + 1):
                    s = socket.socket(self._family, socket.SOCK_DGRAM)
                    socks.append(s)
                    s.setblocking(False)
                    s.bind((self.local_ip, p))
            except OSError as exc:
                for s in socks:
                    s.close()
                self.ports.release(port)            # someone else holds it; it goes to the back
                log.debug("RTP port pair %d/%d on %s not bindable: %s", port, port + 1,
                          self.local_ip, exc)
                continue
            self.local_port, self.rtcp_port = port, port + 1
            self._open_sockets = 2
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: _Endpoint(self._datagram, self._socket_closed), sock=socks[0])
            self._rtcp, _ = await loop.create_datagram_endpoint(
                lambda: _Endpoint(self._rtcp_datagram, self._socket_closed), sock=socks[1])
            tune_transport(self._transport)
            tune_transport(self._rtcp)
            return
        raise PortsExhausted(f"no bindable RTP port pair on {self.local_ip} in "
                             f"{self.ports.low}-{self.ports.high}")

    def close(self) -> None:
        """Stop sending and receiving and close the sockets (idempotent). The port pair returns
        to the allocator once the loop has closed both sockets (its next iteration; see
        ``wait_closed``), so a new stream can never meet a port that is still bound."""
        if self._closed:
            return
        self._closed = True
        self.sink = None
        for t in (self._transport, self._rtcp):
            if t is not None:
                t.close()

    def _socket_closed(self) -> None:
        self._open_sockets -= 1
        if self._open_sockets == 0:
            self.ports.release(self.local_port)
            self._released.set()

    async def wait_closed(self) -> None:
        """Return once ``close()`` has finished and the ports are back in the allocator."""
        await self._released.wait()

    @property
    def closed(self) -> bool:
        return self._closed

    # --- negotiation --------------------------------------------------------------------------

    def set_codec(self, codec: str, payload_type: int | None = None,
                  telephone_event_pt: int | None = 101) -> None:
        """The negotiated audio codec (PCMU/PCMA) and payload types."""
        name = codec.upper() if isinstance(codec, str) else codec
        if name not in _STATIC_PT:
            raise ValueError(f"unsupported codec {codec!r}; expected PCMU or PCMA")
        pt = _STATIC_PT[name] if payload_type is None else payload_type
        for what, v in (("payload_type", pt), ("telephone_event_pt", telephone_event_pt)):
            if v is not None and not (isinstance(v, int) and 0 <= v <= 127):
                raise ValueError(f"{what} must be 0-127, got {v!r}")
        if telephone_event_pt == pt:
            raise ValueError(f"telephone-event and audio share payload type {pt}")
        self.codec, self.payload_type, self.telephone_event_pt = name, pt, telephone_event_pt

    def set_remote(self, host: str, port: int) -> None:
        """Where the peer's SDP says to send (an IP literal); re-arms latching."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"remote RTP address must be an IP address, got {host!r}") from None
        if (ip.version == 6) != (self._family == socket.AF_INET6):
            raise ValueError(f"remote {host} and local {self.local_ip} are different IP versions")
        if not (isinstance(port, int) and 1 <= port <= 65535):
            raise ValueError(f"bad remote RTP port {port!r}")
        self.remote = (str(ip), port)
        self._src = None
        self._latched = False

    def apply(self, negotiated) -> None:
        """Take codec, payload types and remote address from ``firmware.sip.sdp.Negotiated``."""
        self.set_codec(negotiated.codec, negotiated.payload_type, negotiated.telephone_event_pt)
        self.set_remote(negotiated.remote_addr, negotiated.remote_port)

    # --- receive ------------------------------------------------------------------------------

    def _datagram(self, data: bytes, addr: tuple) -> None:
        srtp = self.srtp
        if srtp is not None:
            # authenticate first, so a forged packet can neither latch nor reach the mixer
            data = srtp.unprotect(data)
            if data is None:
                return
        if addr != self._src and not self._accept(addr):
            return
        self._c["rx_packets"] += 1
        sink = self.sink
        if sink is not None:
            sink(data)
        else:
            self._media(data)

    def _accept(self, addr: tuple) -> bool:
        """First packet from a new source: the negotiated address, or a latch (once)."""
        remote = self.remote
        if self.latch:
            if not self._latched:
                self._latched = True
                self._src = addr
                self.remote = (addr[0], addr[1])     # symmetric RTP: answer where it came from
                return True
        elif remote is not None and addr[0] == remote[0] and addr[1] == remote[1]:
            self._src = addr
            return True
        self._c["rx_dropped_source"] += 1
        return False

    def _media(self, data: bytes) -> None:
        c = self._c
        if len(data) > MAX_PACKET:
            c["rx_oversized"] += 1
            return
        h = parse_header(data)
        if h is None:
            c["rx_truncated" if len(data) < HEADER_SIZE else "rx_malformed"] += 1
            return
        marker, pt, seq, ts, ssrc, start, end = h
        if ssrc != self._in_ssrc:
            if self._in_ssrc is not None:
                c["rx_ssrc_changes"] += 1
                self.jitter.reset()
            self._in_ssrc = ssrc
        if pt == self.payload_type:
            if end - start != FRAME_SAMPLES:
                c["rx_bad_size"] += 1        # only 20 ms packetisation reaches the mixer
                return
            self.jitter.put(seq, ts, data[start:end], marker)
        elif pt == self.telephone_event_pt:
            self.event_packet(ssrc, ts, marker, data[start:end])
        else:
            c["rx_unknown_pt"] += 1

    def event_packet(self, ssrc: int, ts: int, marker: bool, payload: bytes) -> None:
        """One telephone-event packet from this leg (also called by the relay's fast path)."""
        if ssrc != self._event_ssrc:   # a new source numbers its events afresh
            self._event_ssrc = ssrc
            self._dtmf_rx.reset()
        try:
            digit = self._dtmf_rx.feed(ts, payload, marker)
        except ValueError:
            self._c["rx_malformed"] += 1
            return
        if digit is None:
            return
        self._c["rx_digits"] += 1
        for callback in (self.on_digit, self.digit_hook):
            if callback is not None:
                try:
                    callback(digit)
                except Exception:
                    log.exception("digit callback %r failed", callback)

    def _rtcp_datagram(self, data: bytes, addr: tuple) -> None:
        self._c["rtcp_packets"] += 1     # RTCP is received and ignored for now

    def read_frame(self) -> bytes | None:
        """This tick's decoded 20 ms frame from the jitter buffer, or None (nothing to play)."""
        payload, _kind = self.jitter.get()
        return None if payload is None else g711.decode(self.codec, payload)

    # --- send ---------------------------------------------------------------------------------

    def send_digit(self, digit: str, duration_ms: int = 100) -> None:
        """Queue an RFC 4733 digit; it goes out over the next ``send_frame`` ticks."""
        if self.telephone_event_pt is None:
            raise ValueError("this leg negotiated no telephone-event payload type")
        self._digits.append(DtmfSender(digit, duration_ms))

    def send_frame(self, pcm: bytes | bytearray | memoryview | None) -> bool:
        """One clock tick: send ``pcm`` (a 20 ms frame) or a digit's packet; None sends no audio
        (silence, hold). The timestamp advances one frame either way. True if a packet went out."""
        if pcm is not None and len(pcm) != FRAME_BYTES:
            raise ValueError(f"frame has {len(pcm)} bytes; a 20 ms frame is {FRAME_BYTES}")
        ts = self._ts
        self._ts = (ts + FRAME_SAMPLES) & 0xFFFFFFFF
        if self.remote is None or self._closed:
            self._c["tx_no_remote"] += 1
            return False
        packet = self._next_event(ts)
        if packet is not None:
            payload, marker = packet
            self._c["tx_events"] += 1
            self._send(self.telephone_event_pt, marker, self._event_ts, payload)
            return True
        if pcm is None:
            self._talkspurt = False
            return False
        g711.encode_into(self.codec, pcm, self._out_payload)
        _HEADER.pack_into(self._out, 0, 0x80, self.payload_type | (0 if self._talkspurt else 0x80),
                          self._seq, ts, self.ssrc)
        self._talkspurt = True
        self._seq = (self._seq + 1) & 0xFFFF
        self._c["tx_packets"] += 1
        self._sendto(self._out, self.remote)
        return True

    def _next_event(self, ts: int) -> tuple[bytes, bool] | None:
        sender = self._sending_digit
        if sender is None:
            if self._gap:
                self._gap -= 1
                return None
            if not self._digits:
                return None
            sender = self._sending_digit = self._digits.popleft()
            self._event_ts = ts
        packet = sender.next_packet()
        if sender.done:
            self._sending_digit = None
            self._gap = DIGIT_GAP_TICKS
            self._talkspurt = False
        return packet

    def _send(self, pt: int, marker: bool, ts: int, payload: bytes) -> None:
        header = _HEADER.pack(0x80, pt | (0x80 if marker else 0), self._seq, ts, self.ssrc)
        self._seq = (self._seq + 1) & 0xFFFF
        self._c["tx_packets"] += 1
        self._sendto(header + payload, self.remote)

    def _sendto(self, packet, remote: tuple) -> None:
        """The one way out: protected with this leg's SRTP key when it has one."""
        srtp = self.srtp
        if srtp is not None:
            packet = srtp.protect(packet)
            if packet is None:           # counted by the context (key expired, ...)
                return
        self._transport.sendto(packet, remote)

    def send_packet(self, packet) -> bool:
        """Send an already built packet (the relay's) to the remote; False when there is none."""
        remote = self.remote
        if remote is None or self._closed:
            return False
        self._sendto(packet, remote)
        return True

    @property
    def sender_state(self) -> tuple[int, int, int]:
        """(ssrc, next sequence number, next timestamp) of what this leg sends."""
        return self.ssrc, self._seq, self._ts

    def resume(self, seq: int, ts: int) -> None:
        """Continue numbering from a relay's last packet (when the relay hands sending back)."""
        self._seq, self._ts = seq & 0xFFFF, ts & 0xFFFFFFFF
        self._talkspurt = False

    @property
    def stats(self) -> dict:
        out = dict(self._c)
        out["jitter"] = self.jitter.stats
        if self.srtp is not None:
            out["srtp"] = self.srtp.stats
        return out

    def __repr__(self) -> str:
        return (f"RtpStream({self.local_ip}:{self.local_port} -> {self.remote}, {self.codec}, "
                f"ssrc={self.ssrc:#010x}{', closed' if self._closed else ''})")
