# cython: annotation_typing=False
"""Tone generation in whole frames: FreeSWITCH ``tone_stream://`` specs and DTMF digits.

Levels are per frequency in dBm0, with the G.711 reference: a full-scale sine (peak 32767) is
+3.14 dBm0. Sines come from a complex rotator per frequency (exact frequency in double precision,
renormalised every call), so phase runs on across frames and the inner loop needs no libm.

Spec syntax (the subset of FreeSWITCH's teletone/TGML that indicate sounds use)::

    [tone_stream://]TOKEN[;TOKEN...][;loops=N]

    %(on_ms,off_ms,f1[,f2...])   tone: the frequencies summed, then silence. All-zero
                                 frequencies (or on_ms=0) give on_ms+off_ms of silence
    D or D(on_ms,off_ms)         a DTMF digit 0-9 A-D * # (defaults d= and w=)
    L=n                          play the whole script n times (n >= 1)
    v=dB                         level per frequency, dBm0, -63..0, for the tokens after it
    d=ms, w=ms                   default on/off time of bare DTMF digits (250 ms / 62.5 ms,
                                 FreeSWITCH's 2000/500 samples at 8 kHz)
    loops=n                      last token only: play everything n times, -1 = endlessly

Deliberate differences from FreeSWITCH: a tone of all-zero frequencies is a rest (FreeSWITCH
drops it silently); several frequencies are summed at the full per-frequency level (FreeSWITCH
divides by their number), scaled down together only if the sum could clip; an unknown or
malformed token raises ValueError naming it and its position instead of being skipped.
"""
from dataclasses import dataclass
import math
import operator
import sys

from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.math cimport cos, sin, sqrt
from libc.stdint cimport int16_t, int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset
from cython_mixer.g711 cimport get_pcm, pcm16, sat16


cdef enum:
    SYNTH_CHUNK = 256
    NOGIL_MIN_SAMPLES = 2048  # as cython_mixer/g711.pxd: a 20 ms frame is cheaper than a GIL hand-off

#: Nominal DTMF pairs (low/row group Hz, high/column group Hz), Q.23.
DTMF_FREQS: dict[str, tuple[float, float]] = {
    "1": (697.0, 1209.0), "2": (697.0, 1336.0), "3": (697.0, 1477.0), "A": (697.0, 1633.0),
    "4": (770.0, 1209.0), "5": (770.0, 1336.0), "6": (770.0, 1477.0), "B": (770.0, 1633.0),
    "7": (852.0, 1209.0), "8": (852.0, 1336.0), "9": (852.0, 1477.0), "C": (852.0, 1633.0),
    "*": (941.0, 1209.0), "0": (941.0, 1336.0), "#": (941.0, 1477.0), "D": (941.0, 1633.0),
}
#: dBm0 of a full-scale sine in 16-bit linear PCM (G.711 reference).
FULL_SCALE_DBM0 = 3.14
MIN_RATE = 8000
MAX_RATE = 192000
MAX_FREQS = 16          # per tone; FreeSWITCH allows 18
MAX_MS = 3_600_000.0    # longest on or off time: an hour
DEFAULT_DIGIT_ON_MS = 250.0
DEFAULT_DIGIT_OFF_MS = 62.5
_PREFIX = "tone_stream://"


@dataclass(frozen=True)
class ToneSegment:
    """One tone: ``freqs`` summed for ``on_ms``, then ``off_ms`` of silence.

    No frequencies means silence for ``on_ms + off_ms``. ``level_dbm0`` None means the
    generator's level.
    """
    on_ms: float
    off_ms: float
    freqs: tuple[float, ...] = ()
    level_dbm0: float | None = None


@dataclass(frozen=True)
class ToneProgram:
    """A parsed spec: the segments in order, played ``loops`` times (-1 = endlessly)."""
    segments: tuple[ToneSegment, ...]
    loops: int = 1

    @property
    def cycle_ms(self) -> float:
        return sum(s.on_ms + s.off_ms for s in self.segments)


def _bad(spec: str, pos: int, token: str, why: str) -> ValueError:
    return ValueError(f"tone_stream spec {spec!r}: bad token {token!r} at position {pos}: {why}")


