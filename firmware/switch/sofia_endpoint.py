"""One SIP call as a channel's Endpoint (FreeSWITCH's sofia channel): signalling plus an RtpLeg.

Our side acts (the channel calls us): ``ring`` → 180, ``pre_answer`` → 183 with our SDP,
``answer`` → 200 with our SDP (incoming calls only), ``hangup(cause)`` → the final response for
the cause (``cause_to_sip``, with a Q.850 Reason) before the answer, CANCEL for an outgoing call
still ringing, BYE after the answer.

The far side acted (SIP events → the channel): 180/183 → ``mark_ringing``/``mark_early``,
200 → ``mark_answered``, 4xx-6xx → ``remote_hangup(sip_to_cause(status))``, CANCEL →
ORIGINATOR_CANCEL, BYE → NORMAL_CLEARING; RFC 4733 key presses queue DTMF with source "rtp",
INFO key presses with source "endpoint" (FreeSWITCH's names). A re-INVITE is answered from our
RTP leg and, when its direction changes (hold / unhold), offered on to the bridged leg.

SRTP: ``srtp`` is this leg's policy ("off" | "offer" | "require", see ``firmware.sip.sdp``);
re-offers and re-answers keep the negotiated key so the SRTP session (ROC, replay window) goes on.
"""
from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

from firmware import aio
from firmware.media.leg import RtpLeg, join
from firmware.sip import sdp
from firmware.sip.ua import Call, IncomingCall, OutgoingCall

from .channel import Channel, ChannelState, HangupCause, cause_to_sip, sip_to_cause

if TYPE_CHECKING:
    from .sofia import SofiaProfile

log = logging.getLogger(__name__)

REINVITE_TIMEOUT_S = 5.0
_CAN_RING = (ChannelState.NEW, ChannelState.ROUTING)
_CAN_EARLY = (ChannelState.NEW, ChannelState.ROUTING, ChannelState.RINGING)


def offered_direction(offer: sdp.SessionDescription) -> str:
    """The direction the offerer asks for on its first audio stream, an RFC 2543 hold
    (c=0.0.0.0) read as "do not send to me"."""
    for m in offer.media:
        if m.kind == "audio" and m.port != 0:
            direction = offer.media_direction(m)
            conn = offer.media_connection(m)
            if conn is not None and conn.is_hold:
                direction = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(direction, direction)
            return direction
    return "sendrecv"


