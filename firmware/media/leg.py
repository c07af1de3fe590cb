"""A SIP call leg's media (the MediaLeg of the switch ↔ media seam): one RTP session, the producer
that feeds it, and its place in a bridge.

Owners: exactly one party produces what a leg sends. ``claim(owner)`` puts an owner on top (the
previous one waits underneath), ``release(owner)`` takes it off wherever it is, and the one below
resumes. An owner with ``produce(incoming)`` (a player, echo, see ``player``) is driven by the
media clock: each tick the leg reads its decoded frame, hands it over and sends what comes back.
An owner without it (the relay of a bridged call) moves packets by itself; while some other owner
is on top, the relay's packets to this leg are dropped, so a prompt played to a bridged leg is not
mixed with the call.

``join(a, b)`` / ``part(leg)`` bridge and unbridge two legs' media with a ``Relay``.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .player import DigitFlush, Producers
from .relay import CrossTap, Relay
from .srtp import SrtpContext
from .stream import DIGIT_GAP_TICKS, RtpStream

log = logging.getLogger("earshot.media")

if TYPE_CHECKING:
    from firmware.sip.sdp import Negotiated

    from .engine import MediaEngine


class LegStream(RtpStream):
    """An RtpStream whose relay path can be shut: while ``relay_open`` is False (another owner
    on top, or the far end asked us not to send), packets the relay forwards here are dropped."""

    def send_packet(self, packet) -> bool:
        # the relay's per-packet path: same work as RtpStream.send_packet plus one flag test
        remote = self.remote
        if remote is None or self._closed or not self.relay_open:
            return False
        self._sendto(packet, remote)
        return True


class RtpLeg(Producers):
    """One leg's media. Made by ``MediaEngine.open_rtp_leg``; ``close()`` frees its ports."""

    @property
    def secure(self) -> bool:
        """True while this leg's media is SRTP."""
        return self.stream.srtp is not None

    def __init__(self, engine: MediaEngine, stream: LegStream) -> None:
        self.engine = engine
        self.stream = stream
        self.relay: Relay | None = None
        self.peer: RtpLeg | None = None          # the other leg of the relay
        self.ptime_ms = 20
        self.sending = True                      # the far end accepts audio from us (SDP direction)
        self.on_digit: Callable[[str], object] | None = None   # RFC 4733 key presses from the far end
        stream.on_digit = self._digit
        self._ticking = False
        self._init_producers()
        self._digit_tap: CrossTap | None = None
        self._tap_ticks = 0
        self._tap_watch = False

    def __repr__(self) -> str:
        return f"<RtpLeg {self.stream!r} owner={type(self.owner).__name__ if self.owner else None}>"

    # --- the stream -----------------------------------------------------------------------------

    @property
    def codec(self) -> str:
        return self.stream.codec

    @property
    def local_port(self) -> int:
        return self.stream.local_port

    @property
    def closed(self) -> bool:
        return self.stream.closed

    @property
    def stats(self) -> dict:
        return self.stream.stats

    def apply(self, negotiated: Negotiated) -> None:
        """Take an offer/answer outcome (``firmware.sip.sdp.Negotiated``): codec, payload types, where
        to send, whether to send. An unspecified address (RFC 2543 hold) keeps the old one and stops
        sending. A bridged leg's pass-through is rebuilt for the new codec."""
        self.stream.set_codec(negotiated.codec, negotiated.payload_type, negotiated.telephone_event_pt)
        self._keys(negotiated)
        self.ptime_ms = negotiated.ptime
        held = ipaddress.ip_address(negotiated.remote_addr).is_unspecified or negotiated.remote_port == 0
        if not held:
            self.stream.set_remote(negotiated.remote_addr, negotiated.remote_port)
        self.sending = negotiated.sending and not held
        self._gate()
        if self.relay is not None and self.relay.tap is None:
            self.relay.start()     # new rewriters for the new payload types (a tap decodes per tick)

    def _keys(self, negotiated: Negotiated) -> None:
        """SRTP on, off or rekeyed as negotiated; unchanged keys keep the context (ROC, replay)."""
        local = getattr(negotiated, "crypto_local", None)
        remote = getattr(negotiated, "crypto_remote", None)
        if local is None or remote is None:
            self.stream.srtp = None
            return
        ctx = self.stream.srtp
        if ctx is not None and ctx.same_keys(local.suite, local.key, remote.key):
            return
        self.stream.srtp = SrtpContext(local.suite, local.key, remote.key,
                                       tx_lifetime=local.lifetime, rx_lifetime=remote.lifetime)

    def _digit(self, digit: str) -> None:
        if self.on_digit is not None:
            self.on_digit(digit)

    def send_digit(self, digit: str, duration_ms: int = 100) -> bool:
        """Send an RFC 4733 key press; False when the far end negotiated no telephone-event.

        Event packets go out on clock ticks (``RtpStream.send_frame``). A bridged leg in
        pass-through has no ticks, so its relay runs through the clock (``CrossTap``) until the
        digit is out, which also keeps one sequence-number space towards the phone; an idle leg
        gets ticks without audio (``DigitFlush``) for as long."""
        if self.stream.telephone_event_pt is None:
            return False
        self.stream.send_digit(digit, duration_ms)
        ticks = -(-max(duration_ms, 40) // 20) + 3 + DIGIT_GAP_TICKS + 1   # + end packets + gap
        relay = self.relay
        if relay is not None:
            if relay.tap is None:
                self._digit_tap = CrossTap()
                relay.set_tap(self._digit_tap, self.engine.clock)
            if relay.tap is self._digit_tap:
                self._tap_ticks += ticks
                if not self._tap_watch:
                    self._tap_watch = True
                    self.engine.clock.add(self._tap_tick)
        elif not callable(getattr(self.owner, "produce", None)):
            self.claim(DigitFlush(ticks))
        elif isinstance(self.owner, DigitFlush):
            self.owner.ticks += ticks
        return True

    def _tap_tick(self, tick: int) -> None:
        self._tap_ticks -= 1
        relay = self.relay
        if self._tap_ticks > 0 and relay is not None and relay.tap is self._digit_tap:
            return
        self.engine.clock.remove(self._tap_tick)
        self._tap_watch = False
        self._tap_ticks = 0
        if relay is not None and relay.tap is self._digit_tap:
            relay.clear_tap()
        self._digit_tap = None

    # --- MediaLeg: frames ---------------------------------------------------------------------------

    def read_frame(self) -> bytes | None:
        """This tick's 20 ms from the far end (decoded, jitter-buffered), or None."""
        return self.stream.read_frame()

    def send_frame(self, pcm) -> None:
        """20 ms to the far end in the leg's codec; None sends nothing."""
        if not self.sending:
            pcm = None
        self.stream.send_frame(pcm)

    # --- owners (claim/release/play/echo: player.Producers) ------------------------------------------

    def _gate(self) -> None:
        top = self.owner
        self.stream.relay_open = self.sending and (top is None or top is self.relay)

    def _usable(self) -> bool:
        return not self.closed

    def _owners_changed(self) -> None:
        self._update()

    def _update(self) -> None:
        self._gate()
        wants = callable(getattr(self.owner, "produce", None)) and not self.closed
        if wants and not self._ticking:
            self.engine.clock.add(self._tick)
        elif not wants and self._ticking:
            self.engine.clock.remove(self._tick)
        self._ticking = wants

    def _tick(self, tick: int) -> None:
        producer = self.owner
        incoming = self.stream.read_frame()
        produce = getattr(producer, "produce", None)
        if produce is None:
            return
        self.send_frame(produce(incoming))
        self._produced(producer)

    # --- end ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Leave any bridge, stop producing, close the stream (ports return once the sockets are
        closed: ``await wait_closed()``). Idempotent."""
        if self.relay is not None:
            part(self)
        self.stop_playback()
        self.echo(False)
        self._owners.clear()
        if self._ticking:
            self.engine.clock.remove(self._tick)
            self._ticking = False
        if self._tap_watch:
            self.engine.clock.remove(self._tap_tick)
            self._tap_watch = False
        if not self.stream.closed:
            self._report_srtp()
            self.stream.close()
            self.engine._closed(self)

    def _report_srtp(self) -> None:
        """Say, once per leg, how many SRTP packets were refused (forged, tampered, replayed)."""
        srtp = self.stream.srtp
        if srtp is None:
            return
        st = srtp.stats
        dropped = st.get("auth_failures", 0) + st.get("replays", 0) + st.get("rx_errors", 0) + st.get("key_expired", 0)
        if dropped:
            log.warning("RTP port %d: SRTP dropped %d packets (auth failures %d, replays %d, other %d)",
                        self.local_port, dropped, st.get("auth_failures", 0), st.get("replays", 0),
                        st.get("rx_errors", 0) + st.get("key_expired", 0))

    async def wait_closed(self) -> None:
        await self.stream.wait_closed()


def join(a: RtpLeg, b: RtpLeg) -> Relay:
    """Bridge two legs' media (idempotent for the same pair); each leg leaves any other bridge."""
    if a is b:
        raise ValueError("cannot bridge a leg with itself")
    if a.closed or b.closed:
        raise ValueError("cannot bridge a closed leg")
    if a.relay is not None and a.relay is b.relay:
        return a.relay
    for leg in (a, b):
        if leg.relay is not None:
            part(leg)
    relay = Relay(a.stream, b.stream)
    a.relay, b.relay = relay, relay
    a.peer, b.peer = b, a
    a.claim(relay)
    b.claim(relay)
    return relay


def part(leg: RtpLeg) -> None:
    """Undo ``join`` for ``leg`` and its peer: the relay closes, both legs go back to idle (or to
    the owner they had underneath)."""
    relay, peer = leg.relay, leg.peer
    if relay is None:
        return
    relay.close()
    for side in (leg, peer):
        if side is not None and side.relay is relay:
            side.relay = None
            side.peer = None
            side.release(relay)
