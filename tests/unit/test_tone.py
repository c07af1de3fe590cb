"""cython_mixer.tone: tone_stream:// parsing, frame-by-frame generation, DTMF generation.

Spectral checks use numpy FFTs; levels are per frequency in dBm0 (full-scale sine = +3.14 dBm0).
"""
from __future__ import annotations

import array

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cython_mixer.tone import (DTMF_FREQS, ToneGenerator, ToneProgram, ToneSegment, dtmf_generate,
                               dtmf_tone, parse_tone_stream)

RATE = 8000


def pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.int16).astype(np.float64)


def peaks(x: np.ndarray, rate: int = RATE, count: int = 2, pad: int = 16) -> list[tuple[float, float]]:
    """The ``count`` strongest sinusoids as (Hz, dBm0): Hann window, zero-padded FFT, local maxima."""
    w = np.hanning(len(x))
    spec = np.abs(np.fft.rfft(x * w, n=len(x) * pad))
    freqs = np.fft.rfftfreq(len(x) * pad, 1 / rate)
    is_peak = (spec[1:-1] > spec[:-2]) & (spec[1:-1] >= spec[2:])
    idx = np.nonzero(is_peak)[0] + 1
    idx = idx[np.argsort(spec[idx])[::-1][:count]]
    out = []
    for i in sorted(idx):
        amplitude = 2 * spec[i] / w.sum()
        out.append((float(freqs[i]), 20 * np.log10(amplitude / 32767) + 3.14))
    return out


def rms_dbm0(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(x ** 2)) / (32767 / np.sqrt(2))) + 3.14


# --- parsing ---------------------------------------------------------------------------------------

def test_parses_the_freeswitch_eavesdrop_indicate_examples():
    prog = parse_tone_stream("tone_stream://%(500, 0, 320)")
    assert prog == ToneProgram((ToneSegment(500, 0, (320.0,), None),), 1)
    assert parse_tone_stream("%(250, 0, 920)").segments[0].freqs == (920.0,)


def test_parses_segments_loops_and_volume():
    prog = parse_tone_stream("L=3;v=-7;%(400,200,400,450);%(400,2000,400,450)")
    assert prog.loops == 3
    assert prog.segments == (ToneSegment(400, 200, (400.0, 450.0), -7.0),
                             ToneSegment(400, 2000, (400.0, 450.0), -7.0))
    assert prog.cycle_ms == 3000
    assert parse_tone_stream("%(274,0,913.8);%(274,0,1370.6);%(380,0,1776.7)").segments[2].freqs == (1776.7,)
    assert parse_tone_stream("%(100,15000,800);loops=-1").loops == -1
    assert parse_tone_stream("L=2;%(100,100,350,440);loops=3").loops == 6


def test_volume_applies_to_following_tokens_only():
    prog = parse_tone_stream("%(10,0,400);v=-20;%(10,0,500)")
    assert [s.level_dbm0 for s in prog.segments] == [None, -20.0]


def test_silence_segments():
    prog = parse_tone_stream("%(0,500,0);%(300,0,0);%(100,50,0,0)")
    assert prog.segments == (ToneSegment(500, 0, (), None), ToneSegment(300, 0, (), None),
                             ToneSegment(150, 0, (), None))
    # zero frequencies among real ones are dropped, as FreeSWITCH does
    assert parse_tone_stream("%(1000,4000,450,0)").segments[0].freqs == (450.0,)


def test_dtmf_digits_in_a_spec():
    prog = parse_tone_stream("12;7(1000,500);d=80;w=40;#")
    assert [s.freqs for s in prog.segments] == [DTMF_FREQS["1"], DTMF_FREQS["2"], DTMF_FREQS["7"], DTMF_FREQS["#"]]
    assert (prog.segments[0].on_ms, prog.segments[0].off_ms) == (250.0, 62.5)   # FreeSWITCH defaults
    assert (prog.segments[2].on_ms, prog.segments[2].off_ms) == (1000.0, 500.0)
    assert (prog.segments[3].on_ms, prog.segments[3].off_ms) == (80.0, 40.0)


