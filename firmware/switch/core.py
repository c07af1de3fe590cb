"""The switch: the channel table, the dialplan runner, applications, APIs, db, events, origination.

Seams for the other parts of Earshot:

- ``register_app(name, fn)``: ``async fn(switch, channel, data)``; ``eavesdrop`` and ``three_way``
  start as slots that log and hang up, and ``bridge`` is generic (below) until replaced.
- ``register_endpoint(kind, factory)``: how a dial string of that kind places a call.
  ``async factory(switch, dial, variables, a_leg) -> Channel`` returns a new outbound channel
  (made with ``new_channel``) whose endpoint has sent the call; the far side then drives it with
  ``mark_ringing/mark_early/mark_answered/remote_hangup``. A refusal raises ``OriginateError``.
  ``loopback`` and ``error`` are built in; ``user`` and ``gateway`` names are checked against the
  config first (SUBSCRIBER_ABSENT / INVALID_GATEWAY) and then need the SIP factory.
- ``bridge_hooks`` / ``unbridge_hooks``: ``async hook(a, b)`` joins / parts two legs' media.
- ``apis``: ``${name(args)}`` functions; ``db`` and ``user_exists`` are built in.
"""
from __future__ import annotations

import logging
import re
import uuid as _uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from firmware import aio
from firmware.config import Config

from . import events as ev
from .apps import BUILTIN_APPS, Transfer
from .causes import HangupCause
from .channel import Channel, ChannelHungUp, is_true
from .clock import Clock, SystemClock
from .endpoint import Endpoint, LoopbackEndpoint
from .db import Db
from .dialplan import Dialplan, DialplanHolder
from .expand import ApiRegistry, expand

SPYMAP = "spymap"      # the seed's db realm: agent id -> the uuid to eavesdrop on

log = logging.getLogger(__name__)

AppFunction = Callable[["Switch", Channel, str], Awaitable[None]]
EndpointFactory = Callable[["Switch", "DialString", dict, "Channel | None"], Awaitable[Channel]]
BridgeHook = Callable[[Channel, Channel], Awaitable[None]]

MAX_TRANSFERS = 16
DEFAULT_CALL_TIMEOUT_S = 60


@dataclass(frozen=True)
class AppSpec:
    name: str
    fn: AppFunction
    inline_ok: bool = False


class OriginateError(Exception):
    """A call could not be placed; ``cause`` says why."""

    def __init__(self, cause: HangupCause, reason: str = "") -> None:
        super().__init__(f"{cause.name}: {reason}" if reason else cause.name)
        self.cause = cause
        self.reason = reason


