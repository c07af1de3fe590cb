"""The USB handset as the local channel ``handset/local``.

``HandsetLeg`` is the handset's MediaLeg (the switch ↔ media seam): on each media-clock tick it
takes one 20 ms frame from the sound card (at the card's rate), resamples it to 8 kHz, runs
in-band DTMF detection on it (``cython_mixer.dtmf``, whose DC blocker is the high-pass stage),
hands it to the owner that produces this leg's audio (a player, echo, an eavesdrop SpyTap) and
sends what comes back to the card, resampled up; with no producer the card gets silence, so its
playback never starves. ``read_frame``/``send_frame`` are 8 kHz, 20 ms, as for an RTP leg.

``Handset`` is the phone around it: off-hook creates and answers the channel and runs the
dialplan at the destination — the digits keyed while on-hook (dial ``881001``, then lift), else
``[handset] destination``; keypad tones while a call is up are queued on the channel as DTMF
(``source="inband"``); on-hook hangs up. ``hook = "always"`` (a headset) is off-hook from the
start and ``#`` dials the keyed digits after a call ended. ``hook = "hid"`` follows the card's own
hook switch through hidraw (``hw/hid.py``); ``"gpio"`` takes it from the panel's hook input.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from cython_mixer import FRAME_BYTES, FRAME_MS, INTERNAL_RATE
from cython_mixer.dtmf import DtmfDetector
from cython_mixer.resample import Resampler
from firmware.media.clock import MediaClock
from firmware.media.player import Producers
from firmware.switch.channel import Channel, HangupCause

log = logging.getLogger("earshot.handset")

CHANNEL_NAME = "handset/local"
PREDIAL_TIMEOUT_MS = 15000      # keyed digits older than this are forgotten
XRUN_CHECK_TICKS = 50           # log new xruns at most once a second
HOOK_MODES = ("sim", "gpio", "hid", "always")


class HandsetLeg(Producers):
    """The handset's media: 8 kHz 20 ms frames in and out over a (resampled) sound device.

    ``device`` has ``rate``, ``read() -> bytes | None`` and ``write(frame)`` (hw.audio).
    ``on_digit(digit)`` gets each keypad tone detected in the microphone signal.
    """

    rate = INTERNAL_RATE      # what read_frame/send_frame carry (a SpyTap resamples nothing)
    codec = "L16"
    ptime_ms = FRAME_MS
    secure = False

    def __init__(self, device: Any, clock: MediaClock, on_digit: Any = None) -> None:
        self.device = device
        self.device_rate = int(device.rate)
        self.clock = clock
        self.on_digit = on_digit
        self.relay = None                         # a handset is never one side of an RTP relay
        self._init_producers()
        wide = self.device_rate != INTERNAL_RATE
        self._down = Resampler.for_frames(self.device_rate, INTERNAL_RATE, FRAME_MS, "phone") if wide else None
        self._up = Resampler.for_frames(INTERNAL_RATE, self.device_rate, FRAME_MS, "phone") if wide else None
        self._in = bytearray(FRAME_BYTES)          # this tick's microphone frame at 8 kHz (owned here)
        self._in_view = memoryview(self._in)
        self._have_in = False
        self._out = bytearray(FRAME_BYTES)         # the frame to send at the end of this tick
        self._have_out = False
        self._dev_out = bytearray(device.rate * FRAME_MS // 1000 * 2)
        self._detector = DtmfDetector()
        self._running = False
        self.stats = {"ticks": 0, "mic_missing": 0, "digits": 0, "sent": 0, "send_overruns": 0}

    def __repr__(self) -> str:
        return f"<HandsetLeg {getattr(self.device, 'device_name', '?')} {self.device_rate} Hz>"

    # --- running ------------------------------------------------------------------------------------

    def start(self) -> None:
        if not self._running:
            self._running = True
            self.clock.add(self._tick)

    def stop(self) -> None:
        self.stop_playback()
        self.echo(False)
        self._owners.clear()
        if self._running:
            self._running = False
            self.clock.remove(self._tick)

    def _tick(self, tick: int) -> None:
        self.stats["ticks"] += 1
        incoming = self._capture()
        if incoming is not None:
            digits = self._detector.feed(incoming)
            if digits:
                self.stats["digits"] += len(digits)
                for d in digits:
                    if self.on_digit is not None:
                        self.on_digit(d)
        producer = self.owner
        produce = getattr(producer, "produce", None)
        if produce is not None:
            self.send_frame(produce(incoming))
            self._produced(producer)
        self._flush_out()
        if tick % XRUN_CHECK_TICKS == 0:
            self.device.check_xruns()

    def _capture(self) -> memoryview | None:
        frame = self.device.read()
        if frame is None:
            self.stats["mic_missing"] += 1
            self._have_in = False
            return None
        if self._down is not None:
            self._down.process_into(frame, self._in)
        else:
            self._in[:] = frame
        self._have_in = True
        return self._in_view

    def _flush_out(self) -> None:
        """Exactly one frame to the card per tick: what was sent, else silence."""
        if not self._have_out:
            self._out[:] = bytes(FRAME_BYTES)
        self._have_out = False
        if self._up is not None:
            self._up.process_into(self._out, self._dev_out)
            self.device.write(self._dev_out)
        else:
            self.device.write(self._out)

    # --- MediaLeg: frames ---------------------------------------------------------------------------

    def read_frame(self) -> bytes | None:
        """This tick's 20 ms from the microphone at 8 kHz, or None when the card delivered nothing."""
        return bytes(self._in) if self._have_in else None

    def send_frame(self, pcm: Any) -> None:
        """20 ms at 8 kHz to the earpiece (sent at the end of this tick); None sends nothing."""
        if pcm is None:
            return
        if len(pcm) != FRAME_BYTES:
            raise ValueError(f"handset frames are {FRAME_BYTES} bytes (20 ms at 8 kHz), got {len(pcm)}")
        if self._have_out:
            self.stats["send_overruns"] += 1     # two frames in one tick: the later one wins
        self._out[:] = pcm
        self._have_out = True
        self.stats["sent"] += 1

    # owners, play, stop_playback and echo: firmware.media.player.Producers (RtpLeg's rules)


