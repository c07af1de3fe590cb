"""Channels: one call leg each, FreeSWITCH's model in small.

A ``Channel`` has a uuid, a name (``sofia/internal/1001@host``, ``handset/local``, ``loopback/…``),
a state (NEW → ROUTING → RINGING/EARLY → ANSWERED → HANGUP), variables, a DTMF queue and an
``Endpoint`` that carries its signalling and media.

The endpoint seam (the SIP endpoint and the handset implement it):

- *Our side acts*: ``await channel.answer()``, ``pre_answer()``, ``ring()``, ``hangup(cause)`` change
  the state and call the endpoint (``endpoint.answer()`` sends the 200 OK, and so on).
- *The far side acted*: the endpoint calls ``channel.mark_ringing()``, ``mark_early()``,
  ``mark_answered()``, ``remote_hangup(cause)`` and ``queue_dtmf(digit, source="rtp")``; these
  never call back into the endpoint.
- Media: ``endpoint.media`` (or None) has ``play(source) -> awaitable``, ``stop_playback()``,
  ``echo(on)``. The control plane never touches samples.

Waiting inside an application goes through ``channel.guard(aw)``, which raises ``ChannelHungUp``
as soon as the channel hangs up (the waiting task is cancelled), so every wait ends with the call.
"""
from __future__ import annotations

import logging
import uuid as _uuid
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, Protocol

from firmware import aio

from . import events as ev

log = logging.getLogger(__name__)


class HangupCause(IntEnum):
    """Q.850 causes by FreeSWITCH name (values above 127 are FreeSWITCH's own)."""

    NONE = 0
    UNALLOCATED_NUMBER = 1
    NO_ROUTE_TRANSIT_NET = 2
    NO_ROUTE_DESTINATION = 3
    CHANNEL_UNACCEPTABLE = 6
    CALL_AWARDED_DELIVERED = 7
    NORMAL_CLEARING = 16
    USER_BUSY = 17
    NO_USER_RESPONSE = 18
    NO_ANSWER = 19
    SUBSCRIBER_ABSENT = 20
    CALL_REJECTED = 21
    NUMBER_CHANGED = 22
    REDIRECTION_TO_NEW_DESTINATION = 23
    EXCHANGE_ROUTING_ERROR = 25
    DESTINATION_OUT_OF_ORDER = 27
    INVALID_NUMBER_FORMAT = 28
    FACILITY_REJECTED = 29
    RESPONSE_TO_STATUS_ENQUIRY = 30
    NORMAL_UNSPECIFIED = 31
    NORMAL_CIRCUIT_CONGESTION = 34
    NETWORK_OUT_OF_ORDER = 38
    NORMAL_TEMPORARY_FAILURE = 41
    SWITCH_CONGESTION = 42
    ACCESS_INFO_DISCARDED = 43
    REQUESTED_CHAN_UNAVAIL = 44
    PRE_EMPTED = 45
    FACILITY_NOT_SUBSCRIBED = 50
    OUTGOING_CALL_BARRED = 52
    INCOMING_CALL_BARRED = 54
    BEARERCAPABILITY_NOTAUTH = 57
    BEARERCAPABILITY_NOTAVAIL = 58
    SERVICE_UNAVAILABLE = 63
    BEARERCAPABILITY_NOTIMPL = 65
    CHAN_NOT_IMPLEMENTED = 66
    FACILITY_NOT_IMPLEMENTED = 69
    SERVICE_NOT_IMPLEMENTED = 79
    INVALID_CALL_REFERENCE = 81
    INCOMPATIBLE_DESTINATION = 88
    INVALID_MSG_UNSPECIFIED = 95
    MANDATORY_IE_MISSING = 96
    MESSAGE_TYPE_NONEXIST = 97
    WRONG_MESSAGE = 98
    IE_NONEXIST = 99
    INVALID_IE_CONTENTS = 100
    WRONG_CALL_STATE = 101
    RECOVERY_ON_TIMER_EXPIRE = 102
    MANDATORY_IE_LENGTH_ERROR = 103
    PROTOCOL_ERROR = 111
    INTERWORKING = 127
    SUCCESS = 142
    ORIGINATOR_CANCEL = 487
    CRASH = 500
    SYSTEM_SHUTDOWN = 501
    LOSE_RACE = 502
    MANAGER_REQUEST = 503
    BLIND_TRANSFER = 600
    ATTENDED_TRANSFER = 601
    ALLOTTED_TIMEOUT = 602
    USER_CHALLENGE = 603
    MEDIA_TIMEOUT = 604
    PICKED_OFF = 605
    USER_NOT_REGISTERED = 606
    PROGRESS_TIMEOUT = 607
    INVALID_GATEWAY = 608
    GATEWAY_DOWN = 609
    INVALID_URL = 610
    INVALID_PROFILE = 611
    NO_PICKUP = 612

    @classmethod
    def parse(cls, text: str) -> HangupCause:
        """A cause by name (any case) or number; ValueError when unknown."""
        t = text.strip()
        if t.isdigit():
            try:
                return cls(int(t))
            except ValueError:
                raise ValueError(f"unknown hangup cause number {t}") from None
        try:
            return cls[t.upper()]
        except KeyError:
            raise ValueError(f"unknown hangup cause {text!r}") from None