# --- dial strings -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DialString:
    """One leg of a dial string, typed by kind.

    ``user/1001[@domain]``, ``sofia/gateway/<gw>/<number>``, ``sofia/<profile>/<uri>``,
    ``loopback/<ext>[/<context>]``, ``error/<cause>``; other kinds keep their text in ``target``.
    """

    kind: str
    target: str
    variables: dict[str, str] = field(default_factory=dict)
    user: str = ""
    domain: str = ""
    gateway: str = ""
    number: str = ""
    profile: str = ""
    uri: str = ""
    extension: str = ""
    context: str = ""
    cause: HangupCause | None = None

    def __str__(self) -> str:
        if self.kind in ("gateway", "sofia"):
            return f"sofia/{self.target}"
        return f"{self.kind}/{self.target}"


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside {…} and […]."""
    parts, depth, cur = [], 0, []
    for c in text:
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth = max(0, depth - 1)
        if c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


def _take_vars(text: str, open_: str, close: str) -> tuple[dict[str, str], str]:
    text = text.strip()
    if not text.startswith(open_):
        return {}, text
    end = text.find(close)
    if end < 0:
        raise ValueError(f"unterminated {open_}…{close} in {text!r}")
    out: dict[str, str] = {}
    for item in text[1:end].split(","):
        if not item.strip():
            continue
        k, eq, v = item.partition("=")
        if not eq or not k.strip():
            raise ValueError(f"expected var=value in dial string variables (got {item!r})")
        out[k.strip()] = v
    return out, text[end + 1:].strip()


def parse_leg(text: str, inherited: dict[str, str] | None = None) -> DialString:
    """One leg: ``[var=val,…]kind/target``; ValueError for anything malformed."""
    local, rest = _take_vars(text, "[", "]")
    variables = dict(inherited or {})
    variables.update(local)
    kind, slash, target = rest.partition("/")
    kind = kind.strip()
    if not slash or not re.fullmatch(r"[A-Za-z][\w-]*", kind) or not target.strip():
        raise ValueError(f"not a dial string: {text.strip()!r} (expected kind/target, e.g. user/1001)")
    target = target.strip()
    if kind == "user":
        user, _, domain = target.partition("@")
        if not user:
            raise ValueError(f"user dial string without a user: {text!r}")
        return DialString(kind, target, variables, user=user, domain=domain)
    if kind == "sofia":
        first, _, remainder = target.partition("/")
        if first == "gateway":
            gw, _, number = remainder.partition("/")
            if not gw or not number:
                raise ValueError(f"expected sofia/gateway/<gateway>/<number> (got {text.strip()!r})")
            return DialString("gateway", target, variables, gateway=gw, number=number)
        if not first or not remainder:
            raise ValueError(f"expected sofia/<profile>/<uri> (got {text.strip()!r})")
        return DialString("sofia", target, variables, profile=first, uri=remainder)
    if kind == "loopback":
        ext, _, ctx = target.partition("/")
        return DialString(kind, target, variables, extension=ext, context=ctx.split("/")[0] if ctx else "")
    if kind == "error":
        return DialString(kind, target, variables, cause=HangupCause.parse(target))
    return DialString(kind, target, variables)


def parse_dial_string(text: str) -> list[list[DialString]]:
    """``{global vars}`` then alternatives split by ``|`` (tried in turn), each a list of legs split
    by ``,`` (rung at once)."""
    global_vars, rest = _take_vars(text, "{", "}")
    if not rest:
        raise ValueError(f"empty dial string: {text!r}")
    out = []
    for alt in _split_top(rest, "|"):
        legs = [parse_leg(leg, global_vars) for leg in _split_top(alt, ",") if leg.strip()]
        if not legs:
            raise ValueError(f"empty alternative in dial string {text!r}")
        out.append(legs)
    return out


# --- the switch -------------------------------------------------------------------------------------

class Switch:
    """One Earshot switch. ``config`` gives users, gateways and eavesdrop defaults."""

    def __init__(self, config: Config | None = None, *, db: Db | None = None,
                 dialplan: Dialplan | None = None, clock: Clock | None = None,
                 hostname: str = "earshot") -> None:
        self.config = config if config is not None else Config()
        self.core_uuid = str(_uuid.uuid4())
        self.hostname = hostname
        self.events = ev.EventBus(self.core_uuid, hostname)
        self.db = db if db is not None else Db(":memory:")
        self.dialplan = DialplanHolder(dialplan)
        self.clock: Clock = clock or SystemClock()
        self.apis = ApiRegistry()
        self.apis.register("db", lambda args, ch: self.db.api(args))
        self.apis.register("user_exists", self._api_user_exists)
        self.apps: dict[str, AppSpec] = {}
        for name, (fn, inline_ok) in BUILTIN_APPS.items():
            self.register_app(name, fn, inline_ok=inline_ok)
        self.endpoints: dict[str, EndpointFactory] = {"loopback": _loopback_factory}
        self.bridge_hooks: list[BridgeHook] = []
        # installed from outside, declared here: the eavesdrop engine (eavesdrop_app.register) and
        # whether a SIP profile that can negotiate SRTP is attached (sofia.SofiaProfile)
        self.eavesdrop: Any = None
        self.secure_media_supported = False
        self.unbridge_hooks: list[BridgeHook] = []
        self.globals: dict[str, str] = {}
        self._channels: dict[str, Channel] = {}
        self._tasks = aio.TaskSet("switch")
        self.apply_config(self.config)

    # --- config and globals -------------------------------------------------------------------------

    def apply_config(self, config: Config) -> None:
        """Take a new config: globals (domain, eavesdrop defaults) follow it."""
        self.config = config
        g = self.globals
        g.update({"hostname": self.hostname, "core_uuid": self.core_uuid,
                  "domain": config.sip.domain, "domain_name": config.sip.domain})
        e = config.eavesdrop
        for key in ("require_group", "indicate_new", "indicate_idle", "indicate_failed"):
            g["eavesdrop_" + key] = getattr(e, key)
        for key in ("enable_dtmf", "bridge_aleg", "bridge_bleg", "whisper_aleg", "whisper_bleg"):
            g["eavesdrop_" + key] = "true" if getattr(e, key) else "false"

    def user_variables(self, user_id: str) -> dict[str, str]:
        """Variables for a call of a configured user ({} when there is no such user)."""
        u = self.config.user(user_id)
        if u is None:
            return {}
        out = {"user_name": u.id, "domain_name": self.config.sip.domain,
               "may_eavesdrop": "true" if u.may_eavesdrop else "false"}
        if u.caller_id_name:
            out["effective_caller_id_name"] = u.caller_id_name
        if u.eavesdrop_group:
            out["eavesdrop_group"] = u.eavesdrop_group
        return out

    def _api_user_exists(self, args: str, channel: Any) -> str:
        parts = args.split()
        if len(parts) < 2 or parts[0] != "id":
            return "false"
        if len(parts) >= 3 and parts[2] not in (self.config.sip.domain, ""):
            return "false"
        return "true" if self.config.user(parts[1]) is not None else "false"

    # --- registries ---------------------------------------------------------------------------------

    def register_app(self, name: str, fn: AppFunction, *, inline_ok: bool = False) -> None:
        self.apps[name] = AppSpec(name, fn, inline_ok)

    def register_api(self, name: str, fn: Callable[[str, Any], str]) -> None:
        self.apis.register(name, fn)

    def register_endpoint(self, kind: str, factory: EndpointFactory) -> None:
        self.endpoints[kind] = factory

    # --- the channel table --------------------------------------------------------------------------

    def new_channel(self, endpoint: Endpoint, *, name: str | None = None, direction: str = "inbound",
                    **variables: str) -> Channel:
        """Create a channel in the table and fire CHANNEL_CREATE.

        A ``user_name`` naming a configured user brings that user's variables (eavesdrop_group,
        may_eavesdrop, …) unless given explicitly, and makes the channel that user's *agent leg*
        (``agent_id``): the leg whose far end is that user's phone, whichever way the call goes.
        """
        user = variables.get("user_name")
        merged = dict(self.user_variables(user)) if user else {}
        merged.update({k: v for k, v in variables.items() if v is not None})
        entry = self.config.user(user) if user else None
        if entry is not None:
            merged["agent_id"] = user
            merged["agent_name"] = entry.caller_id_name or user
        ch = Channel(endpoint, name=name, direction=direction, variables=merged, bus=self.events,
                     clock=self.clock)
        self._channels[ch.uuid] = ch
        ch._on_destroy.append(self._forget)
        self._record_agent_leg(ch)
        ch.fire(ev.CHANNEL_CREATE)
        return ch

    def agent_legs(self, agent: str | None = None) -> list[Channel]:
        """Live agent legs (of one agent, or of all), in creation order."""
        return [ch for ch in self._channels.values()
                if ch.up and ch.get_variable("agent_id") and agent in (None, ch.get_variable("agent_id"))]

    def _record_agent_leg(self, ch: Channel) -> None:
        """spymap/<agent> = the agent's leg, for calls the agent places *and* receives: the seed's
        ``88<id>`` reads ``${db(select/spymap/<id>)}``, and its ``global`` extension only records
        the number that placed a call (so a received call — most of a call centre's — was not
        found, and a placed one was found by whatever From claimed)."""
        agent = ch.get_variable("agent_id")
        if agent:
            self.db.insert(SPYMAP, agent, ch.uuid)

    def _forget(self, ch: Channel) -> None:
        self._channels.pop(ch.uuid, None)
        agent = ch.get_variable("agent_id")
        if agent and self.db.select(SPYMAP, agent) == ch.uuid:   # no stale entry once it has ended
            self.db.delete(SPYMAP, agent)

    def get(self, uuid: str) -> Channel | None:
        return self._channels.get(uuid)

    def channels(self) -> list[Channel]:
        """Live channels in creation order."""
        return list(self._channels.values())

    def __len__(self) -> int:
        return len(self._channels)

    async def hangup_all(self, cause: HangupCause = HangupCause.MANAGER_REQUEST) -> int:
        chans = self.channels()
        for ch in chans:
            await ch.hangup(cause)
        return len(chans)

    def variable(self, channel: Channel | None, name: str) -> str | None:
        """A channel variable, else the global of that name (FreeSWITCH's lookup order)."""
        if channel is not None:
            v = channel.get_variable(name)
            if v is not None:
                return v
        return self.globals.get(name)

    def expand(self, channel: Channel | None, text: str) -> str:
        lookup = (lambda n: channel.get_variable(n)) if channel is not None else (lambda n: None)
        return expand(text, lookup, self.apis, self.globals, channel)

    def spawn(self, coro: Any) -> Any:
        """A switch-level task (kept referenced until it ends)."""
        return self._tasks.spawn(coro)

    def start(self, channel: Channel) -> Any:
        """Run the dialplan for ``channel`` in its own task."""
        return self.spawn(self.execute(channel))

    async def close(self) -> None:
        await self.hangup_all(HangupCause.SYSTEM_SHUTDOWN)
        for t in list(self._tasks):
            t.cancel()
        self.db.close()

    # --- running the dialplan -----------------------------------------------------------------------

    async def execute(self, channel: Channel) -> None:
        """Hunt, then run the collected applications; hang up when they are done (FreeSWITCH)."""
        transfers = 0
        channel.start_routing()
        while channel.up:
            try:
                plan = await self.dialplan.current.hunt(channel, self)
            except ChannelHungUp:
                return
            if not channel.up:
                return
            if not plan:
                log.warning("%s: no route for %s in context %s", channel.name,
                            channel.get_variable("destination_number"), channel.get_variable("context"))
                await channel.hangup(HangupCause.NO_ROUTE_DESTINATION)
                return
            try:
                for step in plan:
                    if not channel.up:
                        break
                    await self.run_app(channel, step.application, step.data, step.extension)
            except ChannelHungUp:
                return
            except Transfer as t:
                transfers += 1
                if transfers > MAX_TRANSFERS:
                    log.error("%s: too many transfers, hanging up", channel.name)
                    await channel.hangup(HangupCause.EXCHANGE_ROUTING_ERROR)
                    return
                log.info("%s: transfer to %s@%s", channel.name, t.destination,
                         t.context or channel.get_variable("context"))
                channel.set_variable("destination_number", t.destination)
                if t.context:
                    channel.set_variable("context", t.context)
                continue
            break
        if channel.up:
            await channel.hangup(HangupCause.NORMAL_CLEARING)

    async def run_app(self, channel: Channel, application: str, data: str, extension: str = "",
                      inline: bool = False) -> None:
        """Run one application with its data expanded; errors are logged and the dialplan goes on.

        ChannelHungUp and Transfer pass through to the runner.
        """
        spec = self.apps.get(application)
        where = f"[{extension}] " if extension else ""
        if spec is None:
            log.error("%s: %sunknown application %r (data %r): skipped", channel.name, where, application, data)
            return
        if inline and not spec.inline_ok:
            log.error("%s: %sapplication %r cannot be executed inline: skipped", channel.name, where, application)
            return
        try:
            expanded = self.expand(channel, data)
        except ValueError as exc:
            log.error("%s: %s%s(%s): %s: skipped", channel.name, where, application, data, exc)
            return
        app_uuid = str(_uuid.uuid4())
        headers = {"Application": application, "Application-Data": expanded, "Application-UUID": app_uuid}
        channel.fire(ev.CHANNEL_EXECUTE, headers)
        response = "_none_"
        try:
            await spec.fn(self, channel, expanded)
        except (ChannelHungUp, Transfer):
            raise
        except aio.CancelledError:
            if channel.up:
                raise
            raise ChannelHungUp(channel.name) from None
        except ValueError as exc:
            response = f"-ERR {exc}"
            log.error("%s: %s%s(%s): bad argument: %s", channel.name, where, application, expanded, exc)
        except Exception as exc:
            response = f"-ERR {exc}"
            log.exception("%s: %s%s(%s) failed", channel.name, where, application, expanded)
        finally:
            headers["Application-Response"] = response
            channel.fire(ev.CHANNEL_EXECUTE_COMPLETE, headers)

    # --- origination and bridging -------------------------------------------------------------------

    async def _create_leg(self, dial: DialString, variables: dict[str, str], a_leg: Channel | None) -> Channel:
        if dial.kind == "error":
            raise OriginateError(dial.cause or HangupCause.NORMAL_UNSPECIFIED, f"error/{dial.target}")
        if dial.kind == "user" and self.config.user(dial.user) is None:
            raise OriginateError(HangupCause.SUBSCRIBER_ABSENT, f"no such user {dial.user}")
        if dial.kind == "gateway" and self.config.gateway(dial.gateway) is None:
            raise OriginateError(HangupCause.INVALID_GATEWAY, f"no such gateway {dial.gateway}")
        factory = self.endpoints.get(dial.kind)
        if factory is None:
            raise OriginateError(HangupCause.CHAN_NOT_IMPLEMENTED, f"no endpoint for {dial.kind}/ calls")
        merged = dict(variables)
        merged.update(dial.variables)
        if dial.kind == "user":
            for k, v in self.user_variables(dial.user).items():
                merged.setdefault(k, v)
        return await factory(self, dial, merged, a_leg)

    def _leg_variables(self, a_leg: Channel | None, extra: dict[str, str] | None) -> dict[str, str]:
        out: dict[str, str] = {}
        if a_leg is not None:
            for name in (a_leg.get_variable("export_vars") or "").split(","):
                name = name.strip()
                value = a_leg.get_variable(name) if name else None
                if value is not None:
                    out[name.removeprefix("nolocal:")] = value
            for k in ("caller_id_name", "caller_id_number"):
                v = a_leg.get_variable("effective_" + k) or a_leg.get_variable(k)
                if v is not None:
                    out.setdefault(k, v)
        out.update(extra or {})
        return out

    async def originate_leg(self, dial_string: str, *, a_leg: Channel | None = None,
                            variables: dict[str, str] | None = None,
                            timeout_ms: int | None = None) -> Channel:
        """Place a call and wait until a leg answers; OriginateError with the cause otherwise.

        Alternatives (``|``) are tried in turn; the legs of one alternative (``,``) ring at once and
        the first to answer wins (the others get LOSE_RACE). Ringing and early media of the new
        leg are passed to ``a_leg``; if ``a_leg`` hangs up, the new legs get ORIGINATOR_CANCEL.
        """
        try:
            alternatives = parse_dial_string(dial_string)
        except ValueError as exc:
            raise OriginateError(HangupCause.INVALID_NUMBER_FORMAT, str(exc)) from None
        base = self._leg_variables(a_leg, variables)
        cause = HangupCause.NORMAL_UNSPECIFIED
        for legs in alternatives:
            created: list[Channel] = []
            for dial in legs:
                try:
                    created.append(await self._create_leg(dial, base, a_leg))
                except OriginateError as exc:
                    log.warning("originate %s failed: %s", dial, exc)
                    cause = exc.cause
            if not created:
                continue
            timeout = timeout_ms
            if timeout is None:
                raw = (dict(base, **legs[0].variables)).get("call_timeout") or \
                    (a_leg.get_variable("call_timeout") if a_leg else None)
                timeout = int(raw) * 1000 if raw and raw.isdigit() else DEFAULT_CALL_TIMEOUT_S * 1000
            winner, cause = await self._await_answer(created, a_leg, timeout)
            for leg in created:
                if leg is not winner and leg.up:
                    await leg.hangup(HangupCause.LOSE_RACE if winner else cause)
            if winner is not None:
                return winner
            if a_leg is not None and not a_leg.up:
                break
        raise OriginateError(cause, dial_string)

    async def _await_answer(self, legs: list[Channel], a_leg: Channel | None,
                            timeout_ms: int) -> tuple[Channel | None, HangupCause]:
        changed = aio.Event()
        uuids = {leg.uuid for leg in legs}
        if a_leg is not None:
            uuids.add(a_leg.uuid)

        def on_event(e: ev.Event) -> None:
            if e.uuid in uuids:
                changed.set()

        token = self.events.subscribe([ev.CHANNEL_PROGRESS, ev.CHANNEL_PROGRESS_MEDIA, ev.CHANNEL_ANSWER,
                                       ev.CHANNEL_HANGUP], on_event)
        deadline = self.clock.deadline(timeout_ms)
        try:
            while True:
                winner = next((leg for leg in legs if leg.is_answered), None)
                if winner is not None:
                    return winner, HangupCause.NORMAL_CLEARING
                if a_leg is not None and not a_leg.up:
                    return None, HangupCause.ORIGINATOR_CANCEL
                if all(not leg.up for leg in legs):
                    return None, legs[0].hangup_cause or HangupCause.NORMAL_UNSPECIFIED
                if a_leg is not None:
                    await self._pass_progress(legs, a_leg)
                remaining = self.clock.remaining(deadline)
                if remaining <= 0:
                    return None, HangupCause.NO_ANSWER
                changed.clear()
                try:
                    await self.clock.wait_for_ms(changed.wait(), remaining)
                except aio.TimeoutError:
                    pass
        finally:
            self.events.unsubscribe(token)

    @staticmethod
    async def _pass_progress(legs: list[Channel], a_leg: Channel) -> None:
        from .channel import ChannelState as S
        if not a_leg.up:
            return
        if any(leg.state is S.EARLY for leg in legs) and a_leg.state in (S.NEW, S.ROUTING, S.RINGING):
            await a_leg.pre_answer()
        elif any(leg.state is S.RINGING for leg in legs) and a_leg.state in (S.NEW, S.ROUTING):
            await a_leg.ring()

    async def originate(self, dial_string: str, destination: str, *, dialplan: str = "XML",
                        context: str = "default", variables: dict[str, str] | None = None,
                        timeout_ms: int | None = None) -> Channel:
        """FreeSWITCH's originate: place the call, then on answer run ``&app(args)``, an inline list
        (``dialplan="inline"``: ``app:args,app:args``) or the dialplan at extension ``destination``."""
        leg = await self.originate_leg(dial_string, variables=variables, timeout_ms=timeout_ms)
        dest = destination.strip()
        m = re.fullmatch(r"&([\w-]+)(?:\((.*)\))?", dest, re.S)
        if m:
            self.spawn(self._run_list(leg, [(m.group(1), m.group(2) or "")]))
        elif dialplan.lower() == "inline":
            steps = []
            for item in _split_top(dest, ","):
                app, _, data = item.partition(":")
                steps.append((app.strip(), data))
            self.spawn(self._run_list(leg, steps))
        else:
            leg.set_variable("destination_number", dest)
            leg.set_variable("context", context)
            self.start(leg)
        return leg

    async def _run_list(self, leg: Channel, steps: list[tuple[str, str]]) -> None:
        try:
            for app, data in steps:
                if not leg.up:
                    return
                await self.run_app(leg, app, data, "originate")
        except (ChannelHungUp, Transfer):
            pass
        if leg.up:
            await leg.hangup(HangupCause.NORMAL_CLEARING)

    async def bridge(self, a: Channel, dial_string: str) -> None:
        """The bridge application: call ``dial_string``, join the legs, wait until one hangs up.

        A failure hangs ``a`` up with the originate cause unless ``continue_on_fail`` is true;
        after the other leg hangs up the dialplan of ``a`` goes on (``hangup_after_bridge=true``
        hangs it up instead), as in FreeSWITCH.
        """
        if not dial_string.strip():
            raise ValueError("bridge needs a dial string")
        try:
            b = await self.originate_leg(dial_string, a_leg=a)
        except OriginateError as exc:
            a.set_variable("originate_disposition", exc.cause.name)
            a.set_variable("last_bridge_hangup_cause", exc.cause.name)
            if not a.up:
                raise ChannelHungUp(a.name) from None
            log.warning("%s: bridge %s failed: %s", a.name, dial_string, exc)
            if not is_true(a.get_variable("continue_on_fail")):
                await a.hangup(exc.cause)
            return
        try:
            if not a.up:
                raise ChannelHungUp(a.name)
            await a.answer()
        except ChannelHungUp:
            await b.hangup(HangupCause.ORIGINATOR_CANCEL)
            raise
        await self.join(a, b)

    async def join(self, a: Channel, b: Channel) -> None:
        """Link two answered legs, run the media hooks, wait for either to hang up, unlink."""
        a.other_leg, b.other_leg = b, a
        a.set_variable("bridge_uuid", b.uuid)
        b.set_variable("bridge_uuid", a.uuid)
        a.set_variable("originate_disposition", "SUCCESS")
        bridge_headers = {"Bridge-A-Unique-ID": a.uuid, "Bridge-B-Unique-ID": b.uuid}
        a.fire(ev.CHANNEL_BRIDGE, bridge_headers)
        done = aio.Event()
        token = self.events.subscribe(ev.CHANNEL_HANGUP,
                                      lambda e: done.set() if e.uuid in (a.uuid, b.uuid) else None)
        try:
            try:
                for hook in self.bridge_hooks:
                    await hook(a, b)
            except Exception:
                # the legs cannot hear each other: end the other leg, let the app log the failure
                await b.hangup(HangupCause.NORMAL_TEMPORARY_FAILURE)
                raise
            if a.up and b.up:
                await done.wait()
        finally:
            self.events.unsubscribe(token)
            for hook in self.unbridge_hooks:
                try:
                    await hook(a, b)
                except Exception:
                    log.exception("unbridge hook failed")
            a.fire(ev.CHANNEL_UNBRIDGE, bridge_headers)
            a.other_leg = b.other_leg = None
        if not a.up:
            await b.hangup(a.hangup_cause or HangupCause.NORMAL_CLEARING)
            raise ChannelHungUp(a.name)
        a.set_variable("last_bridge_hangup_cause", (b.hangup_cause or HangupCause.NORMAL_CLEARING).name)
        if is_true(a.get_variable("hangup_after_bridge")):
            await a.hangup(b.hangup_cause or HangupCause.NORMAL_CLEARING)
            raise ChannelHungUp(a.name)


async def _loopback_factory(sw: Switch, dial: DialString, variables: dict, a_leg: Channel | None) -> Channel:
    """``loopback/<ext>[/<context>]``: an outbound leg whose other half runs the dialplan at ext."""
    a_ep, b_ep = LoopbackEndpoint.pair(f"loopback/{dial.extension}-a", f"loopback/{dial.extension}-b")
    a = sw.new_channel(a_ep, direction="outbound", **dict(variables, destination_number=dial.extension))
    b_vars = {k: v for k, v in variables.items() if k in ("caller_id_name", "caller_id_number")}
    b = sw.new_channel(b_ep, direction="inbound", destination_number=dial.extension,
                       context=dial.context or variables.get("context", "default"),
                       other_loopback_leg_uuid=a.uuid, **b_vars)
    a.set_variable("other_loopback_leg_uuid", b.uuid)
    sw.start(b)
    return a
