"""The eavesdrop media tap: who hears whom on a tapped call, mixed every 20 ms (DESIGN §2).

One ``CallTap`` per tapped call is the Relay's tap (``relay.set_tap``); it holds every spy on that
call in one ``cython_mixer.mix.MixMatrix`` evaluated inside the relay's clock tick::

    inputs:  0 = leg a's voice, 1 = leg b's voice, then per spy k: 2+2k whisper, 3+2k confirm tone,
             last: the notification beep to the monitored parties
    outputs: 0 = to leg a, 1 = to leg b, 2+k = to spy k

The *target* is the tapped channel (a or b), the *peer* the other leg. Per spy:

- listen: the spy hears the target's voice (``hear_target``, FreeSWITCH's bridge_aleg) and/or what
  the target hears (``hear_peer``, bridge_bleg), each at the listen gain. Never its own whisper, and
  never other spies' whispers (FreeSWITCH leaks those).
- mode 0 listen only; 1 the peer hears the spy; 2 the target hears the spy; 3 both (bit 1 = peer,
  bit 2 = target), at the whisper gain. The whisper reaches the target whichever legs the spy
  listens to, and also when the other side sends nothing: a None input is silence and the clock
  makes the frame that carries the whisper (FreeSWITCH needs a frame written to the target).
- a confirmation tone, distinct per mode, is mixed into the spy's ear on request.

The spy's own leg is driven by its ``produce(incoming)`` owner contract (see ``player``): the
``SpyTap`` claims the spy's MediaLeg, keeps the latest frame it hears from the spy in a one-frame
slot for the next mix, and returns the latest mix for the spy. When the spy's leg runs on another
clock (the handset's sound card), the slot absorbs the drift one frame at a time: one frame is
dropped or one tick sends nothing, never a burst or a growing delay.

Rates and frame size: everything inside is 8 kHz, 20 ms (``cython_mixer.INTERNAL_RATE``). An RTP
leg already decodes to that and re-frames other ptimes itself; a leg with a ``rate`` attribute
other than 8000 (a wideband handset) is resampled here in both directions with libsoxr.
Output frames are views of buffers owned by the tap, valid until the next tick (legs encode at once).
"""
from __future__ import annotations

import logging
from typing import Any

from cython_mixer import FRAME_BYTES, FRAME_MS, INTERNAL_RATE
from cython_mixer.mix import MixMatrix
from cython_mixer.resample import Resampler
from cython_mixer.tone import ToneGenerator

from .clock import MediaClock

log = logging.getLogger(__name__)

LISTEN, WHISPER_PEER, WHISPER_TARGET, THREE_WAY = 0, 1, 2, 3
MODES = (LISTEN, WHISPER_PEER, WHISPER_TARGET, THREE_WAY)

#: Confirmation tone per mode: its own pitch and number of beeps, none near the usual test tones.
CONFIRM_TONES = {
    LISTEN: "%(160,0,350)",
    WHISPER_PEER: "%(80,60,620);%(80,0,620)",
    WHISPER_TARGET: "%(80,60,820);%(80,0,820)",
    THREE_WAY: "%(80,60,1240);%(80,60,1240);%(80,0,1240)",
}
CONFIRM_LEVEL_DBM0 = -16.0
#: The beep the monitored parties hear with eavesdrop_notify_parties (Avaya's service observing).
NOTIFY_TONE = "%(200,0,440)"
NOTIFY_EVERY_TICKS = 12_000 // FRAME_MS
NOTIFY_LEVEL_DBM0 = -18.0
#: Ticks of whisper dropped after a digit: the frames the spy's jitter buffer and in-band digit
#: detection still hold from before the key press (so the key's own sound is not whispered).
WHISPER_HOLDOFF_TICKS = 5
#: How often (ticks) a spy checks that its call still carries the tap (a re-INVITE rebuilds the relay).
RECHECK_TICKS = 50
MIN_GAIN_DB, MAX_GAIN_DB = -60.0, 24.0


