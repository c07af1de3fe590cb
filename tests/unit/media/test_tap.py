"""The eavesdrop media tap: who hears which tone in each mode and listen setting (FFT checks).

Caller (leg a, the target) plays 440 Hz, agent (leg b, the peer) 1000 Hz, supervisor (spy) 2000 Hz.
Relay and legs are in-memory fakes with the real seams: ``relay.set_tap/clear_tap/tap``, the
Tap's ``frames(tick, from_a, from_b)``, a MediaLeg's ``claim/release`` and its producer's
``produce(incoming)``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cython_mixer import FRAME_BYTES, FRAME_SAMPLES, g711
from firmware.media import tap as tapmod
from firmware.media.tap import CONFIRM_TONES, TapError, TapHub, WHISPER_HOLDOFF_TICKS

A_HZ, B_HZ, SPY_HZ = 440.0, 1000.0, 2000.0
AMP = 6000.0


class FakeStream:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeRelay:
    def __init__(self) -> None:
        self.a, self.b = FakeStream("a"), FakeStream("b")
        self.tap = None
        self.closed = False
        self.cleared = 0

    def set_tap(self, tap, clock) -> None:
        if self.closed:
            raise ValueError("relay is closed")
        self.tap = tap

    def clear_tap(self) -> None:
        if self.closed:
            raise ValueError("relay is closed")
        self.tap = None
        self.cleared += 1


class FakeLeg:
    """A MediaLeg as the tap sees it: claim/release, relay, stream, optional rate."""

    def __init__(self, stream=None, relay=None, rate: int | None = None) -> None:
        self.stream = stream
        self.relay = relay
        self.owners: list = []
        if rate is not None:
            self.rate = rate

    def claim(self, owner) -> None:
        self.owners.append(owner)

    def release(self, owner) -> None:
        if owner in self.owners:
            self.owners.remove(owner)


class FakeEndpoint:
    def __init__(self, media) -> None:
        self.media = media


class FakeChannel:
    def __init__(self, leg) -> None:
        self.endpoint = FakeEndpoint(leg)


class Call:
    """A bridged call a ↔ b on a FakeRelay; ``a`` is the target unless said otherwise."""

    def __init__(self) -> None:
        self.relay = FakeRelay()
        self.leg_a = FakeLeg(self.relay.a, self.relay)
        self.leg_b = FakeLeg(self.relay.b, self.relay)
        self.a, self.b = FakeChannel(self.leg_a), FakeChannel(self.leg_b)


class Sine:
    """Continuous-phase tone, one frame at a time (int16 bytes); rate samples per second."""

    def __init__(self, hz: float, rate: int = 8000, amp: float = AMP) -> None:
        self.hz, self.rate, self.amp, self.n = hz, rate, amp, 0

    def frame(self) -> bytes:
        size = self.rate // 50
        t = (self.n + np.arange(size)) / self.rate
        self.n += size
        return np.round(self.amp * np.sin(2 * math.pi * self.hz * t)).astype(np.int16).tobytes()


def level(frames: list, hz: float, rate: int = 8000) -> float:
    """Amplitude of ``hz`` in the concatenated frames (None frames are silence)."""
    size = rate // 50
    x = np.concatenate([np.frombuffer(bytes(f), np.int16) if f is not None else np.zeros(size, np.int16)
                        for f in frames]).astype(np.float64)
    t = np.arange(len(x)) / rate
    return float(abs(np.dot(x * np.hanning(len(x)), np.exp(-2j * math.pi * hz * t))) * 4 / len(x))


def heard(frames: list, rate: int = 8000) -> set[float]:
    """Which of the three party tones are clearly present (>= 20 % of the sent amplitude)."""
    return {hz for hz in (A_HZ, B_HZ, SPY_HZ) if level(frames, hz, rate) > 0.2 * AMP}


def run(call: Call, spies: list, ticks: int, *, a=True, b=True, spy_send=True, skip: int = 5):
    """Drive ``ticks`` clock ticks: each spy leg's producer, then the call's tap. Returns what
    leg a, leg b and each spy received (copies), after the first ``skip`` ticks."""
    sa, sb = Sine(A_HZ), Sine(B_HZ)
    ss = [Sine(SPY_HZ, getattr(s.leg, "rate", 8000)) for s in spies]
    got_a, got_b, got_s = [], [], [[] for _ in spies]
    for tick in range(ticks):
        for k, s in enumerate(spies):
            ear = s.produce(ss[k].frame() if spy_send else None)
            if tick >= skip:
                got_s[k].append(None if ear is None else bytes(ear))
        fa, fb = sa.frame() if a else None, sb.frame() if b else None
        to_a, to_b = call.relay.tap.frames(tick, fa, fb)
        if tick >= skip:
            got_a.append(None if to_a is None else bytes(to_a))
            got_b.append(None if to_b is None else bytes(to_b))
    return got_a, got_b, got_s


def attach(hub: TapHub, call: Call, *, target="a", rate=None, **kw):
    spy_leg = FakeLeg(rate=rate)
    return hub.attach(call.a if target == "a" else call.b, FakeChannel(spy_leg), **kw), spy_leg


# --- who hears whom ------------------------------------------------------------------------------

LISTEN = {"both": (True, True), "target": (True, False), "peer": (False, True)}


@pytest.mark.parametrize("listen", ["both", "target", "peer"])
@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_who_hears_whom(mode: int, listen: str) -> None:
    call, hub = Call(), TapHub(clock=None)
    hear_target, hear_peer = LISTEN[listen]
    spy, _ = attach(hub, call, mode=mode, hear_target=hear_target, hear_peer=hear_peer)
    to_a, to_b, (to_spy,) = run(call, [spy], 30)
    # the target (a, caller) hears the peer, plus the spy in modes 2 and 3 whatever the spy listens to
    assert heard(to_a) == ({B_HZ, SPY_HZ} if mode in (2, 3) else {B_HZ})
    # the peer (b, agent) hears the target, plus the spy in modes 1 and 3
    assert heard(to_b) == ({A_HZ, SPY_HZ} if mode in (1, 3) else {A_HZ})
    # the spy hears its listen sources and never itself
    assert heard(to_spy) == {hz for hz, on in ((A_HZ, hear_target), (B_HZ, hear_peer)) if on}


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_target_on_leg_b_swaps_the_directions(mode: int) -> None:
    call, hub = Call(), TapHub(clock=None)
    spy, _ = attach(hub, call, target="b", mode=mode, hear_target=True, hear_peer=False)
    to_a, to_b, (to_spy,) = run(call, [spy], 30)
    assert heard(to_b) == ({A_HZ, SPY_HZ} if mode in (2, 3) else {A_HZ})     # b is the target
    assert heard(to_a) == ({B_HZ, SPY_HZ} if mode in (1, 3) else {B_HZ})
    assert heard(to_spy) == {B_HZ}                                              # the target's voice


def test_neither_listen_source_means_both() -> None:
    call, hub = Call(), TapHub(clock=None)
    spy, _ = attach(hub, call, hear_target=False, hear_peer=False)
    assert (spy.hear_target, spy.hear_peer) == (True, True)


def test_whisper_reaches_the_target_when_the_peer_sends_nothing() -> None:
    """Better than FreeSWITCH: the clock makes the frame that carries the whisper (hold, parked)."""
    call, hub = Call(), TapHub(clock=None)
    spy, _ = attach(hub, call, mode=2, hear_target=True, hear_peer=False)
    to_a, to_b, (to_spy,) = run(call, [spy], 30, b=False)
    assert all(f is not None for f in to_a) and heard(to_a) == {SPY_HZ}
    assert heard(to_b) == {A_HZ}


def test_nothing_in_nothing_out_without_whisper() -> None:
    call, hub = Call(), TapHub(clock=None)
    spy, _ = attach(hub, call, mode=0)
    to_a, to_b, (to_spy,) = run(call, [spy], 12, a=False, b=False)
    assert to_a == [None] * 7 and to_b == [None] * 7 and to_spy == [None] * 7


def test_two_spies_do_not_hear_each_other() -> None:
    call, hub = Call(), TapHub(clock=None)
    one, _ = attach(hub, call, mode=3)
    two, _ = attach(hub, call, mode=0)
    assert hub.calls == 1 and call.relay.tap.spies == [one, two]
    to_a, to_b, (ear1, ear2) = run(call, [one, two], 30)
    assert heard(ear2) == {A_HZ, B_HZ}          # spy two does not hear spy one's barge
    assert heard(to_a) == {B_HZ, SPY_HZ}


# --- digits, tones, gains -------------------------------------------------------------------------

def test_drop_whisper_holds_off_the_queued_frames() -> None:
    call, hub = Call(), TapHub(clock=None)
    spy, _ = attach(hub, call, mode=2)
    run(call, [spy], 3, skip=0)
    spy.drop_whisper()
    to_a, _, _ = run(call, [spy], WHISPER_HOLDOFF_TICKS + 20, skip=0)
    assert level(to_a[:WHISPER_HOLDOFF_TICKS], SPY_HZ) < 1.0
    assert level(to_a[WHISPER_HOLDOFF_TICKS + 1:], SPY_HZ) > 0.5 * AMP
    assert spy.stats["dropped_whisper"] == WHISPER_HOLDOFF_TICKS


CONFIRM_HZ = {0: 350.0, 1: 620.0, 2: 820.0, 3: 1240.0}


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_confirmation_tone_only_in_the_spys_ear(mode: int) -> None:
    assert str(int(CONFIRM_HZ[mode])) in CONFIRM_TONES[mode]
    call, hub = Call(), TapHub(clock=None)
    spy, _ = attach(hub, call, mode=0)
    spy.play_confirm(mode)
    to_a, to_b, (to_spy,) = run(call, [spy], 25, a=False, b=False, spy_send=False, skip=0)
    assert to_a == [None] * 25 and to_b == [None] * 25
    tone_frames = [f for f in to_spy if f is not None]
    assert 8 <= len(tone_frames) <= 19               # 160-360 ms of beeps
    others = [hz for m, hz in CONFIRM_HZ.items() if m != mode]
    assert level(tone_frames, CONFIRM_HZ[mode]) > 10 * max(level(tone_frames, hz) for hz in others)
    assert to_spy[-1] is None                       # the tone ended: back to nothing


def test_confirm_tones_are_distinct() -> None:
    assert len(set(CONFIRM_TONES.values())) == 4


def test_listen_and_whisper_gains() -> None:
    call, hub = Call(), TapHub(clock=None)
    spy, _ = attach(hub, call, mode=2, listen_gain_db=-20.0, whisper_gain_db=-6.0)
    to_a, _, (to_spy,) = run(call, [spy], 30)
    assert level(to_spy, A_HZ) == pytest.approx(AMP / 10, rel=0.05)
    assert level(to_a, SPY_HZ) == pytest.approx(AMP / 2, rel=0.05)
    spy.set_gains(listen_gain_db=0.0)               # changeable during the session
    _, _, (to_spy,) = run(call, [spy], 30)
    assert level(to_spy, A_HZ) == pytest.approx(AMP, rel=0.05)


@pytest.mark.parametrize("bad", [4, -1, "2", None, 1.5])
def test_bad_mode_is_refused(bad) -> None:
    call, hub = Call(), TapHub(clock=None)
    spy, _ = attach(hub, call)
    with pytest.raises(ValueError, match="mode"):
        spy.set_mode(bad)


def test_bad_gain_is_refused() -> None:
    call, hub = Call(), TapHub(clock=None)
    with pytest.raises(ValueError, match="whisper gain"):
        attach(hub, call, whisper_gain_db=30)
    with pytest.raises(ValueError, match="listen gain"):
        attach(hub, call, listen_gain_db="loud")


def test_a_wrong_sized_spy_frame_is_dropped_and_counted() -> None:
    call, hub = Call(), TapHub(clock=None)
    spy, _ = attach(hub, call, mode=2)
    assert spy.produce(b"\x00" * 100) is None
    assert spy.stats["bad_frames"] == 1
    to_a, _ = call.relay.tap.frames(0, None, None)
    assert to_a is None


def test_notify_parties_beeps_at_start_and_every_12_s() -> None:
    call, hub = Call(), TapHub(clock=None)
    spy, _ = attach(hub, call, notify_parties=True)
    to_a, to_b, (to_spy,) = run(call, [spy], 700, a=False, b=False, spy_send=False, skip=0)
    assert level(to_a[:10], 440.0) > 1000 and level(to_b[:10], 440.0) > 1000
    assert all(f is None for f in to_a[20:590])
    assert level(to_a[600:610], 440.0) > 1000
    assert all(f is None for f in to_spy)           # the spy is not beeped


# --- one internal rate ------------------------------------------------------------------------------

def test_a_wideband_spy_is_resampled_not_relabelled() -> None:
    """Better than FreeSWITCH (#1650): a 16 kHz spy on an 8 kHz call hears and is heard at pitch."""
    call, hub = Call(), TapHub(clock=None)
    spy, _ = attach(hub, call, mode=3, rate=16000)
    to_a, to_b, (to_spy,) = run(call, [spy], 60, skip=20)
    assert heard(to_a) == {B_HZ, SPY_HZ} and heard(to_b) == {A_HZ, SPY_HZ}
    assert all(len(f) == 640 for f in to_spy)                        # 20 ms at 16 kHz
    assert level(to_spy, A_HZ, 16000) > 0.8 * AMP and level(to_spy, B_HZ, 16000) > 0.8 * AMP
    assert level(to_spy, 2 * A_HZ, 16000) < 0.01 * AMP      # relabelled audio would be at 2x pitch
    to_a, _, _ = run(call, [spy], 60, b=False, skip=20)       # the whisper alone, for its pitch
    assert level(to_a, SPY_HZ) > 0.8 * AMP and level(to_a, SPY_HZ / 2) < 0.01 * AMP


def test_a_pcma_spy_on_a_pcmu_call_is_clean() -> None:
    """Each leg's codec is its own business: the tap mixes decoded PCM, then each leg encodes."""
    call, hub = Call(), TapHub(clock=None)
    spy, _ = attach(hub, call, mode=3)
    sa, sb, ss = Sine(A_HZ), Sine(B_HZ), Sine(SPY_HZ)
    to_spy, to_a = [], []
    for tick in range(60):
        ear = spy.produce(g711.alaw_decode(g711.alaw_encode(ss.frame())))
        if ear is not None:
            to_spy.append(g711.alaw_decode(g711.alaw_encode(ear)))       # the spy's PCMA leg
        fa = g711.ulaw_decode(g711.ulaw_encode(sa.frame()))
        fb = g711.ulaw_decode(g711.ulaw_encode(sb.frame()))
        a_out, _ = call.relay.tap.frames(tick, fa, fb)
        to_a.append(g711.ulaw_decode(g711.ulaw_encode(a_out)))
    for frames, tones in ((to_spy[5:], (A_HZ, B_HZ)), (to_a[5:], (B_HZ, SPY_HZ))):
        x = np.concatenate([np.frombuffer(f, np.int16) for f in frames]).astype(float)
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / 8000)
        near = np.zeros_like(spectrum, bool)
        for hz in tones:
            near |= abs(freqs - hz) < 30
        snr_db = 10 * np.log10(spectrum[near].sum() / spectrum[~near].sum())
        assert snr_db > 30, snr_db                  # G.711 twice: about 35 dB; garbling is < 10