def _number(spec: str, pos: int, token: str, text: str, what: str, integer: bool = False) -> float:
    text = text.strip()
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise _bad(spec, pos, token, f"{what} {text!r} is not {'an integer' if integer else 'a number'}") from None
    if not math.isfinite(value):
        raise _bad(spec, pos, token, f"{what} {text!r} is not finite")
    return value


def _parse_args(spec: str, pos: int, token: str, body: str) -> list[float]:
    return [_number(spec, pos, token, a, "argument") for a in body.split(",")]


def _parse_tones(spec: str, pos: int, token: str, state: dict, out: list) -> None:
    """Parse one ';'-token of tone items (``%(...)`` and DTMF digits) into ``out``."""
    i = 0
    n = len(token)
    while i < n:
        ch = token[i]
        if ch.isspace():
            i += 1
            continue
        here = pos + i
        body = None
        if i + 1 < n and token[i + 1] == "(":
            close = token.find(")", i + 2)
            if close < 0:
                raise _bad(spec, here, token[i:], "missing ')'")
            body = token[i + 2:close]
            item = token[i:close + 1]
            i = close + 1
        else:
            item = ch
            i += 1
        if ch == "%":
            if body is None:
                raise _bad(spec, here, item, "'%' needs (on_ms,off_ms,freq...)")
            args = _parse_args(spec, here, item, body)
            if len(args) < 3:
                raise _bad(spec, here, item, "needs on_ms, off_ms and at least one frequency")
            if len(args) - 2 > MAX_FREQS:
                raise _bad(spec, here, item, f"more than {MAX_FREQS} frequencies")
            on_ms, off_ms, freqs = args[0], args[1], args[2:]
            if not (0 <= on_ms <= MAX_MS and 0 <= off_ms <= MAX_MS):
                raise _bad(spec, here, item, f"durations must be 0..{MAX_MS:.0f} ms")
            if any(f < 0 for f in freqs):
                raise _bad(spec, here, item, "frequencies must be >= 0")
            tones = tuple(f for f in freqs if f > 0)
            if not tones or on_ms == 0:      # a rest
                out.append(ToneSegment(on_ms + off_ms, 0.0, (), None))
            else:
                out.append(ToneSegment(on_ms, off_ms, tones, state["v"]))
        elif ch.upper() in DTMF_FREQS:
            on_ms, off_ms = state["d"], state["w"]
            if body is not None:
                args = _parse_args(spec, here, item, body)
                if len(args) != 2 or not all(0 <= a <= MAX_MS for a in args):
                    raise _bad(spec, here, item, f"a digit takes (on_ms,off_ms), both 0..{MAX_MS:.0f}")
                on_ms, off_ms = args
            out.append(ToneSegment(on_ms, off_ms, DTMF_FREQS[ch.upper()], state["v"]))
        else:
            raise _bad(spec, here, item, "not a tone, a DTMF digit or a setting")