@pytest.mark.parametrize("spec, token, position", [
    ("%(500,0)", "%(500,0)", 0),
    ("tone_stream://%(500,0,320);%(x,0,320)", "%(x,0,320)", 27),
    ("%(500,0,320", "%(500,0,320", 0),
    ("%(100,0,400);q", "q", 13),
    ("%(100,0,400); %(-1,0,400)", "%(-1,0,400)", 14),
    ("%(100,0,-400)", "%(100,0,-400)", 0),
    ("L=0;%(1,1,400)", "L=0", 0),
    ("L=2;L=3;%(1,1,400)", "L=3", 4),
    ("v=3;%(1,1,400)", "v=3", 0),
    ("v=loud;%(1,1,400)", "v=loud", 0),
    ("r=16000;%(1,1,400)", "r=16000", 0),
    ("loops=2;%(1,1,400)", "%(1,1,400)", 8),
    ("%(1,1,400);loops=0", "loops=0", 11),
    ("7(100)", "7(100)", 0),
    ("%(1,1,nan)", "%(1,1,nan)", 0),
    ("%(1e308,0,400)", "%(1e308,0,400)", 0),
])
def test_bad_specs_name_the_token_and_position(spec, token, position):
    with pytest.raises(ValueError) as err:
        parse_tone_stream(spec)
    assert f"bad token {token!r} at position {position}" in str(err.value)


@pytest.mark.parametrize("spec", ["", "tone_stream://", ";;", "L=2", "v=-10"])
def test_specs_without_tones_are_rejected(spec):
    with pytest.raises(ValueError, match="no tones"):
        parse_tone_stream(spec)


def test_non_string_spec_is_rejected():
    with pytest.raises(ValueError):
        parse_tone_stream(None)  # type: ignore[arg-type]


segment = st.tuples(st.integers(0, 3000), st.integers(0, 3000),
                    st.lists(st.integers(1, 3999), min_size=1, max_size=4))


@settings(max_examples=200, deadline=None)
@given(st.lists(segment, min_size=1, max_size=6), st.integers(1, 5), st.sampled_from(["", "tone_stream://"]))
def test_property_specs_round_trip(segments, repeat, prefix):
    spec = prefix + f"L={repeat};" + ";".join(f"%({on},{off},{','.join(map(str, fs))})" for on, off, fs in segments)
    prog = parse_tone_stream(spec)
    assert prog.loops == repeat
    for seg, (on, off, fs) in zip(prog.segments, segments):
        if on:
            assert (seg.on_ms, seg.off_ms, seg.freqs) == (on, off, tuple(map(float, fs)))
        else:
            assert (seg.on_ms, seg.off_ms, seg.freqs) == (off, 0, ())


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="%(),;=0123456789.-LvdwABCD*#xl ", max_size=30))
def test_property_arbitrary_text_parses_or_raises_value_error(text):
    try:
        prog = parse_tone_stream(text)
    except ValueError:
        return
    assert prog.segments and all(s.on_ms >= 0 and s.off_ms >= 0 for s in prog.segments)


# --- generation --------------------------------------------------------------------------------------

@pytest.mark.parametrize("freq", [320.0, 620.0, 913.8, 1370.6, 1776.7, 3400.0])
def test_single_tone_frequency_and_level(freq):
    gen = ToneGenerator(f"%(1000,0,{freq})", RATE, -10.0)
    x = pcm(gen.read(RATE))
    (f, level), = peaks(x, count=1)
    assert abs(f - freq) < 0.5
    assert abs(level - -10.0) < 0.5
    assert abs(rms_dbm0(x) - -10.0) < 0.05


def test_tone_matches_an_ideal_sine_across_frames():
    """Phase runs on across 20 ms frames: frame by frame equals one ideal sine to 1 LSB."""
    gen = ToneGenerator("%(10000,0,1004.5)", RATE, -3.0)
    frame = bytearray(320)
    got = []
    while gen.read_into(frame):
        got.append(bytes(frame))
    x = pcm(b"".join(got))
    n = np.arange(len(x))
    ideal = 32767 * 10 ** ((-3.0 - 3.14) / 20) * np.sin(2 * np.pi * 1004.5 * n / RATE)
    assert len(x) == 80000
    assert np.max(np.abs(x - ideal)) <= 1.0


def test_dual_tone_levels_are_per_frequency():
    x = pcm(ToneGenerator("v=-13;%(1000,0,350,440)").read(RATE))
    (f1, l1), (f2, l2) = peaks(x)
    assert abs(f1 - 350) < 2 and abs(f2 - 440) < 2
    assert abs(l1 - -13) < 0.5 and abs(l2 - -13) < 0.5


