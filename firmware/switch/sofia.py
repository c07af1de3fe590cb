"""The SIP endpoint of the switch (FreeSWITCH's mod_sofia in small): SIP calls become channels.

Incoming: an INVITE's offer is checked (malformed SDP or no common codec → 488 with the reason in
a Warning, no free RTP port → 503; a failure anywhere later in setup → 500, with all of it freed),
an RTP leg answers it, and a channel ``sofia/<profile>/<from user>@<from host>`` runs the dialplan.
Outgoing: the endpoint factories for ``user/<id>`` (the registrar's contact), ``sofia/gateway/<gw>/
<number>`` (the configured gateway, with its credentials) and ``sofia/<profile>/<uri>`` place an
INVITE with our offer. ``sofia_endpoint.SofiaEndpoint`` carries each call from there on.

    profile = SofiaProfile(switch, sip, engine)   # sip: anything with .ua and .registrar
    ua.on_invite = profile.on_invite
    switch.register_endpoint("user", profile.originate)   # and "gateway", "sofia"

SRTP policy per leg (``srtp_policy``): a known caller's user entry, else a gateway at the source
address, else "offer" (take SRTP when the caller asks for it); outgoing legs take the callee's
user or gateway entry, and ``sip_secure_media=true`` makes it "require". A peer that cannot meet
"require" fails the call: 488 in, INCOMPATIBLE_DESTINATION out.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from firmware import aio
from firmware.media.engine import MediaEngine
from firmware.media.ports import PortsExhausted
from firmware.sip import sdp
from firmware.sip.ua import IncomingCall
from firmware.sip.uri import SipUri, UriError

from .channel import Channel, HangupCause, is_true
from .core import DialString, OriginateError, Switch
from .sofia_endpoint import SofiaEndpoint, offered_direction

log = logging.getLogger(__name__)

CODECS = ("PCMU", "PCMA")
REFUSALS = {403: "Forbidden", 488: "Not Acceptable Here", 500: "Server Internal Error"}   # reason phrases


@dataclass(frozen=True)
class _CallerId:
    number: str          # caller_id_number: the authenticated user, else the From user
    name: str            # caller_id_name
    presented: str       # the From header's user (sip_from_user), whatever it claimed
    host: str            # the From header's host


class _Setup:
    """What an incoming call's setup has opened so far (what a failure must free)."""

    def __init__(self, leg: Any) -> None:
        self.leg = leg
        self.channel: Channel | None = None


def _display(text: str) -> str:
    """A caller id name safe inside a quoted display name."""
    return "".join(c for c in text if c not in '"\\\r\n')[:64]