# RFC 4497-style tables, as mod_sofia applies them (sofia.c hangup_cause_to_sip,
# sofia_glue_sip_cause_to_freeswitch).
_CAUSE_TO_SIP: dict[HangupCause, int] = {}
for _codes, _sip in (
    (("UNALLOCATED_NUMBER", "NO_ROUTE_TRANSIT_NET", "NO_ROUTE_DESTINATION"), 404),
    (("USER_BUSY",), 486),
    (("NO_USER_RESPONSE",), 408),
    (("NO_ANSWER", "SUBSCRIBER_ABSENT", "NORMAL_UNSPECIFIED", "USER_NOT_REGISTERED"), 480),
    (("CALL_REJECTED",), 603),
    (("NUMBER_CHANGED", "REDIRECTION_TO_NEW_DESTINATION"), 410),
    (("DESTINATION_OUT_OF_ORDER", "INVALID_PROFILE"), 502),
    (("INVALID_NUMBER_FORMAT", "INVALID_URL", "INVALID_GATEWAY"), 484),
    (("FACILITY_REJECTED", "FACILITY_NOT_IMPLEMENTED", "SERVICE_NOT_IMPLEMENTED"), 501),
    (("REQUESTED_CHAN_UNAVAIL", "NORMAL_CIRCUIT_CONGESTION", "NETWORK_OUT_OF_ORDER",
      "NORMAL_TEMPORARY_FAILURE", "SWITCH_CONGESTION", "GATEWAY_DOWN", "BEARERCAPABILITY_NOTAVAIL"), 503),
    (("OUTGOING_CALL_BARRED", "INCOMING_CALL_BARRED", "BEARERCAPABILITY_NOTAUTH"), 403),
    (("BEARERCAPABILITY_NOTIMPL", "INCOMPATIBLE_DESTINATION"), 488),
    (("RECOVERY_ON_TIMER_EXPIRE",), 504),
    (("ORIGINATOR_CANCEL",), 487),
    (("EXCHANGE_ROUTING_ERROR",), 483),
):
    for _name in _codes:
        _CAUSE_TO_SIP[HangupCause[_name]] = _sip