def test_generator_level_is_the_default_for_specs_without_v():
    x = pcm(ToneGenerator("%(500,0,1000)", level_dbm0=-24.0).read(4000))
    assert abs(rms_dbm0(x) - -24.0) < 0.05


def test_many_loud_tones_are_scaled_down_together_not_clipped():
    x = pcm(ToneGenerator("v=0;%(500,0,400,500,600,700)").read(4000))
    assert np.max(np.abs(x)) <= 32767
    assert np.count_nonzero(np.abs(x) >= 32767) < 4        # no clipped runs
    levels = [lvl for _, lvl in peaks(x, count=4)]
    assert max(levels) - min(levels) < 0.5                  # still equal to each other


def test_durations_loops_and_silence_are_exact():
    gen = ToneGenerator("L=3;%(100,50,440);%(0,30,0)", RATE)
    assert gen.total_samples == 3 * (800 + 400 + 240)
    x = pcm(gen.read(100000))
    assert len(x) == gen.total_samples and gen.done
    cycle = x.reshape(3, 1440)
    for c in cycle:
        assert np.all(c[800:] == 0)                        # off time and the rest are silent
        on = np.abs(c[:800])
        assert np.count_nonzero(on == 0) < 20              # zero crossings only
        assert on.max() > 1000
    assert np.array_equal(cycle[0], cycle[2])              # each loop restarts the same way
    assert gen.read(160) == b"" and gen.read_into(bytearray(320)) == 0


def test_read_into_zeroes_the_rest_of_the_last_frame():
    gen = ToneGenerator("%(15,0,1000)")                    # 120 samples
    frame = bytearray(b"\x55" * 320)
    assert gen.read_into(frame) == 120
    assert pcm(bytes(frame))[:120].any() and not any(frame[240:])
    assert gen.done


def test_endless_program():
    gen = ToneGenerator("%(20,20,1000);loops=-1")
    assert gen.total_samples is None
    frame = bytearray(320)
    frames = [bytes(frame) for _ in range(50) if gen.read_into(frame) == 160]
    assert len(frames) == 50 and not gen.done
    assert frames[0] == frames[2] and not any(frames[1])   # 160 on, 160 off


def test_rewind_restarts():
    gen = ToneGenerator("%(50,0,700)")
    first = gen.read(400)
    assert gen.done
    gen.rewind()
    assert not gen.done and gen.read(400) == first


@pytest.mark.parametrize("rate", [16000, 48000])
def test_other_rates(rate):
    gen = ToneGenerator("%(1000,0,1000,5000)", rate, -10.0)
    x = pcm(gen.read(rate))
    assert len(x) == rate
    (f1, l1), (f2, l2) = peaks(x, rate)
    assert abs(f1 - 1000) < 2 and abs(f2 - 5000) < 2 and abs(l1 + 10) < 0.5


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=30))
def test_property_any_frame_sizes_give_the_same_samples(sizes):
    spec = "%(60,20,697,1209);%(0,10,0);%(40,0,941.5)"
    whole = ToneGenerator(spec).read(10**6)
    gen = ToneGenerator(spec)
    parts = []
    for n in sizes * 20:
        buf = bytearray(2 * n)
        wrote = gen.read_into(buf)
        parts.append(bytes(buf[:2 * wrote]))
        if gen.done:
            break
    got = b"".join(parts)
    assert got == whole[:len(got)]


def test_read_into_accepts_int16_arrays_and_unaligned_views():
    ref = ToneGenerator("%(100,0,1000)").read(160)
    arr = np.zeros(160, np.int16)
    assert ToneGenerator("%(100,0,1000)").read_into(arr) == 160 and arr.tobytes() == ref
    a = array.array("h", bytes(320))
    assert ToneGenerator("%(100,0,1000)").read_into(a) == 160 and a.tobytes() == ref
    raw = bytearray(321)
    assert ToneGenerator("%(100,0,1000)").read_into(memoryview(raw)[1:]) == 160
    assert bytes(raw[1:]) == ref


@pytest.mark.parametrize("buf", [bytes(320), bytearray(321), np.zeros(160, np.float32),
                                 np.zeros(160, np.int32), np.zeros((2, 80), np.int16),
                                 np.zeros(320, np.int16)[::2], 5, "frame"])