# --- attach / detach ----------------------------------------------------------------------------------

def test_attach_claims_the_spy_leg_and_detach_restores_everything() -> None:
    call, hub = Call(), TapHub(clock="the clock")
    one, leg1 = attach(hub, call)
    two, leg2 = attach(hub, call, mode=2)
    assert leg1.owners == [one] and leg2.owners == [two] and call.relay.tap is one.call
    one.detach()
    one.detach()                                    # idempotent
    assert leg1.owners == [] and call.relay.tap is two.call and call.relay.cleared == 0
    to_a, _, _ = run(call, [two], 20)
    assert heard(to_a) == {B_HZ, SPY_HZ}
    two.detach()
    assert call.relay.tap is None and call.relay.cleared == 1 and hub.calls == 0


def test_detach_after_the_call_ended_is_quiet() -> None:
    call, hub = Call(), TapHub(clock=None)
    spy, leg = attach(hub, call)
    call.relay.closed = True
    spy.detach()
    assert leg.owners == [] and hub.calls == 0


def test_attach_refusals_say_why() -> None:
    call, hub = Call(), TapHub(clock=None)
    with pytest.raises(TapError, match="not bridged"):
        hub.attach(FakeChannel(FakeLeg()), FakeChannel(FakeLeg()))
    with pytest.raises(TapError, match="no media"):
        hub.attach(FakeChannel(None), FakeChannel(FakeLeg()))
    with pytest.raises(TapError, match="spy channel has no media"):
        hub.attach(call.a, FakeChannel(None))
    with pytest.raises(TapError, match="party of the target call"):
        hub.attach(call.a, call.b)
    call.relay.tap = object()
    with pytest.raises(TapError, match="another tap"):
        attach(hub, call)
    assert hub.ready(call.a) and not hub.ready(FakeChannel(FakeLeg()))