_SIP_TO_CAUSE: dict[int, HangupCause] = {200: HangupCause.NORMAL_CLEARING}
for _statuses, _name in (
    ((401, 402, 403, 407, 603), "CALL_REJECTED"),
    ((404,), "UNALLOCATED_NUMBER"),
    ((485, 604), "NO_ROUTE_DESTINATION"),
    ((408, 504), "RECOVERY_ON_TIMER_EXPIRE"),
    ((410,), "NUMBER_CHANGED"),
    ((413, 414, 416, 420, 421, 423, 505, 513), "INTERWORKING"),
    ((480,), "NO_USER_RESPONSE"),
    ((400, 481, 500, 503), "NORMAL_TEMPORARY_FAILURE"),
    ((486, 600), "USER_BUSY"),
    ((484,), "INVALID_NUMBER_FORMAT"),
    ((488, 606), "INCOMPATIBLE_DESTINATION"),
    ((502,), "NETWORK_OUT_OF_ORDER"),
    ((405,), "SERVICE_UNAVAILABLE"),
    ((406, 415, 501), "SERVICE_NOT_IMPLEMENTED"),
    ((482, 483), "EXCHANGE_ROUTING_ERROR"),
    ((487,), "ORIGINATOR_CANCEL"),
):
    for _status in _statuses:
        _SIP_TO_CAUSE[_status] = HangupCause[_name]


def cause_to_sip(cause: HangupCause | int) -> int:
    """The final SIP response for a call refused with ``cause`` (480 when there is no mapping)."""
    try:
        return _CAUSE_TO_SIP.get(HangupCause(cause), 480)
    except ValueError:
        return 480


def sip_to_cause(status: int) -> HangupCause:
    """The hangup cause for a SIP final response (NORMAL_UNSPECIFIED when there is no mapping)."""
    if not 100 <= status <= 699:
        raise ValueError(f"not a SIP status code: {status}")
    return _SIP_TO_CAUSE.get(status, HangupCause.NORMAL_UNSPECIFIED)


class ChannelState(Enum):
    NEW = "NEW"
    ROUTING = "ROUTING"
    RINGING = "RINGING"
    EARLY = "EARLY"
    ANSWERED = "ANSWERED"
    HANGUP = "HANGUP"


_TRANSITIONS: dict[ChannelState, frozenset[ChannelState]] = {
    ChannelState.NEW: frozenset({ChannelState.ROUTING, ChannelState.RINGING, ChannelState.EARLY,
                                 ChannelState.ANSWERED, ChannelState.HANGUP}),
    ChannelState.ROUTING: frozenset({ChannelState.RINGING, ChannelState.EARLY, ChannelState.ANSWERED,
                                     ChannelState.HANGUP}),
    ChannelState.RINGING: frozenset({ChannelState.EARLY, ChannelState.ANSWERED, ChannelState.HANGUP}),
    ChannelState.EARLY: frozenset({ChannelState.ANSWERED, ChannelState.HANGUP}),
    ChannelState.ANSWERED: frozenset({ChannelState.HANGUP}),
    ChannelState.HANGUP: frozenset(),
}

# FreeSWITCH's header values for each state: (Channel-State, Channel-Call-State, Answer-State)
_FS_STATE = {
    ChannelState.NEW: ("CS_NEW", "DOWN", "ringing"),
    ChannelState.ROUTING: ("CS_ROUTING", "DOWN", "ringing"),
    ChannelState.RINGING: ("CS_EXECUTE", "RINGING", "ringing"),
    ChannelState.EARLY: ("CS_EXECUTE", "EARLY", "early"),
    ChannelState.ANSWERED: ("CS_EXECUTE", "ACTIVE", "answered"),
    ChannelState.HANGUP: ("CS_HANGUP", "HANGUP", "hangup"),
}
_FS_STATE_NUMBER = {"CS_NEW": 0, "CS_ROUTING": 2, "CS_EXECUTE": 4, "CS_HANGUP": 10}


class InvalidTransition(ValueError):
    """A state change the channel state machine does not allow."""


class ChannelHungUp(Exception):
    """The channel hung up while something was waiting on it."""


# --- time -------------------------------------------------------------------------------------------

class Clock(Protocol):
    def now_ms(self) -> int: ...

    async def sleep_ms(self, ms: int) -> None: ...

    async def wait_for_ms(self, aw: Any, ms: int) -> Any: ...


class SystemClock:
    """The event loop's time."""

    def now_ms(self) -> int:
        return aio.ticks_ms()

    async def sleep_ms(self, ms: int) -> None:
        await aio.sleep_ms(ms)

    async def wait_for_ms(self, aw: Any, ms: int) -> Any:
        return await aio.wait_for_ms(aw, ms)


