"""Putting the switch on SIP and media: ``attach(switch, sip_service, media_engine)``.

- incoming INVITEs go to the SIP profile (which makes channels and runs the dialplan),
- ``user/``, ``sofia/gateway/…`` and ``sofia/<profile>/…`` dial strings place SIP calls,
- a bridge joins the two legs' RTP with a ``Relay`` and an unbridge parts them (the legs go back
  to idle). While bridged, each leg's DTMF queue is drained (firing the DTMF event, as
  FreeSWITCH's bridge loop does); digits that did not come in-band (SIP INFO, ``queue_dtmf``) are
  sent on to the other leg, in-band ones already went through the relay.
"""
from __future__ import annotations

import logging
from typing import Any

from firmware.media.engine import MediaEngine
from firmware.media.leg import RtpLeg, join, part
from firmware.sip.dialog_event import AgentCall

from .channel import Channel, ChannelState
from .core import Switch
from .sofia import SofiaProfile

log = logging.getLogger(__name__)


async def _pump_dtmf(ch: Channel, other: Channel) -> None:
    while ch.up:
        item = await ch.next_dtmf()
        if item is not None and item.source != "rtp" and other.up:
            other.send_dtmf(item.digit, item.duration_ms)


def attach(switch: Switch, sip_service: Any, media_engine: MediaEngine, profile: str = "internal") -> SofiaProfile:
    """Wire ``switch`` to SIP (``sip_service`` has ``.ua``, possibly not started yet, and
    ``.registrar``) and to ``media_engine``. Returns the SIP profile."""
    sofia = SofiaProfile(switch, sip_service, media_engine, profile)
    for kind in ("user", "gateway", "sofia"):
        switch.register_endpoint(kind, sofia.originate)
    pumps: dict[tuple[str, str], list] = {}

    async def bridge(a: Channel, b: Channel) -> None:
        la, lb = a.endpoint.media, b.endpoint.media
        if isinstance(la, RtpLeg) and isinstance(lb, RtpLeg) and not (la.closed or lb.closed):
            relay = join(la, lb)
            log.info("bridge %s <-> %s: %s", a.name, b.name,
                     f"transcoding {la.codec}/{lb.codec}" if relay.transcoding else f"pass-through {la.codec}")
        pumps[(a.uuid, b.uuid)] = [a.spawn(_pump_dtmf(a, b)), b.spawn(_pump_dtmf(b, a))]

    async def unbridge(a: Channel, b: Channel) -> None:
        for task in pumps.pop((a.uuid, b.uuid), []):
            task.cancel()
        la = a.endpoint.media
        if isinstance(la, RtpLeg) and la.relay is not None and la.peer is b.endpoint.media:
            part(la)

    _busy_lamps(switch, sip_service)
    switch.bridge_hooks.append(bridge)
    switch.unbridge_hooks.append(unbridge)
    sip_service.on_invite = sofia.on_invite  # used when the UA is created
    if getattr(sip_service, "ua", None) is not None:  # already listening
        sip_service.ua.on_invite = sofia.on_invite
    return sofia


def agent_call(ch: Channel) -> AgentCall:
    """An agent leg as RFC 4235 sees it, from the agent's side: a call it placed is ``trying``
    until the far end rings back with media (``early``), one it receives rings (``early``)."""
    placed = ch.direction == "inbound"        # the agent's phone sent the INVITE
    if ch.is_answered:
        state = "confirmed"
    elif not placed or ch.state is ChannelState.EARLY:
        state = "early"
    else:
        state = "trying"
    return AgentCall(ch.uuid, state, "initiator" if placed else "recipient")


def _busy_lamps(switch: Switch, sip_service: Any) -> None:
    def agent_calls(agent: str) -> list[AgentCall]:
        return [agent_call(ch) for ch in switch.agent_legs(agent)]

    def changed(event: Any) -> None:
        agent = event.get("variable_agent_id")
        blf = getattr(sip_service, "blf", None)
        if agent and blf is not None:
            blf.changed(agent)

    sip_service.agent_calls = agent_calls
    switch.events.subscribe(("CHANNEL_CREATE", "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA", "CHANNEL_ANSWER",
                             "CHANNEL_HANGUP"), changed)
