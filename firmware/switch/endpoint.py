"""The seam between a channel and what carries it: the ``Endpoint`` (signalling) and ``Media``
protocols that the SIP endpoint and the handset implement, and null/loopback endpoints for tests
and local channels."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from .causes import HangupCause
from .channel import DEFAULT_DTMF_MS, ChannelState

if TYPE_CHECKING:
    from .channel import Channel


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