class VirtualClock:
    """A clock that moves only when told (``await advance(ms)``): timing tests without sleeping."""

    def __init__(self) -> None:
        self._now = 0
        self._seq = 0
        self._timers: list[list] = []  # [deadline, seq, callback]

    def now_ms(self) -> int:
        return self._now

    @property
    def pending(self) -> int:
        return len(self._timers)

    def _add(self, ms: int, callback) -> list:
        self._seq += 1
        timer = [self._now + max(0, int(ms)), self._seq, callback]
        self._timers.append(timer)
        return timer

    def _remove(self, timer: list) -> None:
        if timer in self._timers:
            self._timers.remove(timer)

    async def sleep_ms(self, ms: int) -> None:
        woken = aio.Event()
        timer = self._add(ms, woken.set)
        try:
            await woken.wait()
        finally:
            self._remove(timer)

    async def wait_for_ms(self, aw: Any, ms: int) -> Any:
        task = aio.create_task(aw)
        expired = []

        def expire() -> None:
            expired.append(True)
            task.cancel()

        timer = self._add(ms, expire)
        try:
            return await task
        except aio.CancelledError:
            if expired:
                raise aio.TimeoutError() from None
            raise
        finally:
            self._remove(timer)
            if not task.done():
                task.cancel()

    @staticmethod
    async def settle(rounds: int = 20) -> None:
        """Let every ready task run (a few loop turns); no time passes."""
        for _ in range(rounds):
            await aio.sleep(0)

    async def advance(self, ms: int) -> None:
        """Move time forward by ``ms``, firing due timers in deadline order."""
        target = self._now + ms
        await self.settle()
        while True:
            due = [t for t in self._timers if t[0] <= target]
            if not due:
                break
            timer = min(due, key=lambda t: (t[0], t[1]))
            self._timers.remove(timer)
            self._now = max(self._now, timer[0])
            timer[2]()
            await self.settle()
        self._now = target
        await self.settle()


# --- DTMF -------------------------------------------------------------------------------------------

DTMF_DIGITS = "0123456789*#ABCDF"
DEFAULT_DTMF_MS = 250          # FreeSWITCH: 2000 samples at 8 kHz
MIN_DTMF_MS, MAX_DTMF_MS = 50, 24000
PAUSES_MS = {"w": 500, "W": 1000}


@dataclass(frozen=True)
class DtmfDigit:
    digit: str
    duration_ms: int = DEFAULT_DTMF_MS
    source: str = "app"


def parse_dtmf_string(text: str) -> list[tuple[str, int]]:
    """FreeSWITCH's queue_dtmf syntax → steps ``(digit, duration_ms)`` or ``("", pause_ms)``.

    ``[~]digits[@ms][+digits[@ms]…]``; ``w``/``W`` pause 500/1000 ms; ``@ms`` sets the duration of
    that group's digits (ignored below 50 ms, clamped to 24 s). ValueError names the bad input.
    """
    body = text.strip()
    if body.startswith("~"):
        body = body[1:]
    if not body:
        raise ValueError("no DTMF digits given")
    steps: list[tuple[str, int]] = []
    for group in body.split("+"):
        digits, at, ms_text = group.partition("@")
        duration = DEFAULT_DTMF_MS
        if at:
            if not ms_text.isdigit():
                raise ValueError(f"bad DTMF duration {ms_text!r} in {text!r}")
            ms = int(ms_text)
            if ms > MIN_DTMF_MS:
                duration = min(ms, MAX_DTMF_MS)
        if not digits:
            raise ValueError(f"empty DTMF group in {text!r}")
        for ch in digits:
            if ch in PAUSES_MS:
                steps.append(("", PAUSES_MS[ch]))
            elif ch.upper() in DTMF_DIGITS:
                steps.append((ch.upper(), duration))
            else:
                raise ValueError(f"not a DTMF digit: {ch!r} in {text!r}")
    return steps


# --- endpoints --------------------------------------------------------------------------------------

