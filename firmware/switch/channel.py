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
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .endpoint import Endpoint

from firmware import aio

from . import events as ev
from .causes import HangupCause, cause_to_sip, sip_to_cause  # noqa: F401 - re-exported
from .clock import Clock, SystemClock, VirtualClock  # noqa: F401 - re-exported

log = logging.getLogger(__name__)


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



# endpoints (the Endpoint/Media protocols, null and loopback endpoints): endpoint.py

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