def test_read_into_rejects_unusable_buffers(buf):
    with pytest.raises(ValueError):
        ToneGenerator("%(100,0,1000)").read_into(buf)


@pytest.mark.parametrize("kwargs", [dict(rate=0), dict(rate=7999), dict(rate=8000.5), dict(rate=True),
                                    dict(level_dbm0=4.0), dict(level_dbm0=float("nan"))])
def test_bad_generator_arguments(kwargs):
    with pytest.raises(ValueError):
        ToneGenerator("%(100,0,1000)", **kwargs)


def test_frequency_above_nyquist_is_rejected():
    with pytest.raises(ValueError, match="outside"):
        ToneGenerator("%(100,0,4000)", 8000)
    ToneGenerator("%(100,0,4000)", 16000)


def test_bad_program_objects():
    with pytest.raises(ValueError):
        ToneGenerator(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ToneGenerator(ToneProgram((), 1))
    with pytest.raises(ValueError):
        ToneGenerator(ToneProgram((ToneSegment(10, 0, (400.0,)),), 0))


def test_read_rejects_negative_counts():
    with pytest.raises(ValueError):
        ToneGenerator("%(100,0,1000)").read(-1)


# --- DTMF ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("digit", list(DTMF_FREQS))
def test_dtmf_tone_frequencies_and_levels(digit):
    x = pcm(dtmf_tone(digit, 500, level_dbm0=-10.0))
    assert len(x) == 4000
    (f1, l1), (f2, l2) = peaks(x)
    low, high = DTMF_FREQS[digit]
    assert abs(f1 - low) < 2 and abs(f2 - high) < 2
    assert abs(l1 + 10) < 0.5 and abs(l2 + 10) < 0.5


def test_dtmf_tone_offsets_twist_and_single_group():
    x = pcm(dtmf_tone("5", 500, level_dbm0=-20.0, low_hz=770 * 1.035, high_hz=1336 * 0.985,
                      low_db=8.0, high_db=-1.0))
    (f1, l1), (f2, l2) = peaks(x)
    assert abs(f1 - 770 * 1.035) < 2 and abs(f2 - 1336 * 0.985) < 2
    assert abs(l1 - -12) < 0.5 and abs(l2 - -21) < 0.5
    single = pcm(dtmf_tone("5", 500, high_hz=0))
    (f, _), = peaks(single, count=1)
    assert abs(f - 770) < 2
    assert abs(rms_dbm0(single) + 10) < 0.05


def test_dtmf_generate_timing_and_twist():
    data = dtmf_generate("1a#", on_ms=70, off_ms=30, level_dbm0=-12.0, twist_db=3.0)
    x = pcm(data)
    assert len(x) == 3 * 800
    for k, digit in enumerate("1A#"):
        on, off = x[k * 800:k * 800 + 560], x[k * 800 + 560:(k + 1) * 800]
        assert not off.any() and on.any()
        (f1, l1), (f2, l2) = peaks(on)
        assert abs(f1 - DTMF_FREQS[digit][0]) < 2 and abs(f2 - DTMF_FREQS[digit][1]) < 2
        assert abs(l1 + 12) < 0.5 and abs(l2 + 9) < 0.5          # high group 3 dB louder


def test_dtmf_durations_round_to_whole_samples():
    assert len(dtmf_tone("0", 22.875)) == 2 * 183
    assert len(dtmf_tone("0", 40, rate=16000)) == 2 * 640
    assert dtmf_generate("") == b""


@pytest.mark.parametrize("call", [
    lambda: dtmf_tone("E", 100), lambda: dtmf_tone("12", 100), lambda: dtmf_tone("1", -5),
    lambda: dtmf_tone("1", 100, rate=100), lambda: dtmf_tone("1", 100, level_dbm0=5.0),
    lambda: dtmf_tone("1", 100, high_hz=4100), lambda: dtmf_generate("12x3"),
    lambda: dtmf_generate("1", off_ms=-1),
])
def test_dtmf_bad_arguments(call):
    with pytest.raises(ValueError):
        call()


def test_an_uninitialised_generator_raises_instead_of_crashing():
    gen = ToneGenerator.__new__(ToneGenerator)
    with pytest.raises(ValueError):
        gen.read(160)
    with pytest.raises(ValueError):
        gen.read_into(bytearray(320))
    assert not gen.done and gen.total_samples is None