class Media(Protocol):
    def play(self, source: str) -> Any: ...   # awaitable; FileNotFoundError/ValueError for bad sources

    def stop_playback(self) -> None: ...

    def echo(self, on: bool) -> None: ...


class Endpoint(Protocol):
    """What a channel drives: the SIP dialog, the handset, a loopback. See the module docstring."""

    name: str
    media: Media | None

    async def answer(self) -> None: ...

    async def pre_answer(self) -> None: ...

    async def ring(self) -> None: ...

    async def hangup(self, cause: HangupCause) -> None: ...

    def send_dtmf(self, digit: str, duration_ms: int = DEFAULT_DTMF_MS) -> None: ...


class NullMedia:
    """Media that records what it was asked to do; ``play`` finishes at once."""

    def __init__(self) -> None:
        self.played: list[str] = []
        self.echoing = False
        self.stopped = 0

    async def play(self, source: str) -> None:
        self.played.append(source)

    def stop_playback(self) -> None:
        self.stopped += 1

    def echo(self, on: bool) -> None:
        self.echoing = on


class NullEndpoint:
    """An endpoint with no signalling: records the calls made on it (tests, local channels)."""

    def __init__(self, name: str = "null/local", media: Media | None = None) -> None:
        self.name = name
        self.media: Media | None = media if media is not None else NullMedia()
        self.calls: list[str] = []
        self.sent_dtmf: list[str] = []
        self.channel: Channel | None = None

    def attach(self, channel: Channel) -> None:
        self.channel = channel

    async def answer(self) -> None:
        self.calls.append("answer")

    async def pre_answer(self) -> None:
        self.calls.append("pre_answer")

    async def ring(self) -> None:
        self.calls.append("ring")

    async def hangup(self, cause: HangupCause) -> None:
        self.calls.append(f"hangup:{cause.name}")

    def send_dtmf(self, digit: str, duration_ms: int = DEFAULT_DTMF_MS) -> None:
        self.sent_dtmf.append(digit)