def parse_tone_stream(spec: str) -> ToneProgram:
    """Parse a ``tone_stream://`` spec (prefix optional). ValueError names the bad token."""
    if not isinstance(spec, str):
        raise ValueError(f"tone_stream spec must be a str, not {type(spec).__name__}")
    base = len(_PREFIX) if spec.lower().startswith(_PREFIX) else 0
    body = spec[base:]
    state = {"v": None, "d": DEFAULT_DIGIT_ON_MS, "w": DEFAULT_DIGIT_OFF_MS}
    repeat = None
    loops = None
    segments: list = []
    pos = base
    tokens = body.split(";")
    for k, raw in enumerate(tokens):
        here = pos + (len(raw) - len(raw.lstrip()))
        pos += len(raw) + 1
        token = raw.strip()
        if not token:
            continue
        if loops is not None:
            raise _bad(spec, here, token, "nothing may follow loops=")
        key, eq, value = token.partition("=")
        if not eq:
            _parse_tones(spec, here, raw.lstrip(), state, segments)
            continue
        key = key.strip()
        if key == "loops":
            loops = int(_number(spec, here, token, value, "loops", integer=True))
            if loops == 0 or loops < -1:
                raise _bad(spec, here, token, "loops must be >= 1, or -1 for endless")
        elif key == "L":
            if repeat is not None:
                raise _bad(spec, here, token, "L= given twice")
            repeat = int(_number(spec, here, token, value, "L", integer=True))
            if repeat < 1:
                raise _bad(spec, here, token, "L must be >= 1")
        elif key == "v":
            level = _number(spec, here, token, value, "volume")
            if not -63.0 <= level <= 0.0:
                raise _bad(spec, here, token, "volume must be -63..0 dB")
            state["v"] = level
        elif key in ("d", "w"):
            ms = _number(spec, here, token, value, "duration")
            if not 0 <= ms <= MAX_MS:
                raise _bad(spec, here, token, f"duration must be 0..{MAX_MS:.0f} ms")
            state[key] = ms
        else:
            raise _bad(spec, here, token, f"unsupported setting {key!r}=")
    if not segments:
        raise ValueError(f"tone_stream spec {spec!r}: no tones in it")
    plays = repeat or 1
    if loops == -1:
        plays = -1
    elif loops is not None:
        plays *= loops
    return ToneProgram(tuple(segments), plays)


# ---------------------------------------------------------------------------------------------
# Synthesis core (C, no GIL)

cdef struct Osc:
    double c, s         # cos and sin of the per-sample phase step
    double c4, s4       # the same for four samples
    double re, im       # current phasor; the output is amp * im
    double amp

cdef struct Seg:
    int64_t on, off     # samples
    int first, count    # slice of the oscillator array


cdef void _synth(pcm16 *out, Py_ssize_t n, Osc *osc, int count) noexcept nogil:
    """Add up the oscillators into n samples and advance them (renormalised per chunk).

    Each oscillator runs as four interleaved phasors (samples i, i+1, i+2, i+3, each turned
    by 4w per step) so the rotations do not wait on one another.
    """
    cdef double acc[SYNTH_CHUNK]
    cdef Py_ssize_t done = 0, m, m4, i
    cdef int k
    cdef double a, c, s, c4, s4, t, mag
    cdef double r0, i0, r1, i1, r2, i2, r3, i3
    while done < n:
        m = min(n - done, <Py_ssize_t>SYNTH_CHUNK)
        m4 = m - m % 4
        for i in range(m):
            acc[i] = 0.0
        for k in range(count):
            a = osc[k].amp
            c = osc[k].c
            s = osc[k].s
            c4 = osc[k].c4
            s4 = osc[k].s4
            r0 = osc[k].re
            i0 = osc[k].im
            r1 = r0 * c - i0 * s
            i1 = r0 * s + i0 * c
            r2 = r1 * c - i1 * s
            i2 = r1 * s + i1 * c
            r3 = r2 * c - i2 * s
            i3 = r2 * s + i2 * c
            for i in range(0, m4, 4):
                acc[i] += a * i0
                acc[i + 1] += a * i1
                acc[i + 2] += a * i2
                acc[i + 3] += a * i3
                t = r0 * c4 - i0 * s4
                i0 = r0 * s4 + i0 * c4
                r0 = t
                t = r1 * c4 - i1 * s4
                i1 = r1 * s4 + i1 * c4
                r1 = t
                t = r2 * c4 - i2 * s4
                i2 = r2 * s4 + i2 * c4
                r2 = t
                t = r3 * c4 - i3 * s4
                i3 = r3 * s4 + i3 * c4
                r3 = t
            for i in range(m4, m):           # the tail, one sample at a time
                acc[i] += a * i0
                t = r0 * c - i0 * s
                i0 = r0 * s + i0 * c
                r0 = t
            mag = sqrt(r0 * r0 + i0 * i0)
            osc[k].re = r0 / mag
            osc[k].im = i0 / mag
        for i in range(m):
            out[done + i] = sat16(acc[i])
        done += m


cdef inline double _amplitude(double level_dbm0):
    return 32767.0 * 10.0 ** ((level_dbm0 - FULL_SCALE_DBM0) / 20.0)