class HandsetEndpoint:
    """The switch's Endpoint for the handset: answering and hanging up are local, nothing to signal."""

    def __init__(self, handset: Handset) -> None:
        self.name = CHANNEL_NAME
        self.media = handset.leg
        self._handset = handset
        self.channel: Channel | None = None

    def attach(self, channel: Channel) -> None:
        self.channel = channel

    async def answer(self) -> None:
        pass

    async def pre_answer(self) -> None:
        pass

    async def ring(self) -> None:
        pass

    async def hangup(self, cause: HangupCause) -> None:
        self._handset._call_ended(cause)

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        log.info("handset: DTMF %s to the earpiece is not played", digit)


class Handset:
    """The local phone: hook state, keyed digits and the ``handset/local`` channel."""

    def __init__(self, switch: Any, device: Any, clock: MediaClock, *, destination: str = "779",
                 hook: str = "sim", caller_id_number: str = "handset", caller_id_name: str = "Handset") -> None:
        if hook not in HOOK_MODES:
            raise ValueError(f"[handset] hook must be one of {', '.join(HOOK_MODES)} (got {hook!r})")
        if not destination:
            raise ValueError("[handset] destination must not be empty")
        self.switch = switch
        self.destination = destination
        self.hook = hook
        self.caller_id = (caller_id_number, caller_id_name)
        self.leg = HandsetLeg(device, clock, on_digit=self._digit)
        self.endpoint = HandsetEndpoint(self)
        self.channel: Channel | None = None
        self.off_hook_now = False
        self.predial = ""
        self._predial_at = 0.0
        self._tasks: set[asyncio.Task] = set()
        self.calls = 0

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start capturing (keypad detection runs from now on); ``always`` goes off-hook at once."""
        self.leg.start()
        if self.hook == "hid":
            from hw import hid       # noqa: PLC0415 - the hidraw edge, only for hook = "hid"
            name = str(getattr(self.leg.device, "name", "") or "")   # the [handset] device
            try:
                path = hid.find_hook_device(name, hid.SYSFS_ROOT, hid.DEV_ROOT)
                self.hid_hook = hid.HidHook(path, hid.hook_layout(path, hid.SYSFS_ROOT), self.set_hook)
                self.hid_hook.start()
            except (hid.HidDeviceNotFound, hid.HidDescriptorError, OSError) as e:
                # the appliance keeps running: the hook follows set_hook() (panel, tests) only
                log.error("[handset] hook = \"hid\": %s; falling back to the sim hook", e)
                self.hook = "sim"
            else:
                log.info("[handset] hook = \"hid\": following %s", path)
                self._spawn(self.hid_hook.hold())    # Handset.stop() cancels it, which closes it
        if self.hook == "always":
            self.set_hook(True)

    async def stop(self) -> None:
        if self.channel is not None and self.channel.up:
            await self.channel.hangup(HangupCause.NORMAL_CLEARING)
        for t in list(self._tasks):
            t.cancel()
        self.leg.stop()

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- hook ---------------------------------------------------------------------------------------

    def set_hook(self, off_hook: bool) -> asyncio.Task | None:
        """Hook switch changed (panel input, HID, tests); returns the task doing the work."""
        if off_hook == self.off_hook_now:
            return None
        self.off_hook_now = off_hook
        return self._spawn(self.off_hook() if off_hook else self.on_hook())

    async def off_hook(self) -> Channel:
        """Create and answer ``handset/local`` and run the dialplan at the keyed digits or the default."""
        self.off_hook_now = True
        if self.channel is not None and self.channel.up:
            return self.channel
        dest = self._take_predial() or self.destination
        ch = self.switch.new_channel(self.endpoint, name=CHANNEL_NAME, destination_number=dest,
                                     caller_id_number=self.caller_id[0], caller_id_name=self.caller_id[1],
                                     context="default", may_eavesdrop="true")  # the supervisor's own seat
        self.channel = ch
        self.calls += 1
        log.info("handset off-hook: dialling %s", dest)
        await ch.answer()
        self.switch.start(ch)
        return ch

    async def on_hook(self) -> None:
        self.off_hook_now = False
        ch = self.channel
        if ch is not None and ch.up:
            log.info("handset on-hook: hanging up")
            await ch.hangup(HangupCause.NORMAL_CLEARING)

    def _call_ended(self, cause: HangupCause) -> None:
        self.leg.stop_playback()
        self.leg.echo(False)

    # --- keypad -------------------------------------------------------------------------------------

    def _digit(self, digit: str) -> None:
        ch = self.channel
        if ch is not None and ch.up:
            ch.queue_dtmf(digit, source="inband")
            return
        now = self.leg.clock.now()
        if self.predial and (now - self._predial_at) * 1000 > PREDIAL_TIMEOUT_MS:
            self.predial = ""
        if digit == "#" and self.hook == "always":
            self.off_hook_now = False
            self.set_hook(True)
            return
        self.predial += digit
        self._predial_at = now
        log.info("handset keypad: %s", self.predial)

    def _take_predial(self) -> str:
        dest = self.predial
        if dest and (self.leg.clock.now() - self._predial_at) * 1000 > PREDIAL_TIMEOUT_MS:
            dest = ""
        self.predial = ""
        return dest