class LoopbackEndpoint(NullEndpoint):
    """One half of a loopback pair: what one side does, the other side's channel sees."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.peer: LoopbackEndpoint | None = None

    @staticmethod
    def pair(a_name: str, b_name: str) -> tuple[LoopbackEndpoint, LoopbackEndpoint]:
        a, b = LoopbackEndpoint(a_name), LoopbackEndpoint(b_name)
        a.peer, b.peer = b, a
        return a, b

    def _peer_channel(self) -> Channel | None:
        return self.peer.channel if self.peer else None

    async def answer(self) -> None:
        await super().answer()
        peer = self._peer_channel()
        if peer and peer.up and peer.state is not ChannelState.ANSWERED:
            peer.mark_answered()

    async def pre_answer(self) -> None:
        await super().pre_answer()
        peer = self._peer_channel()
        if peer and peer.state in (ChannelState.NEW, ChannelState.ROUTING, ChannelState.RINGING):
            peer.mark_early()

    async def ring(self) -> None:
        await super().ring()
        peer = self._peer_channel()
        if peer and peer.state in (ChannelState.NEW, ChannelState.ROUTING):
            peer.mark_ringing()

    async def hangup(self, cause: HangupCause) -> None:
        await super().hangup(cause)
        peer = self._peer_channel()
        if peer and peer.up:
            peer.remote_hangup(cause)

    def send_dtmf(self, digit: str, duration_ms: int = DEFAULT_DTMF_MS) -> None:
        super().send_dtmf(digit, duration_ms)
        peer = self._peer_channel()
        if peer and peer.up:
            peer.queue_dtmf(digit, source="loopback")


# --- the channel ------------------------------------------------------------------------------------

class Channel:
    """One call leg. Create channels through ``Switch.new_channel`` so they are in the table."""

    def __init__(self, endpoint: Endpoint, *, name: str | None = None, direction: str = "inbound",
                 variables: dict[str, str] | None = None, bus: ev.EventBus | None = None,
                 clock: Clock | None = None, uuid: str | None = None) -> None:
        if direction not in ("inbound", "outbound"):
            raise ValueError(f"direction must be inbound or outbound (got {direction!r})")
        self.uuid = uuid or str(_uuid.uuid4())
        self.name = name or getattr(endpoint, "name", "") or f"null/{self.uuid}"
        self.direction = direction
        self.endpoint = endpoint
        self.bus = bus
        self.clock: Clock = clock or SystemClock()
        self.state = ChannelState.NEW
        self.hangup_cause: HangupCause | None = None
        self.other_leg: Channel | None = None
        self.vars: dict[str, str] = {}
        for k, v in (variables or {}).items():
            if v is not None:
                self.vars[k] = str(v)
        self.vars["uuid"] = self.uuid
        self.vars["channel_name"] = self.name
        self.vars.setdefault("context", "default")
        self.vars["direction"] = direction
        self.answered = aio.Event()
        self.hungup = aio.Event()
        self._dtmf = aio.Mailbox(64)
        self._dtmf_pending: list[tuple[str, int]] = []
        self._dtmf_pump_running = False
        # background work of this channel, cancelled at hangup
        self._tasks = aio.TaskSet(self.name, quiet=(ChannelHungUp,))
        self._waiters: set = set()    # tasks behind guard(), cancelled at hangup
        self._on_destroy: list = []
        attach = getattr(endpoint, "attach", None)
        if attach:
            attach(self)

    def __repr__(self) -> str:
        return f"<Channel {self.name} {self.uuid} {self.state.value}>"

    # --- variables ----------------------------------------------------------------------------------

    def get_variable(self, name: str) -> str | None:
        return self.vars.get(name)

    def set_variable(self, name: str, value: str | None) -> None:
        if name in ("uuid",):
            raise ValueError(f"{name} is read-only")
        if value is None:
            self.vars.pop(name, None)
        else:
            self.vars[name] = str(value)

    def var_true(self, name: str, default: bool = False) -> bool:
        v = self.vars.get(name)
        return default if v is None else is_true(v)

    @property
    def up(self) -> bool:
        return self.state is not ChannelState.HANGUP

    @property
    def is_answered(self) -> bool:
        return self.state is ChannelState.ANSWERED

    # --- events -------------------------------------------------------------------------------------

    def event_headers(self) -> dict[str, str]:
        cs, call_state, answer_state = _FS_STATE[self.state]
        v = self.vars
        h = {
            "Unique-ID": self.uuid,
            "Channel-Name": self.name,
            "Channel-State": cs,
            "Channel-State-Number": str(_FS_STATE_NUMBER[cs]),
            "Channel-Call-State": call_state,
            "Answer-State": answer_state,
            "Call-Direction": self.direction,
            "Caller-Direction": self.direction,
            "Caller-Unique-ID": self.uuid,
            "Caller-Channel-Name": self.name,
            "Caller-Caller-ID-Name": v.get("caller_id_name", ""),
            "Caller-Caller-ID-Number": v.get("caller_id_number", ""),
            "Caller-Destination-Number": v.get("destination_number", ""),
            "Caller-Context": v.get("context", ""),
            "Caller-Network-Addr": v.get("network_addr", ""),
        }
        if self.other_leg is not None:
            h["Other-Leg-Unique-ID"] = self.other_leg.uuid
            h["Other-Leg-Channel-Name"] = self.other_leg.name
        if self.hangup_cause is not None:
            h["Hangup-Cause"] = self.hangup_cause.name
        for k, val in v.items():
            h["variable_" + k] = val
        return h

    def fire(self, name: str, extra: dict[str, str] | None = None, *, subclass: str | None = None) -> None:
        if self.bus is None:
            return
        headers = self.event_headers()
        if extra:
            headers.update(extra)
        self.bus.fire(name, headers, subclass=subclass)

    # --- state --------------------------------------------------------------------------------------

    def set_state(self, new: ChannelState) -> None:
        """Move to ``new``; InvalidTransition when the state machine does not allow it."""
        if new not in _TRANSITIONS[self.state]:
            raise InvalidTransition(f"{self.name}: {self.state.value} -> {new.value} is not allowed")
        old = self.state
        self.state = new
        log.debug("%s: %s -> %s", self.name, old.value, new.value)
        self.fire(ev.CHANNEL_STATE)
        if _FS_STATE[old][1] != _FS_STATE[new][1]:
            self.fire(ev.CHANNEL_CALLSTATE, {"Original-Channel-Call-State": _FS_STATE[old][1]})

    def start_routing(self) -> None:
        if self.state is ChannelState.NEW:
            self.set_state(ChannelState.ROUTING)

    # our side acts ----------------------------------------------------------------------------------

    async def answer(self) -> None:
        """Answer (idempotent): the endpoint first, then state, CHANNEL_ANSWER and ``answered``."""
        if self.state is ChannelState.ANSWERED:
            return
        self._check_up("answer")
        await self.endpoint.answer()
        if self.up and self.state is not ChannelState.ANSWERED:
            self.mark_answered()

    async def pre_answer(self) -> None:
        """Early media (idempotent once early or answered)."""
        if self.state in (ChannelState.EARLY, ChannelState.ANSWERED):
            return
        self._check_up("pre_answer")
        await self.endpoint.pre_answer()
        if self.up and self.state in (ChannelState.NEW, ChannelState.ROUTING, ChannelState.RINGING):
            self.mark_early()

    async def ring(self) -> None:
        if self.state is not ChannelState.NEW and self.state is not ChannelState.ROUTING:
            return
        await self.endpoint.ring()
        if self.up and self.state in (ChannelState.NEW, ChannelState.ROUTING):
            self.mark_ringing()

    async def hangup(self, cause: HangupCause = HangupCause.NORMAL_CLEARING) -> None:
        """Hang up from our side (idempotent): events, the endpoint, then teardown."""
        if not self.up:
            return
        self._begin_hangup(cause)
        try:
            await self.endpoint.hangup(self.hangup_cause)
        except Exception:
            log.exception("%s: endpoint hangup failed", self.name)
        self._finish_hangup()

    # the far side acted -----------------------------------------------------------------------------

    def mark_ringing(self) -> None:
        self.set_state(ChannelState.RINGING)
        self.fire(ev.CHANNEL_PROGRESS)

    def mark_early(self) -> None:
        self.set_state(ChannelState.EARLY)
        self.fire(ev.CHANNEL_PROGRESS_MEDIA)

    def mark_answered(self) -> None:
        self.set_state(ChannelState.ANSWERED)
        self.answered.set()
        self.fire(ev.CHANNEL_ANSWER)

    def remote_hangup(self, cause: HangupCause = HangupCause.NORMAL_CLEARING) -> None:
        """The far side hung up (BYE, CANCEL, on-hook): teardown without calling the endpoint."""
        if not self.up:
            return
        self._begin_hangup(cause)
        self._finish_hangup()

    def _check_up(self, what: str) -> None:
        if not self.up:
            raise ChannelHungUp(f"{self.name}: cannot {what}, the channel has hung up")

    def _begin_hangup(self, cause: HangupCause | int) -> None:
        self.hangup_cause = HangupCause(cause)
        self.vars["hangup_cause"] = self.hangup_cause.name
        self.vars["hangup_cause_q850"] = str(int(self.hangup_cause))
        self.set_state(ChannelState.HANGUP)
        log.info("%s: hangup %s", self.name, self.hangup_cause.name)
        self.fire(ev.CHANNEL_HANGUP)

    def _finish_hangup(self) -> None:
        media = self.endpoint.media
        if media is not None:
            try:
                media.stop_playback()
                media.echo(False)
            except Exception:
                log.exception("%s: stopping media failed", self.name)
        self.flush_dtmf()
        self.hungup.set()
        self.fire(ev.CHANNEL_HANGUP_COMPLETE)
        for cb in list(self._on_destroy):
            try:
                cb(self)
            except Exception:
                log.exception("%s: destroy hook failed", self.name)
        # last: cancelling may hit the running task's own waiters, which then end at their next await
        for task in list(self._waiters) + list(self._tasks):
            try:
                task.cancel()
            except RuntimeError:  # MicroPython refuses to cancel the running task; it ends by itself
                pass

    async def wait_answered(self) -> bool:
        """True once answered; False if it hangs up first."""
        if self.is_answered:
            return True
        try:
            await self.guard(self.answered.wait())
        except ChannelHungUp:
            return False
        return True

    async def wait_hungup(self) -> None:
        await self.hungup.wait()

    # --- waiting and background work ----------------------------------------------------------------

    async def guard(self, aw: Any) -> Any:
        """Await ``aw``; ChannelHungUp as soon as the channel hangs up."""
        if not self.up:
            if hasattr(aw, "close"):
                aw.close()
            raise ChannelHungUp(self.name)
        task = aio.create_task(aw)
        self._waiters.add(task)
        try:
            return await task
        except aio.CancelledError:
            if not self.up:
                raise ChannelHungUp(self.name) from None
            raise
        finally:
            self._waiters.discard(task)
            if not task.done():
                task.cancel()

    def spawn(self, coro: Any) -> Any:
        """Run ``coro`` as this channel's background task; it is cancelled at hangup."""
        return self._tasks.spawn(coro)

    # --- DTMF ---------------------------------------------------------------------------------------

    def queue_dtmf(self, text: str, source: str = "app") -> int:
        """Queue digits as if received on this channel (queue_dtmf / uuid_recv_dtmf syntax).

        Digits before the first pause are queued now; the rest follow in order after their
        ``w``/``W`` pauses. Returns the number of digits. ValueError for bad syntax.
        """
        steps = parse_dtmf_string(text)
        if not self.up:
            return 0
        count = sum(1 for d, _ in steps if d)
        if self._dtmf_pump_running:
            self._dtmf_pending.extend(steps)
            return count
        while steps and steps[0][0]:
            digit, duration = steps.pop(0)
            self._dtmf.put(DtmfDigit(digit, duration, source))
        if steps:
            self._dtmf_pending.extend(steps)
            self._dtmf_pump_running = True
            self.spawn(self._dtmf_pump(source))
        return count

    async def _dtmf_pump(self, source: str) -> None:
        try:
            while self._dtmf_pending and self.up:
                digit, ms = self._dtmf_pending.pop(0)
                if digit:
                    self._dtmf.put(DtmfDigit(digit, ms, source))
                else:
                    await self.clock.sleep_ms(ms)
        finally:
            self._dtmf_pump_running = False

    async def next_dtmf(self, timeout_ms: int | None = None) -> DtmfDigit | None:
        """The next queued digit (fires DTMF); None on timeout; ChannelHungUp on hangup."""
        item = self._dtmf.get_nowait() if self.up else None
        if item is not None:
            pass
        elif timeout_ms is None:
            item = await self.guard(self._dtmf.get())
        else:
            try:
                item = await self.guard(self.clock.wait_for_ms(self._dtmf.get(), timeout_ms))
            except aio.TimeoutError:
                return None
        self.fire(ev.DTMF, {"DTMF-Digit": item.digit, "DTMF-Duration": str(item.duration_ms * 8),
                            "DTMF-Source": item.source.upper()})
        return item

    async def next_digit(self, timeout_ms: int | None = None) -> str | None:
        item = await self.next_dtmf(timeout_ms)
        return item.digit if item else None

    def flush_dtmf(self) -> None:
        """Drop every queued digit, including those still waiting behind a pause."""
        self._dtmf.clear()
        self._dtmf_pending.clear()

    @property
    def dtmf_queued(self) -> int:
        return len(self._dtmf)

    def send_dtmf(self, digits: str, duration_ms: int = DEFAULT_DTMF_MS) -> None:
        """Send digits to the far side (``w``/``W`` pauses are the endpoint's business)."""
        for d in digits:
            self.endpoint.send_dtmf(d, duration_ms)


_TRUE = frozenset({"true", "yes", "on", "1", "enabled", "active", "allow"})


def is_true(value: str | None) -> bool:
    """FreeSWITCH's switch_true."""
    return value is not None and value.strip().lower() in _TRUE