cdef inline void _osc_init(Osc *o, double freq, double rate, double amp) noexcept nogil:
    cdef double w = 2.0 * 3.141592653589793 * freq / rate
    o.c = cos(w)
    o.s = sin(w)
    o.c4 = cos(4.0 * w)
    o.s4 = sin(4.0 * w)
    o.re = 1.0
    o.im = 0.0
    o.amp = amp


def _check_rate(rate) -> int:
    try:
        value = operator.index(rate)
    except TypeError:
        value = None
    if value is None or isinstance(rate, bool) or not MIN_RATE <= value <= MAX_RATE:
        raise ValueError(f"rate must be an integer {MIN_RATE}..{MAX_RATE} Hz, got {rate!r}")
    return value


def _check_level(level_dbm0, what: str = "level_dbm0") -> float:
    level = float(level_dbm0)
    if not math.isfinite(level) or level > FULL_SCALE_DBM0:
        raise ValueError(f"{what} must be finite and <= {FULL_SCALE_DBM0} dBm0, got {level_dbm0!r}")
    return level




cdef Py_ssize_t _get_pcm(object obj, Py_buffer *view, bint writable) except -1:
    """Acquire obj as native int16 PCM (g711's shared checks); anything unusable is a ValueError.
    Returns the sample count; the caller must PyBuffer_Release(view)."""
    try:
        return get_pcm(obj, view, writable, "frame")
    except TypeError as exc:
        raise ValueError(f"frame must be a bytes-like int16 buffer ({exc})") from None