def test_a_rebuilt_relay_gets_the_tap_back() -> None:
    call, hub = Call(), TapHub(clock=None)
    spy, _ = attach(hub, call)
    tap = call.relay.tap
    call.relay.tap = None                           # a re-INVITE rebuilt the pass-through
    for _ in range(tapmod.RECHECK_TICKS):
        spy.produce(None)
    assert call.relay.tap is tap and spy.active


# --- property: the spy's ear is exactly its listen sources, never its own voice --------------------

frames_st = st.none() | st.binary(min_size=FRAME_BYTES, max_size=FRAME_BYTES)


@settings(max_examples=60, deadline=None)
@given(mode=st.sampled_from([0, 1, 2, 3]), hear_target=st.booleans(), hear_peer=st.booleans(),
       target=st.sampled_from(["a", "b"]), fa=frames_st, fb=frames_st, fs=frames_st)
def test_the_mix_is_exact(mode, hear_target, hear_peer, target, fa, fb, fs) -> None:
    call, hub = Call(), TapHub(clock=None)
    spy, _ = attach(hub, call, target=target, mode=mode, hear_target=hear_target, hear_peer=hear_peer)
    spy.produce(fs)
    to_a, to_b = call.relay.tap.frames(0, fa, fb)
    ear = spy.produce(None)

    def pcm(f):
        return np.zeros(FRAME_SAMPLES, np.int64) if f is None else np.frombuffer(f, np.int16).astype(np.int64)

    def sat(x):
        return np.clip(x, -32768, 32767).astype(np.int16).tobytes()

    ft, fp = (fa, fb) if target == "a" else (fb, fa)
    both = not hear_target and not hear_peer
    srcs = [f for f, on in ((ft, hear_target or both), (fp, hear_peer or both)) if on]
    want_ear = sat(sum((pcm(f) for f in srcs), np.zeros(FRAME_SAMPLES, np.int64)))
    if all(f is None for f in srcs):
        assert ear is None
    else:
        assert bytes(ear) == want_ear
    to_t, to_p = (to_a, to_b) if target == "a" else (to_b, to_a)
    whisper_t = fs if mode & 2 else None
    whisper_p = fs if mode & 1 else None
    for got, own, w in ((to_t, fp, whisper_t), (to_p, ft, whisper_p)):
        if own is None and w is None:
            assert got is None
        else:
            assert bytes(got) == sat(pcm(own) + pcm(w))
