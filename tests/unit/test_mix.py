"""cython_mixer.mix: exact saturating mixes against a numpy int64 reference, and the tap matrix."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cython_mixer import FRAME_BYTES, FRAME_SAMPLES, g711
from cython_mixer.mix import MAX_GAIN_DB, MixMatrix, gain_q12, mix

N = FRAME_SAMPLES
INF = math.inf


def q12(db: float | None) -> int:
    """The documented gain format: round(4096 · 10^(dB/20)); muted is 0."""
    return 0 if db is None or db == -INF else round(4096 * 10 ** (db / 20))


def reference(frames: list[np.ndarray | None], gains: list[int], n: int) -> np.ndarray:
    """clamp((Σ x·g + 2048) >> 12) in int64: exact, no overflow possible."""
    acc = np.zeros(n, np.int64)
    for frame, g in zip(frames, gains):
        if frame is not None:
            acc += frame.astype(np.int64) * g
    return np.clip((acc + 2048) >> 12, -32768, 32767).astype(np.int16)


def pcm(data) -> np.ndarray:
    return np.frombuffer(bytes(data), np.int16)


def speech_frame(seed: int, level: float = 12000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(N)
    f0 = rng.uniform(100, 250)
    x = sum(np.sin(2 * np.pi * k * f0 * t / 8000 + rng.uniform(0, 6)) / k for k in range(1, 12))
    return np.clip(x * level, -32768, 32767).astype(np.int16)


gains_db = st.one_of(st.none(), st.just(-INF), st.just(0.0), st.just(MAX_GAIN_DB),
                     st.floats(-90.0, MAX_GAIN_DB, allow_nan=False))
samples16 = arrays(np.int16, N)


# --- gains ---------------------------------------------------------------------------------------

def test_gain_format_fixed_points() -> None:
    assert gain_q12(0.0) == 4096 and gain_q12(0) == 4096
    assert gain_q12(None) == 0 and gain_q12(-INF) == 0
    assert gain_q12(20 * math.log10(2)) == 8192
    assert gain_q12(MAX_GAIN_DB) == 64917
    assert gain_q12(-100.0) == 0          # below about -78 dB a gain rounds to silence


@settings(max_examples=200, deadline=None)
@given(db=st.floats(-120.0, MAX_GAIN_DB, allow_nan=False))
def test_gain_q12_is_the_documented_rounding(db: float) -> None:
    assert gain_q12(db) == q12(db)


@pytest.mark.parametrize("bad", [math.nan, INF, MAX_GAIN_DB + 0.01, "0", b"0", [0.0]])
def test_bad_gain_is_a_value_error(bad) -> None:
    with pytest.raises(ValueError, match="gain"):
        gain_q12(bad)
    with pytest.raises(ValueError, match="gain"):
        mix([np.zeros(N, np.int16)], [bad])
    m = MixMatrix(1, 1)
    with pytest.raises(ValueError, match="gain"):
        m.set_gain(0, 0, bad)


# --- mix() ---------------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(data=st.data(), k=st.integers(1, 6), n=st.integers(0, 200))
def test_mix_is_exact_against_int64_reference(data, k: int, n: int) -> None:
    frames = [data.draw(st.none() | arrays(np.int16, n)) for _ in range(k)]
    if all(f is None for f in frames):
        frames[0] = data.draw(arrays(np.int16, n))
    dbs = data.draw(st.none() | st.lists(gains_db, min_size=k, max_size=k))
    gains = [4096] * k if dbs is None else [q12(d) for d in dbs]
    got = pcm(mix(frames, dbs))
    assert np.array_equal(got, reference(frames, gains, n))


@settings(max_examples=30, deadline=None)
@given(frames=st.lists(samples16, min_size=17, max_size=24),
       db=st.floats(0.0, MAX_GAIN_DB, allow_nan=False))
def test_loud_sums_stay_exact(frames: list[np.ndarray], db: float) -> None:
    # gains adding up to 16x and more need the 64-bit accumulator: still exact, never wraps
    got = pcm(mix(frames, [db] * len(frames)))
    assert np.array_equal(got, reference(frames, [q12(db)] * len(frames), N))


def test_saturates_at_both_rails() -> None:
    top, bottom = np.full(N, 32767, np.int16), np.full(N, -32768, np.int16)
    one = np.ones(N, np.int16)
    assert set(pcm(mix([top, one]))) == {32767}
    assert set(pcm(mix([bottom, -one]))) == {-32768}
    assert set(pcm(mix([top] * 200, [MAX_GAIN_DB] * 200))) == {32767}
    assert set(pcm(mix([bottom] * 200, [MAX_GAIN_DB] * 200))) == {-32768}
    # clamped once, at the end: a sum that goes out of range and comes back is exact
    assert set(pcm(mix([top, top, bottom, bottom]))) == {-2}
    assert set(pcm(mix([top] * 100 + [bottom] * 100, [MAX_GAIN_DB] * 200))) == {
        int((100 * 32767 * 64917 - 100 * 32768 * 64917 + 2048) >> 12)}


def test_zero_db_is_bit_exact_identity() -> None:
    x = speech_frame(1)
    assert mix([x]) == x.tobytes()
    assert mix([x], [0.0]) == x.tobytes()
    assert mix([x, None]) == x.tobytes()
    assert mix([x, np.zeros(N, np.int16)], [0.0, 0.0]) == x.tobytes()
    assert mix([x, speech_frame(2)], [0.0, None]) == x.tobytes()


def test_muted_is_silence() -> None:
    x = speech_frame(3)
    assert mix([x], [None]) == bytes(FRAME_BYTES)
    assert mix([x, x], [-INF, None]) == bytes(FRAME_BYTES)


def test_mix_accepts_buffer_kinds() -> None:
    x, y = speech_frame(4), speech_frame(5)
    want = mix([x, y])
    assert mix((x.tobytes(), bytearray(y.tobytes()))) == want
    assert mix([memoryview(x.tobytes()).cast("h"), memoryview(y.tobytes())]) == want


@pytest.mark.parametrize("frames, gains, match", [
    ([], None, "at least one"),
    ([None, None], None, "None"),
    ([bytes(320), bytes(318)], None, "samples"),
    ([bytes(319)], None, "odd"),
    ([np.zeros(N, np.int32)], None, "itemsize"),
    ([np.zeros(N, np.float32)], None, "itemsize"),
    ([np.zeros(N, np.uint16)], None, "int16"),
    ([np.zeros((2, N), np.int16)], None, "1-D"),
    ([np.zeros(2 * N, np.int16)[::2]], None, "contiguous"),
    ([bytes(320)], [0.0, 0.0], "gains"),
    ([bytes(320), bytes(320)], [0.0], "gains"),
])
def test_mix_bad_input_is_a_value_error(frames, gains, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mix(frames, gains)


# --- MixMatrix -----------------------------------------------------------------------------------

FORMATS = ["linear", "PCMU", "PCMA"]


def as_input(x: np.ndarray, fmt: str):
    return x.tobytes() if fmt == "linear" else g711.encode(fmt, x)


def linear_of(frame, fmt: str) -> np.ndarray | None:
    if frame is None:
        return None
    return pcm(frame) if fmt == "linear" else pcm(g711.decode(fmt, frame))


def expected_output(lin: np.ndarray, fmt: str) -> bytes:
    return lin.tobytes() if fmt == "linear" else g711.encode(fmt, lin)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), k=st.integers(1, 4), m=st.integers(1, 3), n=st.integers(1, 200))
def test_matrix_is_exact_against_int64_reference(data, k: int, m: int, n: int) -> None:
    ins = data.draw(st.lists(st.sampled_from(FORMATS), min_size=k, max_size=k))
    outs = data.draw(st.lists(st.sampled_from(FORMATS), min_size=m, max_size=m))
    mat = MixMatrix(k, m, n, input_codecs=ins, output_codecs=outs)
    dbs = [[data.draw(gains_db) for _ in range(k)] for _ in range(m)]
    for j in range(m):
        for i in range(k):
            mat.set_gain(i, j, dbs[j][i])
    for _tick in range(2):   # the second tick reuses the buffers
        frames = [data.draw(st.none() | arrays(np.int16, n).map(lambda x, f=f: as_input(x, f)))
                  for f in ins]
        got = mat.process(frames)
        assert len(got) == m
        lins = [linear_of(fr, f) for fr, f in zip(frames, ins)]
        for j in range(m):
            want = reference(lins, [q12(d) for d in dbs[j]], n)
            assert bytes(got[j]) == expected_output(want, outs[j]), f"output {j}"


def eavesdrop_tap(mode: int) -> MixMatrix:
    """inputs 0 = target A (PCMU), 1 = peer B (PCMA), 2 = spy (L16);
    outputs 0 = to the spy (L16), 1 = to A (PCMU), 2 = to B (PCMA)."""
    tap = MixMatrix(3, 3, input_codecs=("PCMU", "PCMA", "linear"),
                    output_codecs=("linear", "PCMU", "PCMA"))
    tap.set_gain(0, 0, 0.0)
    tap.set_gain(1, 0, 0.0)          # the spy hears A + B, never itself
    tap.set_gain(1, 1, 0.0)          # A hears B
    tap.set_gain(0, 2, 0.0)          # B hears A
    if mode in (2, 3):
        tap.set_gain(2, 1, 0.0)      # "speak with the uuid": A hears the spy
    if mode in (1, 3):
        tap.set_gain(2, 2, 0.0)      # "speak with the other half": B hears the spy
    return tap


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_eavesdrop_matrix(mode: int) -> None:
    a_lin, b_lin, spy = speech_frame(10, 20000), speech_frame(11, 20000), speech_frame(12, 20000)
    codes_a, codes_b = g711.ulaw_encode(a_lin), g711.alaw_encode(b_lin)
    a, b = pcm(g711.ulaw_decode(codes_a)), pcm(g711.alaw_decode(codes_b))
    to_spy, to_a, to_b = eavesdrop_tap(mode).process([codes_a, codes_b, spy.tobytes()])
    unity = [4096, 4096]
    assert bytes(to_spy) == reference([a, b], unity, N).tobytes()
    hear_a = [b, spy] if mode in (2, 3) else [b]
    hear_b = [a, spy] if mode in (1, 3) else [a]
    assert bytes(to_a) == g711.ulaw_encode(reference(hear_a, unity, N))
    assert bytes(to_b) == g711.alaw_encode(reference(hear_b, unity, N))
    assert np.any(np.abs(reference([a, b], unity, N)) == 32767), "the example should clip"


def test_whisper_reaches_a_leg_that_sent_nothing() -> None:
    spy = speech_frame(13)
    to_spy, to_a, to_b = eavesdrop_tap(3).process([None, None, spy])
    assert bytes(to_spy) == bytes(FRAME_BYTES)
    assert bytes(to_a) == g711.ulaw_encode(spy)
    assert bytes(to_b) == g711.alaw_encode(spy)


def test_silent_tick_gives_g711_silence() -> None:
    to_spy, to_a, to_b = eavesdrop_tap(0).process([None, None, None])
    assert bytes(to_spy) == bytes(FRAME_BYTES)
    assert bytes(to_a) == bytes([g711.ULAW_SILENCE]) * N
    assert bytes(to_b) == bytes([g711.ALAW_SILENCE]) * N


def test_matrix_identity_and_default_mute() -> None:
    x = speech_frame(14)
    mat = MixMatrix(2, 2)
    assert [bytes(v) for v in mat.process([x, x])] == [bytes(FRAME_BYTES)] * 2   # starts muted
    mat.set_gain(0, 1, 0.0)
    silent, out = mat.process([x, None])
    assert bytes(out) == x.tobytes() and bytes(silent) == bytes(FRAME_BYTES)
    mat.mute(0, 1)
    assert bytes(mat.process([x, x])[1]) == bytes(FRAME_BYTES)


def test_outputs_are_owned_read_only_views_reused_each_tick() -> None:
    mat = MixMatrix(1, 2, output_codecs=("linear", "PCMU"))
    mat.set_gain(0, 0, 0.0)
    mat.set_gain(0, 1, 0.0)
    x, y = speech_frame(15), speech_frame(16)
    first = mat.process([x])
    assert [len(v) for v in first] == [FRAME_BYTES, N]
    assert all(v.readonly for v in first)
    with pytest.raises(TypeError):
        first[0][0] = 1
    second = mat.process([y])
    assert all(a.obj is b.obj for a, b in zip(first, second))
    assert bytes(first[0]) == y.tobytes()        # overwritten: valid until the next call


def test_gain_db_reports_what_was_set() -> None:
    mat = MixMatrix(2, 1)
    assert mat.gain_db(0, 0) == -INF
    mat.set_gain(1, 0, -6.0)
    assert mat.gain_db(1, 0) == -6.0
    mat.set_gain(1, 0, np.float64(3.5))
    assert mat.gain_db(1, 0) == 3.5
    mat.mute(1, 0)
    assert mat.gain_db(1, 0) == -INF


def test_codecs_can_change() -> None:
    x = speech_frame(17)
    mat = MixMatrix(1, 1)
    mat.set_gain(0, 0, 0.0)
    assert mat.input_codecs == ("linear",) and mat.output_codecs == ("linear",)
    mat.set_input_codec(0, "PCMA")
    mat.set_output_codec(0, "PCMU")
    assert mat.input_codecs == ("PCMA",) and mat.output_codecs == ("PCMU",)
    (out,) = mat.process([g711.alaw_encode(x)])
    assert bytes(out) == g711.ulaw_encode(g711.alaw_decode(g711.alaw_encode(x)))
    assert (mat.inputs, mat.outputs, mat.samples) == (1, 1, N)


def test_input_buffers_are_released() -> None:
    mat = MixMatrix(2, 1)
    mat.set_gain(0, 0, 0.0)
    frame = bytearray(FRAME_BYTES)
    mat.process([frame, None])
    frame.extend(b"\x00\x00")            # a still-exported buffer could not be resized
    with pytest.raises(ValueError):
        mat.process([bytearray(FRAME_BYTES), frame])
    frame.extend(b"\x00\x00")
    (out,) = mat.process([speech_frame(18), None])   # and the matrix still works
    assert bytes(out) == speech_frame(18).tobytes()


@pytest.mark.parametrize("args, kwargs, match", [
    ((0, 1), {}, "at least one"),
    ((1, 0), {}, "at least one"),
    ((1, 1, 0), {}, "samples"),
    ((1, 1, 65537), {}, "samples"),
    ((2, 1), {"input_codecs": ("linear",)}, "input formats"),
    ((1, 2), {"output_codecs": ("linear",)}, "output formats"),
    ((1, 1), {"input_codecs": ("G722",)}, "format"),
    ((1, 1), {"output_codecs": ("pcm",)}, "format"),
])
def test_matrix_bad_construction_is_a_value_error(args, kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MixMatrix(*args, **kwargs)


@pytest.mark.parametrize("i, j", [(-1, 0), (2, 0), (0, -1), (0, 3), (1.0, 0), ("0", 0)])
def test_matrix_bad_index_is_a_value_error(i, j) -> None:
    mat = MixMatrix(2, 3)
    with pytest.raises(ValueError, match="index"):
        mat.set_gain(i, j, 0.0)
    with pytest.raises(ValueError, match="index"):
        mat.gain_db(i, j)
    with pytest.raises(ValueError, match="index"):
        mat.mute(i, j)


@pytest.mark.parametrize("frames, match", [
    ([bytes(FRAME_BYTES)], "2 inputs"),
    ([bytes(FRAME_BYTES)] * 3, "2 inputs"),
    ([bytes(FRAME_BYTES), bytes(FRAME_BYTES - 2)], "input 1"),    # short L16 frame
    ([bytes(FRAME_BYTES - 1), None], "odd"),
    ([bytes(N), None], "input 0"),                                # a G.711 frame on an L16 input
    ([np.zeros(N, np.int32), None], "itemsize"),
    ([np.zeros(N, np.float64), None], "itemsize"),
    ([None, np.zeros(N, np.int16)], "1-byte"),                    # int16 on a PCMU input
    ([None, bytes(N + 1)], "input 1"),
])
def test_process_bad_input_is_a_value_error(frames, match: str) -> None:
    mat = MixMatrix(2, 1, input_codecs=("linear", "PCMU"))
    with pytest.raises(ValueError, match=match):
        mat.process(frames)


def test_native_int16_arrays_work_and_foreign_order_does_not() -> None:
    x = speech_frame(19)
    mat = MixMatrix(1, 1)
    mat.set_gain(0, 0, 0.0)
    assert bytes(mat.process([x])[0]) == x.tobytes()
    foreign = x.astype(">i2" if sys.byteorder == "little" else "<i2")
    with pytest.raises(ValueError, match="int16"):
        mat.process([foreign])