class SofiaProfile:
    """One SIP profile: the UA's calls in and the factories for calls out."""

    def __init__(self, switch: Switch, sip: Any, engine: MediaEngine, name: str = "internal") -> None:
        self.switch = switch
        self.sip = sip
        self.engine = engine
        self.name = name
        switch.secure_media_supported = True    # sip_secure_media=true can be honoured (SRTP)
        # a BYE nobody answers is the peer's problem, not ours
        self._tasks = aio.TaskSet("sofia", on_error=lambda exc: log.info(
            "SIP signalling after hangup failed: %r", exc))

    @property
    def ua(self):
        return self.sip.ua

    def background(self, coro: Any) -> None:
        """Run signalling that nobody waits for (a BYE's transaction). Not a switch task: the
        switch cancels its tasks when it closes, and the BYEs of that last hangup must still go."""
        self._tasks.spawn(coro)

    # --- SRTP policy ------------------------------------------------------------------------------

    def srtp_policy(self, user: str | None = None, host: str | None = None,
                    gateway: str | None = None, default: str = "off") -> str:
        """The configured SRTP policy for a user id, a gateway name or a gateway's host."""
        config = getattr(self.switch, "config", None)
        if config is None:
            return default
        if user:
            u = config.user(user)
            if u is not None:
                return getattr(u, "srtp", default)
        if gateway:
            g = config.gateway(gateway)
            if g is not None:
                return getattr(g, "srtp", default)
        if host:
            for g in getattr(config, "gateways", ()):
                if g.host.rsplit(":", 1)[0].strip("[]") == host:
                    return getattr(g, "srtp", default)
        return default

    # --- incoming ---------------------------------------------------------------------------------

    async def on_invite(self, call: IncomingCall) -> None:
        """A new INVITE: an RTP leg, a channel, the dialplan (or a clean refusal). Whatever fails
        after the leg is opened frees the leg (and the channel) and answers the INVITE."""
        if not call.remote_sdp:
            # delayed offer is not supported yet: say so instead of answering without media
            call.reject(488, "Not Acceptable Here (SDP offer required)")
            return
        try:
            offer = sdp.parse(call.remote_sdp)
        except sdp.SdpError as exc:
            log.warning("INVITE %s: malformed SDP: %s", call.call_id, exc)
            self._refuse(call, 488, f"malformed SDP, {exc}")
            return
        caller = self._caller_id(call)
        if caller is None:
            return
        try:
            leg = await self.engine.open_rtp_leg()
        except PortsExhausted as exc:
            log.error("INVITE %s refused: %s", call.call_id, exc)
            if call.state == "early":
                call.reject(503, "Service Unavailable (no RTP port)")
            return
        if call.state != "early":       # CANCEL while the leg was opening
            leg.close()
            return
        setup = _Setup(leg)
        try:
            self._setup_inbound(call, offer, setup, caller)
        except Exception:
            log.exception("INVITE %s: call setup failed; the INVITE is refused and its leg freed", call.call_id)
            self._undo_setup(call, setup)

    @staticmethod
    def _refuse(call: IncomingCall, status: int, why: str) -> None:
        """A final answer whose reason a phone's log (or an integrator's capture) shows: the
        phrase, and a Warning (RFC 3261 §20.43, code 399 "miscellaneous")."""
        text = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in why)[:160]
        call.reject(status, f"{REFUSALS[status]} ({text})"[:100], headers={"Warning": f'399 earshot "{text}"'})

    def _caller_id(self, call: IncomingCall) -> _CallerId | None:
        """Who is calling. For a user who authenticated, that user: the From header is the
        caller's to write, so a From naming someone else is replaced (or refused with 403, as
        ``[sip] caller_id_mismatch`` says) — else spymap, the audit and the callee's display would
        name whoever the caller chose. The name is the configured one unless the user may set it.
        Unauthenticated calls (a trusted gateway) keep what From says. None: refused."""
        frm = call.from_.uri
        presented = getattr(frm, "user", None) or "anonymous"
        host = getattr(frm, "host", "") or call.source.host
        display = call.from_.display or ""
        user = call.auth_user
        if not user:
            return _CallerId(presented, display or presented, presented, host)
        config = getattr(self.switch, "config", None)
        if presented != user:
            refuse = config is not None and config.sip.caller_id_mismatch == "refuse"
            log.warning("INVITE %s from %s:%d: From names %r but the caller authenticated as %r; %s",
                        call.call_id, call.source.host, call.source.port, presented[:64], user,
                        "refused (403)" if refuse else f"caller id set to {user}")
            if refuse:
                self._refuse(call, 403, "From is not the authenticated user")
                return None
        entry = config.user(user) if config is not None else None
        name = (display if display and entry is not None and entry.may_set_caller_id_name else "") \
            or (entry.caller_id_name if entry is not None else "") or user
        return _CallerId(user, name, presented, host)

    def _setup_inbound(self, call: IncomingCall, offer: sdp.SessionDescription, setup: _Setup,
                       caller: _CallerId) -> None:
        leg = setup.leg
        to = call.invite.uri
        from_user, from_host = caller.number, caller.host
        policy = self.srtp_policy(user=call.auth_user or from_user, host=call.source.host, default="offer")
        try:
            answer, negotiated = sdp.negotiate(offer, self.engine.advertised_ip, leg.local_port, srtp=policy)
        except ValueError as exc:       # NoCommonCodec, or an offer we cannot read as audio
            log.warning("INVITE %s: %s", call.call_id, exc)
            leg.close()
            self._refuse(call, 488, str(exc))
            return
        dest = getattr(to, "user", None) or getattr(call.to.uri, "user", None) or ""
        name = f"sofia/{self.name}/{from_user}@{from_host}"
        ep = SofiaEndpoint(self, leg, name)
        ep.session_id = int(answer.origin.session_id)
        ep.local_sd = answer
        ep.srtp = policy
        ep.remote_direction = offered_direction(offer)
        ep.use(negotiated)
        variables = {
            "caller_id_name": caller.name, "caller_id_number": caller.number,
            "destination_number": dest, "network_addr": call.source.host,
            "network_port": str(call.source.port), "sip_call_id": call.call_id,
            "sip_from_user": caller.presented, "sip_from_host": from_host, "sip_req_user": dest,
            "sip_to_user": getattr(call.to.uri, "user", None) or dest,
            "sip_user_agent": call.invite.headers.get("User-Agent") or "",
            "read_codec": negotiated.codec, "write_codec": negotiated.codec,
        }
        if negotiated.secure:
            variables["sip_secure_media_confirmed"] = "true"
            variables["rtp_secure_media_negotiated"] = negotiated.crypto_local.suite
        if call.auth_user:
            variables["user_name"] = call.auth_user
            variables["sip_authorized"] = "true"
            variables["effective_caller_id_name"] = caller.name   # what the callee is shown
        setup.channel = ch = self.switch.new_channel(ep, name=name, direction="inbound", **variables)
        ep.bind(call)
        log.info("%s: INVITE for %s (%s, %s %d)", name, dest, negotiated.codec,
                 "SRTP" if negotiated.secure else "RTP", leg.local_port)
        self.switch.start(ch)

    def _undo_setup(self, call: IncomingCall, setup: _Setup) -> None:
        """After an unexpected failure: the channel leaves the table (its events fire), the leg's
        ports go back, and the caller gets a 500 rather than retransmitting into silence."""
        ch = setup.channel
        if ch is not None:
            try:
                ch.remote_hangup(HangupCause.NORMAL_TEMPORARY_FAILURE)
            except Exception:
                log.exception("INVITE %s: tearing down its channel failed", call.call_id)
        setup.leg.close()
        if call.state == "early" and not call.stxn.finished:
            self._refuse(call, 500, "call setup failed")

    # --- outgoing ---------------------------------------------------------------------------------

    def _route(self, dial: DialString) -> tuple[str, Any, Any, str]:
        """(request URI, target or None, credentials or None, channel name) for a dial string."""
        if dial.kind == "user":
            contacts = self.sip.registrar.lookup(dial.user)
            if not contacts:
                raise OriginateError(HangupCause.USER_NOT_REGISTERED, f"user {dial.user} is not registered")
            contact = contacts[0]
            host = getattr(contact.uri, "host", "")
            return str(contact.uri), contact.target, None, f"sofia/{self.name}/{dial.user}@{host}"
        if dial.kind == "gateway":
            gw = self.switch.config.gateway(dial.gateway)
            if gw is None:
                raise OriginateError(HangupCause.INVALID_GATEWAY, f"no such gateway {dial.gateway}")
            auth = (gw.username or gw.name, gw.password) if gw.password else None
            return f"sip:{dial.number}@{gw.host}", None, auth, f"sofia/gateway/{gw.name}/{dial.number}"
        if dial.kind == "sofia":
            uri = dial.uri if dial.uri.startswith(("sip:", "sips:")) else "sip:" + dial.uri
            return uri, None, None, f"sofia/{dial.profile}/{dial.uri}"
        raise OriginateError(HangupCause.CHAN_NOT_IMPLEMENTED, f"the SIP endpoint cannot call {dial}")

    async def originate(self, sw: Switch, dial: DialString, variables: dict, a_leg: Channel | None) -> Channel:
        """The endpoint factory: an outbound channel whose INVITE is on its way."""
        if self.ua is None:
            raise OriginateError(HangupCause.DESTINATION_OUT_OF_ORDER, "SIP is not running")
        uri, target, auth, name = self._route(dial)
        try:
            SipUri.parse(uri)
        except UriError as exc:
            raise OriginateError(HangupCause.INVALID_URL, f"{uri}: {exc}") from None
        try:
            leg = await self.engine.open_rtp_leg()
        except PortsExhausted as exc:
            raise OriginateError(HangupCause.SWITCH_CONGESTION, str(exc)) from None
        codecs = CODECS
        a_media = a_leg.endpoint.media if a_leg is not None else None
        if getattr(a_media, "codec", None) == "PCMA":
            codecs = ("PCMA", "PCMU")       # the caller's codec first: no transcoding if the callee can
        ep = SofiaEndpoint(self, leg, name)
        ep.a_leg = a_leg
        ep.srtp = "require" if is_true(variables.get("sip_secure_media")) else \
            self.srtp_policy(user=dial.user if dial.kind == "user" else None,
                             gateway=dial.gateway if dial.kind == "gateway" else None)
        ep.local_sd = sdp.make_offer(self.engine.advertised_ip, leg.local_port, codecs=codecs,
                                     session_id=ep.session_id, version=ep.version, srtp=ep.srtp)
        number = dial.number or dial.user or uri
        ch = sw.new_channel(ep, name=name, direction="outbound",
                            **dict(variables, destination_number=number, sip_req_uri=uri))
        cid_number = variables.get("caller_id_number") or "earshot"
        cid_name = variables.get("caller_id_name") or ""
        try:
            call = await self.ua.call(uri, ep.sdp_bytes, from_user=cid_number.replace("@", ""),
                                      display=_display(cid_name) or None, auth=auth, target=target)
        except Exception as exc:      # unresolvable host, socket error
            ch.remote_hangup(HangupCause.NETWORK_OUT_OF_ORDER)
            leg.close()
            raise OriginateError(HangupCause.NETWORK_OUT_OF_ORDER, f"{uri}: {exc}") from None
        ep.bind(call)
        ch.set_variable("sip_call_id", call.call_id)
        log.info("%s: INVITE %s", name, uri)
        return ch