class TapError(ValueError):
    """The tap cannot be placed; the message says why (no media, not bridged, …)."""


def check_mode(mode: Any) -> int:
    if mode not in MODES or isinstance(mode, bool):
        raise ValueError(f"eavesdrop mode must be one of 0 1 2 3, got {mode!r}")
    return int(mode)


def check_gain(db: Any, what: str) -> float:
    try:
        x = float(db)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of dB, got {db!r}") from None
    if not MIN_GAIN_DB <= x <= MAX_GAIN_DB:
        raise ValueError(f"{what} {x} dB is outside {MIN_GAIN_DB}..{MAX_GAIN_DB} dB")
    return x


def _leg_of(channel: Any) -> Any:
    endpoint = getattr(channel, "endpoint", None)
    return getattr(endpoint, "media", None) if endpoint is not None else None


def _stream_of(leg: Any) -> Any:
    return getattr(leg, "stream", leg)


class SpyTap:
    """One spy on a tapped call: the handle the eavesdrop state machine steers, and the producer
    that owns the spy's leg while the tap is on."""

    done = False          # the producer contract: a spy tap never ends by itself

    def __init__(self, call: CallTap, leg: Any, *, hear_target: bool, hear_peer: bool, mode: int,
                 listen_gain_db: float, whisper_gain_db: float, notify_parties: bool) -> None:
        self.call = call
        self.leg = leg
        self.hear_target = bool(hear_target)
        self.hear_peer = bool(hear_peer)
        self.mode = check_mode(mode)
        self.listen_gain_db = check_gain(listen_gain_db, "listen gain")
        self.whisper_gain_db = check_gain(whisper_gain_db, "whisper gain")
        self.notify_parties = bool(notify_parties)
        self.detached = False
        self.rate = int(getattr(leg, "rate", INTERNAL_RATE) or INTERNAL_RATE)
        self._leg_frame_bytes = self.rate * FRAME_MS // 1000 * 2
        if self.rate != INTERNAL_RATE:
            # one internal rate: a wideband spy is resampled in and out, never relabelled
            self._down = Resampler.for_frames(self.rate, INTERNAL_RATE, FRAME_MS, "hq")
            self._up = Resampler.for_frames(INTERNAL_RATE, self.rate, FRAME_MS, "hq")
            self._ear_leg = bytearray(self._leg_frame_bytes)
        else:
            self._down = self._up = None
            self._ear_leg = None
        # one-frame slots between the spy leg's tick and the call's tick (owned here, reused)
        self._whisper = bytearray(FRAME_BYTES)
        self._whisper_view = memoryview(self._whisper)
        self._whisper_ready = False
        self._ear = bytearray(FRAME_BYTES)
        self._ear_view = memoryview(self._ear)
        self._ear_ready = False
        self._tone: ToneGenerator | None = None
        self._tone_buf = bytearray(FRAME_BYTES)
        self._tone_view = memoryview(self._tone_buf)
        self._holdoff = 0
        self._ticks = 0
        self.stats = {"heard": 0, "whispered": 0, "dropped_whisper": 0, "bad_frames": 0,
                      "overruns": 0, "confirm_tones": 0}

    # --- control (the eavesdrop state machine) --------------------------------------------------

    def set_mode(self, mode: int) -> None:
        """0 listen only, 1 the peer hears the spy, 2 the target hears the spy, 3 both."""
        self.mode = check_mode(mode)
        self.call._apply(self)

    def drop_whisper(self) -> None:
        """Discard whisper audio still queued from before a digit (the slot and a short hold-off)."""
        self._whisper_ready = False
        self._holdoff = WHISPER_HOLDOFF_TICKS

    def play_confirm(self, mode: int) -> None:
        """Mix the confirmation tone of ``mode`` into the spy's ear (replaces one still playing)."""
        self._tone = ToneGenerator(CONFIRM_TONES[check_mode(mode)], INTERNAL_RATE, CONFIRM_LEVEL_DBM0)
        self.stats["confirm_tones"] += 1

    def set_gains(self, listen_gain_db: float | None = None, whisper_gain_db: float | None = None) -> None:
        """Change the listen volume and/or the whisper gain (dB) during the session."""
        if listen_gain_db is not None:
            self.listen_gain_db = check_gain(listen_gain_db, "listen gain")
        if whisper_gain_db is not None:
            self.whisper_gain_db = check_gain(whisper_gain_db, "whisper gain")
        self.call._apply(self)

    def detach(self) -> None:
        """Leave the call (idempotent): the spy's leg is released, the call untouched."""
        if not self.detached:
            self.detached = True
            self.call._remove(self)
            release = getattr(self.leg, "release", None)
            if release is not None:
                release(self)

    @property
    def active(self) -> bool:
        """The tap is on and its call still carries it."""
        return not self.detached and self.call.relay.tap is self.call

    # --- the spy leg's producer (its clock tick) ------------------------------------------------

    def produce(self, incoming: Any) -> memoryview | None:
        """Take the spy's 20 ms for the next mix; give back the latest mix for the spy."""
        self._ticks += 1
        if self._ticks % RECHECK_TICKS == 0:
            self.call._recheck()
        if incoming is not None:
            if len(incoming) != self._leg_frame_bytes:
                self.stats["bad_frames"] += 1
                if self.stats["bad_frames"] == 1:
                    log.warning("spy leg %r sent a %d-byte frame; a 20 ms frame at %d Hz is %d bytes "
                                "(frames dropped)", self.leg, len(incoming), self.rate, self._leg_frame_bytes)
            else:
                if self._whisper_ready:
                    self.stats["overruns"] += 1      # the call's clock fell a frame behind: drop one
                if self._down is not None:
                    self._down.process_into(incoming, self._whisper)
                else:
                    self._whisper[:] = incoming
                self._whisper_ready = True
        if not self._ear_ready:
            return None
        self._ear_ready = False
        if self._up is not None:
            self._up.process_into(self._ear, self._ear_leg)
            return memoryview(self._ear_leg)
        return self._ear_view

    # --- the call's tick --------------------------------------------------------------------------

    def _take_whisper(self) -> memoryview | None:
        ready, self._whisper_ready = self._whisper_ready, False
        if self._holdoff:
            self._holdoff -= 1
            if ready:
                self.stats["dropped_whisper"] += 1
            return None
        return self._whisper_view if ready else None

    def _take_tone(self) -> memoryview | None:
        tone = self._tone
        if tone is None:
            return None
        if tone.read_into(self._tone_buf) == 0:
            self._tone = None
            return None
        if tone.done:
            self._tone = None
        return self._tone_view

    def _deliver(self, frame: Any, live: bool) -> None:
        if live:
            self._ear[:] = frame
            self._ear_ready = True
            self.stats["heard"] += 1