class SofiaEndpoint:
    """The Endpoint of one SIP call leg. ``media`` is its RtpLeg."""

    def __init__(self, profile: SofiaProfile, leg: RtpLeg, name: str) -> None:
        self.profile = profile
        self.name = name
        self.media: RtpLeg = leg
        self.channel: Channel | None = None
        self.call: Call | None = None
        self.a_leg: Channel | None = None          # outgoing legs: whose call this is (early media)
        self.session_id = secrets.randbelow(2 ** 62)
        self.version = 1
        self.local_sd: sdp.SessionDescription | None = None    # our current SDP
        self.negotiated: sdp.Negotiated | None = None
        self.remote_direction = "sendrecv"          # what the far end last offered
        self.srtp = "off"                           # SRTP policy of this leg
        leg.on_digit = self._rtp_digit

    def attach(self, channel: Channel) -> None:
        self.channel = channel

    def bind(self, call: Call) -> None:
        """Take the SIP call's events from now on."""
        self.call = call
        call.on_event = self._on_sip_event
        call.reinvite_handler = self._on_reinvite

    @property
    def sdp_bytes(self) -> bytes:
        return self.local_sd.encode() if self.local_sd is not None else b""

    def use(self, negotiated: sdp.Negotiated) -> None:
        self.negotiated = negotiated
        self.media.apply(negotiated)

    # --- our side acts ------------------------------------------------------------------------------

    def _incoming_early(self) -> IncomingCall | None:
        call = self.call
        if isinstance(call, IncomingCall) and call.state == "early" and not call.stxn.finished:
            return call
        return None

    async def ring(self) -> None:
        call = self._incoming_early()
        if call is not None:
            call.ringing()

    async def pre_answer(self) -> None:
        call = self._incoming_early()
        if call is not None:
            call.progress(self.sdp_bytes)

    async def answer(self) -> None:
        call = self._incoming_early()
        if call is not None:
            call.answer(self.sdp_bytes)

    async def hangup(self, cause: HangupCause) -> None:
        call = self.call
        try:
            if call is None or call.state == "ended":
                return
            early = self._incoming_early()
            if early is not None:
                headers = {}
                if int(cause) <= 127:
                    headers["Reason"] = f'Q.850;cause={int(cause)};text="{cause.name}"'
                early.reject(cause_to_sip(cause), headers=headers)
            else:
                # CANCEL or BYE; its transaction may take a while with a dead peer: not our wait
                self.profile.background(call.hangup())
        finally:
            self.media.close()

    def send_dtmf(self, digit: str, duration_ms: int = 250) -> None:
        """RFC 4733 when negotiated, else SIP INFO."""
        if self.media.closed:
            return
        if not self.media.send_digit(digit, duration_ms):
            call = self.call
            if call is not None and call.state in ("answered", "confirmed"):
                self.profile.background(call.send_dtmf(digit, duration_ms))

    # --- the far side acted -------------------------------------------------------------------------

    def _rtp_digit(self, digit: str) -> None:
        ch = self.channel
        if ch is not None and ch.up:
            ch.queue_dtmf(digit, source="rtp")

    def _on_sip_event(self, name: str, data: Any) -> None:
        ch = self.channel
        if ch is None:
            return
        try:
            handler = getattr(self, "_ev_" + name, None)
            if handler is not None:
                handler(ch, data)
        except Exception:
            log.exception("%s: handling SIP event %s failed", self.name, name)

    def _ev_provisional(self, ch: Channel, resp) -> None:
        if not ch.up:
            return
        if resp.body and isinstance(self.call, OutgoingCall):
            if self._take_answer(ch, resp.body) and ch.state in _CAN_EARLY:
                self._early_media()
                ch.mark_early()
                return
        if resp.status == 180 and ch.state in _CAN_RING:
            ch.mark_ringing()

    def _early_media(self) -> None:
        """The far end sends early media: let the caller hear it before the answer."""
        a = self.a_leg
        media = a.endpoint.media if a is not None else None
        if a is not None and a.up and isinstance(media, RtpLeg) and not (media.closed or self.media.closed):
            join(media, self.media)

    def _take_answer(self, ch: Channel, body: bytes) -> bool:
        try:
            negotiated = sdp.parse_answer(self.local_sd, sdp.parse(body))
        except ValueError as exc:
            log.warning("%s: unusable SDP answer: %s", self.name, exc)
            return False
        self.use(negotiated)
        return True

    def _ev_answer(self, ch: Channel, resp) -> None:
        if not ch.up:
            return
        if not self._take_answer(ch, resp.body or b""):
            if self.negotiated is None:   # nothing usable from a 183 either: we cannot carry the call
                ch.set_variable("sip_term_status", "488")
                self.profile.background(ch.hangup(HangupCause.INCOMPATIBLE_DESTINATION))
                return
        if ch.state is not ChannelState.ANSWERED:
            ch.mark_answered()

    def _ev_fail(self, ch: Channel, resp) -> None:
        ch.set_variable("sip_term_status", str(resp.status))
        ch.remote_hangup(sip_to_cause(resp.status))
        self.media.close()

    def _ev_cancelled(self, ch: Channel, req) -> None:
        ch.remote_hangup(HangupCause.ORIGINATOR_CANCEL)
        self.media.close()

    def _ev_bye(self, ch: Channel, req) -> None:
        ch.set_variable("sip_hangup_disposition", "recv_bye")
        ch.remote_hangup(HangupCause.NORMAL_CLEARING)
        self.media.close()

    def _ev_ended(self, ch: Channel, reason: str) -> None:
        if ch.up:
            cause = HangupCause.SYSTEM_SHUTDOWN if reason == "shutdown" else HangupCause.NORMAL_CLEARING
            ch.remote_hangup(cause)
        self.media.close()

    def _ev_dtmf(self, ch: Channel, data: tuple[str, int]) -> None:
        digit, duration = data
        if ch.up:
            ch.queue_dtmf(f"{digit}@{duration}", source="endpoint")

    # --- re-INVITE: hold / unhold ----------------------------------------------------------------

    async def _on_reinvite(self, body: bytes) -> bytes:
        """Answer a re-INVITE from our leg (ValueError → the UA answers 488) and pass a change of
        direction on to the bridged leg."""
        if not body:
            return self.sdp_bytes      # an offerless re-INVITE: our SDP is the offer
        offer = sdp.parse(body)
        key = self.negotiated.crypto_local if self.negotiated is not None else None
        answer, negotiated = sdp.negotiate(offer, self.profile.engine.advertised_ip, self.media.local_port,
                                           session_id=self.session_id, version=self.version + 1,
                                           srtp=self.srtp, srtp_key=key)
        self.version += 1
        self.local_sd = answer
        self.use(negotiated)
        direction = offered_direction(offer)
        if direction != self.remote_direction:
            self.remote_direction = direction
            ch = self.channel
            other = ch.other_leg if ch is not None else None
            peer = other.endpoint if other is not None else None
            if isinstance(peer, SofiaEndpoint):
                log.info("%s: re-INVITE %s, passed to %s", self.name, direction, peer.name)
                try:
                    await aio.wait_for(peer.reoffer(direction), REINVITE_TIMEOUT_S)
                except Exception as exc:    # the other leg's hold failing must not fail ours
                    log.warning("%s: passing %s to %s failed: %r", self.name, direction, peer.name, exc)
        return answer.encode()

    def _reoffer_srtp(self) -> tuple[str, list | None]:
        """(srtp mode, our current key) for a re-offer: the same profile and key as now."""
        n = self.negotiated
        if n is None or not n.secure:
            return ("require" if self.srtp == "require" else "off"), None
        audio = [m for m in (self.local_sd.media if self.local_sd else []) if m.kind == "audio"]
        savp = bool(audio) and audio[0].proto == "RTP/SAVP"
        return ("require" if savp or self.srtp == "require" else "offer"), [n.crypto_local]

    async def reoffer(self, direction: str) -> None:
        """Send a re-INVITE offering ``direction`` (hold: sendonly/inactive, unhold: sendrecv)."""
        call = self.call
        if call is None or call.state not in ("answered", "confirmed"):
            return
        te = self.media.stream.telephone_event_pt
        mode, cryptos = self._reoffer_srtp()
        offer = sdp.make_offer(self.profile.engine.advertised_ip, self.media.local_port,
                               codecs=(self.media.codec,),
                               telephone_event_pt=te if te is not None and 96 <= te <= 127 else None,
                               direction=direction, session_id=self.session_id, version=self.version + 1,
                               srtp=mode, cryptos=cryptos)
        self.version += 1
        resp = await call.reinvite(offer.encode())
        if 200 <= resp.status < 300 and resp.body:
            self.local_sd = offer
            self.use(sdp.parse_answer(offer, sdp.parse(resp.body)))
        else:
            log.warning("%s: re-INVITE (%s) answered %d", self.name, direction, resp.status)