cdef class ToneGenerator:
    """Plays a tone spec or ToneProgram as 16-bit PCM at ``rate``, frame by frame.

    ``level_dbm0`` is the level per frequency where the spec sets no ``v=``.
    """
    cdef Seg *_segs
    cdef Osc *_proto          # initial oscillator state, per tone of each segment
    cdef Osc *_osc            # running oscillators of the current segment
    cdef int _nsegs
    cdef int64_t _loops       # -1 endless
    cdef int64_t _played      # completed loops
    cdef int _seg             # current segment
    cdef int64_t _pos         # sample position inside the current segment
    cdef int64_t _cycle       # samples in one loop
    cdef readonly int rate
    cdef readonly object program

    def __cinit__(self, *args, **kwargs):
        self._segs = NULL
        self._proto = NULL
        self._osc = NULL
        self._nsegs = 0

    def __init__(self, spec_or_program, rate: int = 8000, level_dbm0: float = -10.0):
        program = spec_or_program
        if isinstance(program, str):
            program = parse_tone_stream(program)
        if not isinstance(program, ToneProgram):
            raise ValueError(f"need a tone_stream spec or ToneProgram, got {type(spec_or_program).__name__}")
        if not program.segments:
            raise ValueError("ToneProgram has no segments")
        if program.loops == 0 or program.loops < -1:
            raise ValueError(f"ToneProgram.loops must be >= 1 or -1, got {program.loops}")
        rate = _check_rate(rate)
        default_level = _check_level(level_dbm0)
        # validate and convert everything before touching C state
        plan = []        # (on samples, off samples, [(freq, amplitude)])
        for k, seg in enumerate(program.segments):
            on_ms, off_ms = float(seg.on_ms), float(seg.off_ms)
            if not (0 <= on_ms <= MAX_MS and 0 <= off_ms <= MAX_MS):
                raise ValueError(f"segment {k}: durations must be 0..{MAX_MS:.0f} ms")
            freqs = [float(f) for f in seg.freqs]
            if len(freqs) > MAX_FREQS:
                raise ValueError(f"segment {k}: more than {MAX_FREQS} frequencies")
            for f in freqs:
                if not 0.0 < f < rate / 2.0:
                    raise ValueError(f"segment {k}: frequency {f} Hz is outside 0..{rate / 2} Hz")
            level = _check_level(default_level if seg.level_dbm0 is None else seg.level_dbm0,
                                 f"segment {k} level")
            amp = _amplitude(level)
            if freqs and amp * len(freqs) > 32767.0:    # keep the sum inside full scale, not clipped
                amp = 32767.0 / len(freqs)
            on = round(on_ms * rate / 1000.0)
            off = round(off_ms * rate / 1000.0)
            plan.append((on, off, [(f, amp) for f in freqs]) if freqs else (0, on + off, []))
        cdef int nosc = sum(len(tones) for _, _, tones in plan)
        free(self._segs)         # __init__ may be called again
        free(self._proto)
        free(self._osc)
        self._nsegs = 0
        self._segs = <Seg *>malloc(len(plan) * sizeof(Seg))
        self._proto = <Osc *>malloc(max(nosc, 1) * sizeof(Osc))
        self._osc = <Osc *>malloc(MAX_FREQS * sizeof(Osc))
        if self._segs == NULL or self._proto == NULL or self._osc == NULL:
            raise MemoryError()
        cdef int k2 = 0, j = 0
        self._cycle = 0
        for on, off, tones in plan:
            self._segs[k2].on = on
            self._segs[k2].off = off
            self._segs[k2].first = j
            self._segs[k2].count = len(tones)
            for f, amp in tones:
                _osc_init(&self._proto[j], f, rate, amp)
                j += 1
            self._cycle += on + off
            k2 += 1
        self._nsegs = len(plan)
        self.rate = rate
        self.program = program
        self._loops = program.loops if self._cycle else 1    # an all-empty program is just done
        self.rewind()

    def __dealloc__(self):
        free(self._segs)
        free(self._proto)
        free(self._osc)

    cdef int _ready(self) except -1:
        if self._nsegs == 0:
            raise ValueError("ToneGenerator was not initialised")
        return 0

    def rewind(self) -> None:
        """Start again from the first segment."""
        self._ready()
        self._played = 0
        self._seg = 0
        self._pos = 0
        self._enter_segment()
        if self._cycle == 0:
            self._played = self._loops

    cdef void _enter_segment(self) noexcept nogil:
        cdef Seg *s = &self._segs[self._seg]
        cdef int k
        for k in range(s.count):
            self._osc[k] = self._proto[s.first + k]

    @property
    def done(self) -> bool:
        """True once every sample has been read (never for an endless program)."""
        return self._nsegs > 0 and self._loops >= 0 and self._played >= self._loops

    @property
    def total_samples(self) -> int | None:
        """Samples in the whole program, None when it loops endlessly."""
        if self._nsegs == 0 or self._loops < 0:
            return None
        return self._cycle * self._loops

    cdef Py_ssize_t _fill(self, pcm16 *out, Py_ssize_t n) noexcept nogil:
        """Write up to n samples; returns how many (less only at the end of the program)."""
        cdef Py_ssize_t done = 0, take
        cdef Seg *s
        while done < n and not (self._loops >= 0 and self._played >= self._loops):
            s = &self._segs[self._seg]
            if self._pos < s.on:
                take = min(n - done, s.on - self._pos)
                _synth(out + done, take, self._osc, s.count)
            else:
                take = min(n - done, s.on + s.off - self._pos)
                memset(out + done, 0, take * sizeof(int16_t))
            done += take
            self._pos += take
            if self._pos >= s.on + s.off:
                self._pos = 0
                self._seg += 1
                if self._seg == self._nsegs:
                    self._seg = 0
                    self._played += 1
                self._enter_segment()
        return done

    cdef Py_ssize_t _fill_zeroed(self, pcm16 *out, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t wrote = self._fill(out, n)
        if wrote < n:
            memset(out + wrote, 0, (n - wrote) * sizeof(int16_t))
        return wrote

    def read_into(self, buf) -> int:
        """Fill the writable int16 frame ``buf``; returns samples written, 0 when done.

        Samples of ``buf`` past the end of the program are zeroed.
        """
        self._ready()
        cdef Py_buffer view
        cdef Py_ssize_t n = _get_pcm(buf, &view, True), wrote
        try:
            if n >= NOGIL_MIN_SAMPLES:
                with nogil:
                    wrote = self._fill_zeroed(<pcm16 *>view.buf, n)
            else:
                wrote = self._fill_zeroed(<pcm16 *>view.buf, n)
        finally:
            PyBuffer_Release(&view)
        return wrote

    def read(self, samples: int) -> bytes:
        """Return up to ``samples`` samples as bytes (shorter at the end, b'' when done)."""
        self._ready()
        if samples < 0:
            raise ValueError(f"samples must be >= 0, got {samples}")
        cdef Py_ssize_t n = samples
        if self._loops >= 0:
            n = min(n, self._remaining())
        out = PyBytes_FromStringAndSize(NULL, n * 2)
        cdef pcm16 *p = <pcm16 *>PyBytes_AS_STRING(out)
        if n >= NOGIL_MIN_SAMPLES:
            with nogil:
                self._fill(p, n)
        else:
            self._fill(p, n)
        return out

    cdef int64_t _remaining(self):
        cdef int64_t left = 0
        cdef int k
        if self._played >= self._loops:
            return 0
        left = (self._loops - self._played - 1) * self._cycle
        left += self._segs[self._seg].on + self._segs[self._seg].off - self._pos
        for k in range(self._seg + 1, self._nsegs):
            left += self._segs[k].on + self._segs[k].off
        return left


def dtmf_tone(digit: str, ms: float, rate: int = 8000, level_dbm0: float = -10.0, *,
              low_hz: float | None = None, high_hz: float | None = None,
              low_db: float = 0.0, high_db: float = 0.0) -> bytes:
    """One DTMF tone of ``ms`` (rounded to whole samples), no silence.

    Each group's level is ``level_dbm0`` plus ``low_db``/``high_db``; ``low_hz``/``high_hz``
    replace the nominal frequencies (0 leaves that group out: a single tone).
    """
    if not isinstance(digit, str) or len(digit) != 1 or digit.upper() not in DTMF_FREQS:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    lo, hi = DTMF_FREQS[digit.upper()]
    lo = lo if low_hz is None else float(low_hz)
    hi = hi if high_hz is None else float(high_hz)
    rate = _check_rate(rate)
    if not 0 <= ms <= MAX_MS:
        raise ValueError(f"ms must be 0..{MAX_MS:.0f}, got {ms!r}")
    cdef Py_ssize_t n = round(ms * rate / 1000.0)
    cdef Osc osc[2]
    cdef int count = 0
    for f, db in ((lo, low_db), (hi, high_db)):
        if f == 0:
            continue
        if not 0.0 < f < rate / 2.0:
            raise ValueError(f"frequency {f} Hz is outside 0..{rate / 2} Hz")
        _osc_init(&osc[count], f, rate, _amplitude(_check_level(level_dbm0 + db, "tone level")))
        count += 1
    out = PyBytes_FromStringAndSize(NULL, n * 2)
    cdef pcm16 *p = <pcm16 *>PyBytes_AS_STRING(out)
    if count == 0:
        memset(p, 0, n * sizeof(int16_t))
    elif n >= NOGIL_MIN_SAMPLES:
        with nogil:
            _synth(p, n, osc, count)
    else:
        _synth(p, n, osc, count)
    return out


def dtmf_generate(digits: str, rate: int = 8000, on_ms: float = 100, off_ms: float = 100,
                  level_dbm0: float = -10.0, twist_db: float = 0.0) -> bytes:
    """DTMF for ``digits`` (0-9 A-D * #), each ``on_ms`` of tone then ``off_ms`` of silence.

    The low group is at ``level_dbm0``; the high group at ``level_dbm0 + twist_db``.
    """
    if not isinstance(digits, str):
        raise ValueError(f"digits must be a str, got {type(digits).__name__}")
    for i, d in enumerate(digits):
        if d.upper() not in DTMF_FREQS:
            raise ValueError(f"not a DTMF digit: {d!r} at position {i} of {digits!r}")
    if not 0 <= off_ms <= MAX_MS:
        raise ValueError(f"off_ms must be 0..{MAX_MS:.0f}, got {off_ms!r}")
    gap = bytes(2 * round(off_ms * _check_rate(rate) / 1000.0))
    return b"".join(dtmf_tone(d, on_ms, rate, level_dbm0, high_db=twist_db) + gap for d in digits)