class CallTap:
    """The tap on one bridged call (``relay``), mixing every spy on it. Made by ``TapHub``."""

    def __init__(self, hub: TapHub, relay: Any) -> None:
        self.hub = hub
        self.relay = relay
        self.spies: list[SpyTap] = []
        self._target_side: dict[int, int] = {}     # id(spy) -> 0 (target is leg a) / 1 (leg b)
        self._matrix: MixMatrix | None = None
        self._inputs: list = []
        self._beep: ToneGenerator | None = None
        self._beep_buf = bytearray(FRAME_BYTES)
        self._beep_view = memoryview(self._beep_buf)
        self._beep_countdown = 0
        self.ticks = 0

    # --- membership -------------------------------------------------------------------------------

    def _add(self, spy: SpyTap, target_side: int) -> None:
        self.spies.append(spy)
        self._target_side[id(spy)] = target_side
        if spy.notify_parties and self._beep is None:
            self._beep = ToneGenerator(NOTIFY_TONE, INTERNAL_RATE, NOTIFY_LEVEL_DBM0)
            self._beep_countdown = 0          # beep at once, then every 12 s
        self._rebuild()

    def _remove(self, spy: SpyTap) -> None:
        if spy in self.spies:
            self.spies.remove(spy)
            self._target_side.pop(id(spy), None)
        if not any(s.notify_parties for s in self.spies):
            self._beep = None
        if self.spies:
            self._rebuild()
        else:
            self.hub._forget(self)

    def _rebuild(self) -> None:
        """A new matrix for the current spies (joins and leaves only, never per tick)."""
        n = len(self.spies)
        self._matrix = MixMatrix(2 + 2 * n + 1, 2 + n, FRAME_BYTES // 2)
        self._inputs = [None] * (2 + 2 * n + 1)
        m = self._matrix
        m.set_gain(1, 0, 0.0)      # a hears b
        m.set_gain(0, 1, 0.0)      # b hears a
        beep = 2 + 2 * n
        if self._beep is not None:
            m.set_gain(beep, 0, 0.0)
            m.set_gain(beep, 1, 0.0)
        for spy in self.spies:
            self._apply(spy)

    def _apply(self, spy: SpyTap) -> None:
        """Set the matrix gains of one spy from its mode, listen flags and gains."""
        if spy not in self.spies or self._matrix is None:
            return
        m, k = self._matrix, self.spies.index(spy)
        t = self._target_side[id(spy)]
        p = 1 - t
        listen = spy.listen_gain_db
        m.set_gain(t, 2 + k, listen if spy.hear_target else None)
        m.set_gain(p, 2 + k, listen if spy.hear_peer else None)
        m.set_gain(3 + 2 * k, 2 + k, 0.0)                     # its confirmation tone
        whisper = spy.whisper_gain_db
        m.set_gain(2 + 2 * k, t, whisper if spy.mode & WHISPER_TARGET else None)
        m.set_gain(2 + 2 * k, p, whisper if spy.mode & WHISPER_PEER else None)

    def _recheck(self) -> None:
        """Put the tap back if the relay was rebuilt under it (re-INVITE); a closed relay stays off."""
        if self.relay.tap is not self and self.spies:
            try:
                self.relay.set_tap(self, self.hub.clock)
                log.info("eavesdrop tap restored on %r after the relay was rebuilt", self.relay)
            except ValueError:
                pass

    # --- the relay's Tap --------------------------------------------------------------------------

    def frames(self, tick: int, from_a: Any, from_b: Any) -> tuple[Any, Any]:
        """One tick: what legs a and b hear, and every spy's ear (handed to its SpyTap)."""
        self.ticks += 1
        ins, spies = self._inputs, self.spies
        ins[0], ins[1] = from_a, from_b
        live_a, live_b = from_b is not None, from_a is not None
        tones = 0
        for k, spy in enumerate(spies):
            w = spy._take_whisper()
            ins[2 + 2 * k] = w
            if w is not None:
                spy.stats["whispered"] += 1 if spy.mode else 0
                t = self._target_side[id(spy)]
                if spy.mode & WHISPER_TARGET:
                    if t == 0:
                        live_a = True
                    else:
                        live_b = True
                if spy.mode & WHISPER_PEER:
                    if t == 0:
                        live_b = True
                    else:
                        live_a = True
            tone = spy._take_tone()
            ins[3 + 2 * k] = tone
            tones |= (tone is not None) << k
        beep = self._next_beep()
        ins[-1] = beep
        if beep is not None:
            live_a = live_b = True
        outs = self._matrix.process(ins)
        for k, spy in enumerate(spies):
            t = self._target_side[id(spy)]
            target_in = from_a if t == 0 else from_b
            peer_in = from_b if t == 0 else from_a
            live = ((spy.hear_target and target_in is not None) or (spy.hear_peer and peer_in is not None)
                    or bool(tones >> k & 1))
            spy._deliver(outs[2 + k], live)
        return (outs[0] if live_a else None), (outs[1] if live_b else None)

    def _next_beep(self) -> memoryview | None:
        gen = self._beep
        if gen is None:
            return None
        if self._beep_countdown <= 0:
            gen.rewind()
            self._beep_countdown = NOTIFY_EVERY_TICKS
        self._beep_countdown -= 1
        if gen.done or gen.read_into(self._beep_buf) == 0:
            return None
        return self._beep_view


class TapHub:
    """Places spies on bridged calls; one per appliance, on the media engine's clock.

    This is the media side of the eavesdrop state machine (``firmware.switch.eavesdrop``):
    ``ready(target)`` and ``attach(target, spy, …) -> SpyTap``.
    """

    def __init__(self, clock: MediaClock) -> None:
        self.clock = clock
        self._calls: dict[int, CallTap] = {}

    @property
    def calls(self) -> int:
        """Calls tapped now."""
        return len(self._calls)

    def ready(self, target: Any) -> bool:
        """True when ``target`` has media a tap can go on (a leg in a bridge)."""
        leg = _leg_of(target)
        return leg is not None and getattr(leg, "relay", None) is not None

    def attach(self, target: Any, spy: Any, *, hear_target: bool = True, hear_peer: bool = True,
               mode: int = LISTEN, listen_gain_db: float = 0.0, whisper_gain_db: float = 0.0,
               notify_parties: bool = False) -> SpyTap:
        """Put ``spy`` (a channel) on ``target``'s call; TapError says why it cannot."""
        target_leg, spy_leg = _leg_of(target), _leg_of(spy)
        if target_leg is None:
            raise TapError("the target channel has no media")
        relay = getattr(target_leg, "relay", None)
        if relay is None:
            raise TapError("the target is not bridged: there is no call media to tap")
        if spy_leg is None or not callable(getattr(spy_leg, "claim", None)):
            raise TapError("the spy channel has no media leg")
        if spy_leg is target_leg or getattr(spy_leg, "relay", None) is relay:
            raise TapError("the spy is a party of the target call")
        if getattr(spy_leg, "relay", None) is not None:
            raise TapError("the spy's own leg is bridged to another call")
        stream = _stream_of(target_leg)
        if relay.a is stream:
            side = 0
        elif relay.b is stream:
            side = 1
        else:
            raise TapError("the target's leg is not part of its relay")
        if not hear_target and not hear_peer:
            hear_target = hear_peer = True            # FreeSWITCH: neither means both
        call = self._calls.get(id(relay))
        if call is not None and call.relay is not relay:
            call = None
        if call is None:
            if relay.tap is not None and not getattr(relay.tap, "transient", False):
                raise TapError(f"the call already carries another tap ({relay.tap!r})")
            call = CallTap(self, relay)
        tap = SpyTap(call, spy_leg, hear_target=hear_target, hear_peer=hear_peer, mode=mode,
                     listen_gain_db=listen_gain_db, whisper_gain_db=whisper_gain_db,
                     notify_parties=notify_parties)
        call._add(tap, side)
        if relay.tap is not call:
            try:
                relay.set_tap(call, self.clock)
            except ValueError as exc:
                call._remove(tap)
                raise TapError(f"the call's media is gone ({exc})") from None
            self._calls[id(relay)] = call
        spy_leg.claim(tap)
        return tap

    def _forget(self, call: CallTap) -> None:
        """The last spy left: the call goes back to pass-through."""
        if self._calls.get(id(call.relay)) is call:
            del self._calls[id(call.relay)]
        if call.relay.tap is call:
            try:
                call.relay.clear_tap()
            except ValueError:        # the relay closed with the call: nothing to restore
                pass
