"""The in-process event bus, with FreeSWITCH's event names and header names.

Producers call ``fire`` (synchronous fan-out on the loop); consumers either ``subscribe`` a
callback or open a ``Subscription`` that buffers into an ``aio.Mailbox`` for one async reader.
A subscriber that raises is logged and never stops the others. The control socket serialises
these events as plain/json/xml, so header names and values are FreeSWITCH's, all strings.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from firmware import aio

log = logging.getLogger(__name__)

# The event names Earshot fires (FreeSWITCH's switch_event_types_t names).
CHANNEL_CREATE = "CHANNEL_CREATE"
CHANNEL_STATE = "CHANNEL_STATE"
CHANNEL_CALLSTATE = "CHANNEL_CALLSTATE"
CHANNEL_ANSWER = "CHANNEL_ANSWER"
CHANNEL_PROGRESS = "CHANNEL_PROGRESS"
CHANNEL_PROGRESS_MEDIA = "CHANNEL_PROGRESS_MEDIA"
CHANNEL_BRIDGE = "CHANNEL_BRIDGE"
CHANNEL_UNBRIDGE = "CHANNEL_UNBRIDGE"
CHANNEL_HANGUP = "CHANNEL_HANGUP"
CHANNEL_HANGUP_COMPLETE = "CHANNEL_HANGUP_COMPLETE"
CHANNEL_EXECUTE = "CHANNEL_EXECUTE"
CHANNEL_EXECUTE_COMPLETE = "CHANNEL_EXECUTE_COMPLETE"
DTMF = "DTMF"
CUSTOM = "CUSTOM"
BACKGROUND_JOB = "BACKGROUND_JOB"
HEARTBEAT = "HEARTBEAT"
MEDIA_BUG_START = "MEDIA_BUG_START"  # a tap (eavesdrop) attached to / detached from a channel's media
MEDIA_BUG_STOP = "MEDIA_BUG_STOP"

EVENT_NAMES = frozenset({
    CHANNEL_CREATE, CHANNEL_STATE, CHANNEL_CALLSTATE, CHANNEL_ANSWER, CHANNEL_PROGRESS,
    CHANNEL_PROGRESS_MEDIA, CHANNEL_BRIDGE, CHANNEL_UNBRIDGE, CHANNEL_HANGUP, CHANNEL_HANGUP_COMPLETE,
    CHANNEL_EXECUTE, CHANNEL_EXECUTE_COMPLETE, DTMF, CUSTOM, BACKGROUND_JOB, HEARTBEAT,
    MEDIA_BUG_START, MEDIA_BUG_STOP,
})

ALL = "all"

Callback = Callable[["Event"], None]


class Event:
    """One event: a name and FreeSWITCH-style string headers (``Event-Name``, ``Unique-ID``, …)."""

    __slots__ = ("name", "headers", "body")

    def __init__(self, name: str, headers: dict[str, str] | None = None, body: str = "") -> None:
        self.name = name
        self.headers: dict[str, str] = dict(headers or {})
        self.body = body

    def get(self, header: str, default: str | None = None) -> str | None:
        return self.headers.get(header, default)

    def __getitem__(self, header: str) -> str:
        return self.headers[header]

    @property
    def subclass(self) -> str | None:
        return self.headers.get("Event-Subclass")

    @property
    def uuid(self) -> str | None:
        return self.headers.get("Unique-ID")

    def __repr__(self) -> str:
        sub = f" {self.subclass}" if self.subclass else ""
        return f"<Event {self.name}{sub} {self.uuid or ''}>"


def _norm_names(names: str | Iterable[str]) -> frozenset[str] | None:
    """None means every event; "CUSTOM earshot::x" style entries select one CUSTOM subclass."""
    if isinstance(names, str):
        names = names.split()
    items = frozenset(n.strip() for n in names if n.strip())
    if not items:
        raise ValueError("subscribe to at least one event name, or 'all'")
    if ALL in items or "ALL" in items:
        return None
    return items


def _wants(names: frozenset[str] | None, event: Event) -> bool:
    if names is None or event.name in names:
        return True
    # a CUSTOM subclass may be named directly (FreeSWITCH's "event plain CUSTOM sub::class")
    return event.name == CUSTOM and event.subclass is not None and event.subclass in names


class Subscription:
    """Buffers matching events for one async consumer; the oldest are dropped when it lags."""

    def __init__(self, bus: EventBus, names: str | Iterable[str], maxlen: int = 256) -> None:
        self._bus = bus
        self.names = _norm_names(names)
        self.mailbox = aio.Mailbox(maxlen)
        self.closed = False
        self._token = bus.subscribe(self.names if self.names is not None else ALL, self.mailbox.put)

    @property
    def dropped(self) -> int:
        return self.mailbox.dropped

    async def get(self) -> Event:
        return await self.mailbox.get()

    def get_nowait(self) -> Event | None:
        return self.mailbox.get_nowait()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus.unsubscribe(self._token)

    def __len__(self) -> int:
        return len(self.mailbox)


class EventBus:
    """Synchronous fan-out: ``fire`` calls every matching subscriber before it returns."""

    def __init__(self, core_uuid: str, hostname: str = "earshot",
                 wallclock: Callable[[], float] = time.time) -> None:
        self.core_uuid = core_uuid
        self.hostname = hostname
        self._wallclock = wallclock
        self._subs: dict[int, tuple[frozenset[str] | None, Callback]] = {}
        self._next_token = 1
        self._sequence = 0
        self.failures = 0

    def subscribe(self, names: str | Iterable[str], callback: Callback) -> int:
        """Call ``callback(event)`` for the named events (or "all"); returns a token to unsubscribe."""
        token = self._next_token
        self._next_token += 1
        self._subs[token] = (_norm_names(names) if not isinstance(names, frozenset) else names, callback)
        return token

    def unsubscribe(self, token: int) -> bool:
        return self._subs.pop(token, None) is not None

    def subscription(self, names: str | Iterable[str] = ALL, maxlen: int = 256) -> Subscription:
        return Subscription(self, names, maxlen)

    def make(self, name: str, headers: dict[str, str] | None = None, *, subclass: str | None = None,
             body: str = "") -> Event:
        if name not in EVENT_NAMES:
            raise ValueError(f"unknown event name {name!r}")
        if name == CUSTOM and not subclass:
            raise ValueError("a CUSTOM event needs a subclass")
        now = self._wallclock()
        self._sequence += 1
        base = {
            "Event-Name": name,
            "Core-UUID": self.core_uuid,
            "FreeSWITCH-Hostname": self.hostname,
            "Event-Date-Local": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)),
            "Event-Date-Timestamp": str(int(now * 1_000_000)),
            "Event-Sequence": str(self._sequence),
        }
        if subclass:
            base["Event-Subclass"] = subclass
        if headers:
            base.update({k: "" if v is None else str(v) for k, v in headers.items()})
        return Event(name, base, body)

    def fire(self, name: str, headers: dict[str, str] | None = None, *, subclass: str | None = None,
             body: str = "") -> Event:
        """Build and deliver one event; returns it."""
        event = self.make(name, headers, subclass=subclass, body=body)
        self.deliver(event)
        return event

    def deliver(self, event: Event) -> None:
        for token, (names, callback) in list(self._subs.items()):
            if not _wants(names, event):
                continue
            try:
                callback(event)
            except Exception:  # one bad subscriber must not break the others
                self.failures += 1
                log.exception("event subscriber %d failed on %s", token, event.name)

    def __len__(self) -> int:
        return len(self._subs)
