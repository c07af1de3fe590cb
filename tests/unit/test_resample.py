"""cython_mixer.resample: libsoxr streaming resampler (issue 2, part 3e)."""
from __future__ import annotations

import array
import threading

import numpy as np
import pytest

from cython_mixer import FRAME_SAMPLES, INTERNAL_RATE
from cython_mixer.resample import QUALITIES, SUPPORTED_RATES, Resampler

PAIRS = [(8000, 48000), (48000, 8000), (8000, 16000), (16000, 8000), (16000, 48000),
         (8000, 44100), (44100, 8000)]


def tone(rate: int, freq: float, seconds: float = 2.0, amp: float = 10000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def speech_like(rate: int, seconds: float = 1.0, seed: int = 7) -> np.ndarray:
    """Two tones plus noise: broadband enough that any seam or glitch shows up."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    x = 3000 * np.sin(2 * np.pi * 440 * t) + 2000 * np.sin(2 * np.pi * 1700 * t + 1)
    x += 800 * rng.standard_normal(len(t))
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def pcm(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype=np.int16)


def one_shot(x: np.ndarray, in_rate: int, out_rate: int, quality: str = "vhq") -> np.ndarray:
    r = Resampler(in_rate, out_rate, quality)
    return pcm(r.process(x) + r.flush())


def frames(x: np.ndarray, n: int) -> list[np.ndarray]:
    return [x[k:k + n] for k in range(0, len(x), n)]


def peak_hz_and_level_db(y: np.ndarray, rate: int, ref_amp: float) -> tuple[float, float]:
    """Frequency of the spectral peak (parabolic interpolation) and RMS level relative to a sine of ref_amp."""
    y = y[len(y) // 4: 3 * len(y) // 4].astype(np.float64)   # skip the start/end transients
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    k = int(np.argmax(spec[1:-1])) + 1
    a, b, c = np.log(spec[k - 1:k + 2] + 1e-12)
    den = a - 2 * b + c
    frac = 0.5 * (a - c) / den if den else 0.0
    freq = (k + frac) * rate / len(y)
    rms = np.sqrt(np.mean(y ** 2))
    return freq, 20 * np.log10(max(rms, 1e-9) / (ref_amp / np.sqrt(2)))


# --- signal quality -----------------------------------------------------------------------------

@pytest.mark.parametrize("quality", ["vhq", "phone"])
@pytest.mark.parametrize("mid_rate", [48000, 16000])
def test_1khz_round_trip_keeps_frequency_and_amplitude(mid_rate: int, quality: str) -> None:
    x = tone(8000, 1000.0)
    up = one_shot(x, 8000, mid_rate, quality)
    assert len(up) == len(x) * mid_rate // 8000
    freq, level = peak_hz_and_level_db(up, mid_rate, 10000)
    assert abs(freq - 1000.0) <= 1.0 and abs(level) <= 0.5
    back = one_shot(up, mid_rate, 8000, quality)
    assert len(back) == len(x)
    freq, level = peak_hz_and_level_db(back, 8000, 10000)
    assert abs(freq - 1000.0) <= 1.0, freq
    assert abs(level) <= 0.5, level


@pytest.mark.parametrize("mid_rate", [48000, 16000])
def test_1khz_round_trip_through_fixed_frames(mid_rate: int) -> None:
    """The media-clock path: 20 ms frames in, 20 ms frames out, both ways."""
    x = tone(8000, 1000.0)
    up = Resampler.for_frames(8000, mid_rate)
    down = Resampler.for_frames(mid_rate, 8000)
    y = np.concatenate([pcm(down.process_frame(up.process_frame(f))) for f in frames(x, FRAME_SAMPLES)])
    lag = up.latency_samples * 8000 // mid_rate + down.latency_samples
    freq, level = peak_hz_and_level_db(y[lag:], 8000, 10000)
    assert abs(freq - 1000.0) <= 1.0 and abs(level) <= 0.5


@pytest.mark.parametrize("quality", QUALITIES)
def test_aliasing_rejected_6khz_at_16k_to_8k(quality: str) -> None:
    x = tone(16000, 6000.0)   # above the 4 kHz Nyquist of the output: would fold to 2 kHz
    y = one_shot(x, 16000, 8000, quality)
    _, level = peak_hz_and_level_db(y, 8000, 10000)
    assert level < -50.0, level


def test_passband_keeps_telephone_band_for_phone_quality() -> None:
    for freq in (300.0, 3400.0):
        y = one_shot(tone(48000, freq), 48000, 8000, "phone")
        _, level = peak_hz_and_level_db(y, 8000, 10000)
        assert abs(level) <= 0.5, (freq, level)


def test_not_linear_interpolation_images_removed_on_upsampling() -> None:
    # Linear interpolation leaves an image of 3 kHz at 8 - 3 = 5 kHz only ~20 dB down.
    y = one_shot(tone(8000, 3000.0), 8000, 48000).astype(np.float64)[12000:36000]
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    hz = np.fft.rfftfreq(len(y), 1 / 48000)
    image = spec[(hz > 4500) & (hz < 5500)].max()
    assert 20 * np.log10(image / spec.max()) < -80


# --- streaming ----------------------------------------------------------------------------------

@pytest.mark.parametrize("in_rate,out_rate", PAIRS)
def test_streaming_20ms_frames_equals_one_shot(in_rate: int, out_rate: int) -> None:
    x = speech_like(in_rate)
    r = Resampler(in_rate, out_rate)
    streamed = pcm(b"".join(r.process(f) for f in frames(x, in_rate // 50)) + r.flush())
    ref = one_shot(x, in_rate, out_rate)
    assert len(streamed) == len(ref) == round(len(x) * out_rate / in_rate)
    # soxr is delay-compensated, so no alignment shift is needed; seams would show as differences
    assert np.abs(streamed.astype(np.int32) - ref).max() <= 1


@pytest.mark.parametrize("in_rate,out_rate", [(8000, 48000), (48000, 16000), (44100, 8000)])
def test_streaming_any_chunk_sizes_equals_one_shot(in_rate: int, out_rate: int) -> None:
    x = speech_like(in_rate, seed=3)
    cuts = np.sort(np.random.default_rng(5).choice(np.arange(1, len(x)), 60, replace=False))
    r = Resampler(in_rate, out_rate)
    streamed = pcm(b"".join(r.process(c) for c in np.split(x, cuts)) + r.flush())
    ref = one_shot(x, in_rate, out_rate)
    assert len(streamed) == len(ref)
    assert np.abs(streamed.astype(np.int32) - ref).max() <= 1


def test_output_is_time_aligned_with_input() -> None:
    x = np.zeros(1600, np.int16)
    x[800] = 20000
    y = one_shot(x, 8000, 48000)
    assert int(np.argmax(np.abs(y))) == 800 * 6


def test_delay_samples_is_what_soxr_still_holds() -> None:
    r = Resampler(8000, 48000)
    produced = 0
    for n in range(1, 30):
        produced += len(r.process(np.zeros(160, np.int16))) // 2
        assert r.delay_samples == pytest.approx(n * 960 - produced)
    r.flush()
    assert r.delay_samples == 0.0


def test_identity_is_exact_passthrough() -> None:
    x = speech_like(8000)
    r = Resampler(8000, 8000)
    assert pcm(b"".join(r.process(f) for f in frames(x, 160))).tobytes() == x.tobytes()
    assert r.flush() == b"" and r.delay_samples == 0.0
    f = Resampler.for_frames(8000, 8000)
    assert f.latency_samples == 0
    assert f.process_frame(x[:160]) == x[:160].tobytes()


def test_buffer_types_give_the_same_output() -> None:
    x = speech_like(8000, 0.2)
    expected = one_shot(x, 8000, 16000).tobytes()
    for buf in (x.tobytes(), bytearray(x.tobytes()), memoryview(x.tobytes()), array.array("h", x.tobytes()), x):
        r = Resampler(8000, 16000)
        assert r.process(buf) + r.flush() == expected


def test_reset_and_flush_start_a_fresh_stream() -> None:
    x = speech_like(16000, 0.3)
    fresh = one_shot(x, 16000, 8000)
    r = Resampler(16000, 8000)
    r.process(speech_like(16000, 0.1, seed=9))
    r.reset()
    assert np.array_equal(pcm(r.process(x) + r.flush()), fresh)
    assert np.array_equal(pcm(r.process(x) + r.flush()), fresh)   # flush left it fresh too


def test_threads_with_their_own_resamplers_agree_with_sequential() -> None:
    x = speech_like(48000, 0.5)
    ref = one_shot(x, 48000, 8000)
    results: list[np.ndarray] = []

    def run() -> None:
        r = Resampler(48000, 8000)
        results.append(pcm(b"".join(r.process(f) for f in frames(x, 960)) + r.flush()))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all(np.array_equal(res, ref) for res in results)


# --- fixed-output mode --------------------------------------------------------------------------

@pytest.mark.parametrize("in_rate,out_rate", PAIRS + [(48000, 44100), (32000, 8000)])
def test_fixed_mode_gives_exact_frames_for_1000_ticks(in_rate: int, out_rate: int) -> None:
    r = Resampler.for_frames(in_rate, out_rate)
    assert (r.in_frame_samples, r.out_frame_samples) == (in_rate // 50, out_rate // 50)
    x = speech_like(in_rate, 20.0)
    out = []
    dst = np.empty(r.out_frame_samples, np.int16)   # reused every tick, as the clock does
    for f in frames(x, r.in_frame_samples):
        assert len(f) == r.in_frame_samples
        r.process_into(f, dst)
        out.append(dst.copy())
    assert len(out) == 1000 and r.underruns == 0
    y = np.concatenate(out)
    lag = r.latency_samples
    assert 0 < lag and r.latency_ms == pytest.approx(lag * 1000 / out_rate)
    assert r.delay_samples == lag
    assert not y[:lag].any()   # the stated latency is leading silence
    ref = one_shot(x, in_rate, out_rate)
    # ... followed by exactly the one-shot stream: no padding, no skipped or repeated samples
    assert np.abs(y[lag:].astype(np.int32) - ref[:len(y) - lag]).max() <= 1


def test_fixed_mode_process_frame_returns_exactly_one_frame_each_call() -> None:
    r = Resampler.for_frames(48000, INTERNAL_RATE)
    src = speech_like(48000, 20.0)
    sizes = {len(r.process_frame(f)) for f in frames(src, 960)}
    assert sizes == {FRAME_SAMPLES * 2} and r.underruns == 0


def test_fixed_mode_flush_returns_the_delayed_tail_and_reprimes() -> None:
    r = Resampler.for_frames(8000, 16000)
    x = speech_like(8000, 0.4)
    y = pcm(b"".join(r.process_frame(f) for f in frames(x, 160)) + r.flush())
    assert len(y) == r.latency_samples + 2 * len(x)
    again = pcm(b"".join(r.process_frame(f) for f in frames(x, 160)) + r.flush())
    assert np.array_equal(y, again)


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_fixed_mode_frame_sizes(frame_ms: int) -> None:
    r = Resampler.for_frames(16000, 8000, frame_ms=frame_ms)
    assert (r.in_frame_samples, r.out_frame_samples) == (16 * frame_ms, 8 * frame_ms)
    assert len(r.process_frame(np.zeros(16 * frame_ms, np.int16))) == 16 * frame_ms


def test_low_latency_quality_is_shorter() -> None:
    assert Resampler.for_frames(48000, 8000, quality="phone").latency_ms < \
        Resampler.for_frames(48000, 8000, quality="vhq").latency_ms / 2


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [7000, 0, -8000, 8000.5, "8000", None, 96000])
def test_bad_rates_rejected(rate: object) -> None:
    with pytest.raises(ValueError):
        Resampler(rate, 8000)   # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Resampler(8000, rate)   # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Resampler.for_frames(rate, 8000)   # type: ignore[arg-type]


def test_supported_rates_all_construct() -> None:
    for a in SUPPORTED_RATES:
        for b in SUPPORTED_RATES:
            Resampler(a, b)


def test_bad_quality_and_frame_ms_rejected() -> None:
    with pytest.raises(ValueError, match="quality"):
        Resampler(8000, 16000, "best")
    with pytest.raises(ValueError, match="whole number"):
        Resampler.for_frames(44100, 8000, frame_ms=5)   # 220.5 samples
    for bad in (0, -20, 2.5, 121):
        with pytest.raises(ValueError, match="frame_ms"):
            Resampler.for_frames(8000, 16000, frame_ms=bad)   # type: ignore[arg-type]


def test_bad_frames_rejected() -> None:
    r = Resampler(8000, 16000)
    with pytest.raises(ValueError, match="odd byte count"):
        r.process(b"\x00" * 321)
    with pytest.raises(ValueError, match="int16"):
        r.process(np.zeros(160, np.float32))
    with pytest.raises(ValueError, match="int16"):
        r.process(np.zeros(160, np.int32))
    with pytest.raises(ValueError, match="int16"):
        r.process(np.zeros((2, 80), np.int16))
    with pytest.raises(ValueError):
        r.process("not audio")   # type: ignore[arg-type]
    with pytest.raises(ValueError):
        r.process(np.zeros(320, np.int16)[::2])   # not contiguous


def test_fixed_mode_bad_frames_rejected() -> None:
    r = Resampler.for_frames(8000, 48000)
    dst = np.zeros(960, np.int16)
    with pytest.raises(ValueError, match="src has 159 samples"):
        r.process_into(np.zeros(159, np.int16), dst)
    with pytest.raises(ValueError, match="odd byte count"):
        r.process_into(b"\x00" * 319, dst)
    with pytest.raises(ValueError, match="dst has 959 samples"):
        r.process_into(np.zeros(160, np.int16), np.zeros(959, np.int16))
    with pytest.raises(ValueError, match="writable"):
        r.process_into(np.zeros(160, np.int16), bytes(1920))
    with pytest.raises(ValueError):
        r.process_frame(np.zeros(160, np.float32))
    # nothing above consumed input: the stream is still at its start
    x = speech_like(8000, 0.2)
    fresh = Resampler.for_frames(8000, 48000)
    assert [r.process_frame(f) for f in frames(x, 160)] == [fresh.process_frame(f) for f in frames(x, 160)]


def test_mode_misuse_rejected() -> None:
    with pytest.raises(RuntimeError):
        Resampler.for_frames(8000, 16000).process(np.zeros(160, np.int16))
    with pytest.raises(RuntimeError):
        Resampler(8000, 16000).process_into(np.zeros(160, np.int16), np.zeros(320, np.int16))
