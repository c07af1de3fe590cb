# cython: annotation_typing=False
"""Streaming int16 resampling with libsoxr (a band-limited polyphase/DFT resampler, never linear).

Two ways to use a :class:`Resampler`:

* ``Resampler(in_rate, out_rate)`` and ``process(frame) -> bytes``: a plain stream. Any whole
  number of samples per call; the filter state is kept across calls. soxr works in blocks, so the
  output length per call varies (often 0, then several frames at once) until ``flush()``. Over
  the whole stream the output is ``len(input) * out_rate / in_rate`` samples (rounded), time-aligned
  with the input (soxr compensates its own filter delay).
* ``Resampler.for_frames(in_rate, out_rate, frame_ms=20)`` and ``process_into(src, dst)``: the
  fixed-output mode the media clock needs. Every call takes exactly one input frame and writes
  exactly one output frame. The output is the same stream delayed by a constant
  ``latency_samples`` (output samples of leading silence), chosen at construction so soxr's
  bursts never leave the output short.

A Resampler belongs to one stream and one thread at a time (a concurrent call raises RuntimeError).
Frames are native-endian int16: ``bytes``/``bytearray``/``memoryview`` (even length) or an
int16 array (``array('h')``, numpy ``int16``).
"""
from cpython.buffer cimport (PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBUF_WRITABLE, PyBuffer_Release,
                             PyObject_GetBuffer)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int16_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memmove, memset
from cython_mixer.g711 cimport get_pcm

import operator
import sys

cdef extern from "soxr.h" nogil:
    ctypedef void* soxr_t
    ctypedef const char* soxr_error_t
    ctypedef enum soxr_datatype_t:
        SOXR_INT16_I
    ctypedef struct soxr_io_spec_t:
        soxr_datatype_t itype
        soxr_datatype_t otype
        double scale
        unsigned long flags
    ctypedef struct soxr_quality_spec_t:
        double precision
        double phase_response
        double passband_end
        double stopband_begin
        unsigned long flags
    ctypedef struct soxr_runtime_spec_t:
        unsigned log2_min_dft_size
        unsigned log2_large_dft_size
        unsigned coef_size_kbytes
        unsigned num_threads
        unsigned long flags
    unsigned long SOXR_NO_DITHER
    unsigned long SOXR_LQ, SOXR_MQ, SOXR_HQ, SOXR_VHQ, SOXR_16_BITQ
    soxr_io_spec_t soxr_io_spec(soxr_datatype_t itype, soxr_datatype_t otype)
    soxr_quality_spec_t soxr_quality_spec(unsigned long recipe, unsigned long flags)
    soxr_runtime_spec_t soxr_runtime_spec(unsigned num_threads)
    soxr_t soxr_create(double input_rate, double output_rate, unsigned num_channels,
                       soxr_error_t* error, const soxr_io_spec_t* io_spec,
                       const soxr_quality_spec_t* quality_spec, const soxr_runtime_spec_t* runtime_spec)
    soxr_error_t soxr_process(soxr_t resampler, const void* inp, size_t ilen, size_t* idone,
                              void* out, size_t olen, size_t* odone)
    double soxr_delay(soxr_t resampler)
    soxr_error_t soxr_clear(soxr_t resampler)
    void soxr_delete(soxr_t resampler)

#: Rates a Resampler accepts: the telephony rates (G.711 8 kHz, G.722 16 kHz, wideband 32 kHz)
#: and the rates USB handsets and headsets offer (44.1 and 48 kHz).
SUPPORTED_RATES = (8000, 16000, 32000, 44100, 48000)

#: Quality names. "vhq"/"hq"/"mq"/"lq" are soxr's recipes (28/20/16/16-bit precision; "lq" keeps
#: only ~68 % of the narrower band, i.e. 2.7 kHz at 8 kHz). "phone" is 16-bit precision with the
#: passband ending at 85 % of the narrower Nyquist (3.4 kHz at 8 kHz, the G.711 channel): the
#: shortest filter that keeps the telephone band, about a third of vhq's latency.
QUALITIES = ("vhq", "hq", "mq", "lq", "phone")

# Fixed mode sizes its latency by simulating PRIME_MS of silent frames and adding a margin: soxr's
# block pattern is not strictly periodic; over 60 s its worst shortfall exceeded the first 2 s by
# < 2 %, and with 8 s + 5 % no pair or quality underran in 300 s of 20 ms frames (measured).
cdef enum:
    PRIME_MS = 8000
    PRIME_MARGIN_PERCENT = 5
    # The smallest DFT soxr allows (2**8): short blocks cut the streaming latency 2-3x.
    LOG2_DFT = 8
    MAX_FRAME_MS = 120   # the longest RTP ptime in use (Opus)



cdef Py_ssize_t _get_frame(object obj, Py_buffer* view, bint writable, str what) except -1:
    """Acquire an int16 frame (g711's shared checks) into ``view``; return its sample count.
    Anything unusable, a non-buffer included, is a ValueError naming ``what``."""
    try:
        return get_pcm(obj, view, writable, what)
    except TypeError as exc:
        need = "a writable" if writable else "a"
        raise ValueError(f"{what} must be {need} contiguous int16 or bytes-like buffer, "
                         f"got {type(obj).__name__} ({exc})") from None


cdef int _check_rate(object rate, str what) except -1:
    try:
        value = operator.index(rate)
    except TypeError:
        raise ValueError(f"{what} must be an int sample rate, got {rate!r}") from None
    if value not in SUPPORTED_RATES:
        raise ValueError(f"{what} {value} Hz is not supported; use one of {SUPPORTED_RATES}")
    return value


cdef class Resampler:
    """A mono int16 stream resampler from ``in_rate`` to ``out_rate`` (Hz) using libsoxr."""

    cdef soxr_t _sx
    cdef readonly int in_rate
    cdef readonly int out_rate
    cdef readonly str quality
    cdef readonly int in_frame_samples   # fixed mode only, else 0
    cdef readonly int out_frame_samples  # fixed mode only, else 0
    cdef readonly long underruns         # fixed mode: calls whose output soxr could not cover
    cdef int _latency                    # fixed mode: constant output delay in samples
    cdef bint _fixed
    cdef bint _identity
    cdef bint _busy
    # Output FIFO (samples); fixed mode keeps the primed latency in it.
    cdef int16_t* _fifo
    cdef size_t _fifo_len
    cdef size_t _fifo_cap
    cdef size_t _deficit                 # samples owed after an underrun, dropped from new output

    def __cinit__(self, *args, **kwargs):
        self._sx = NULL
        self._fifo = NULL

    def __init__(self, in_rate: int, out_rate: int, quality: str = "vhq") -> None:
        self.in_rate = _check_rate(in_rate, "in_rate")
        self.out_rate = _check_rate(out_rate, "out_rate")
        if quality not in QUALITIES:
            raise ValueError(f"unknown quality {quality!r}; use one of {QUALITIES}")
        self.quality = quality
        self._identity = self.in_rate == self.out_rate
        if self._sx != NULL:   # __init__ called again: start over
            soxr_delete(self._sx)
            self._sx = NULL
        self._fixed = False
        self._latency = 0
        self.in_frame_samples = self.out_frame_samples = 0
        self._fifo_len = self._deficit = 0
        if not self._identity:
            self._sx = self._create()
        self._grow(max(self.out_rate // 25, 64))  # two 20 ms frames to start with

    @classmethod
    def for_frames(cls, in_rate: int, out_rate: int, frame_ms: int = 20,
                   quality: str = "vhq") -> Resampler:
        """A fixed-output resampler: ``process_into`` maps one ``frame_ms`` frame to one frame.

        The output lags the input by ``latency_samples`` (see ``latency_ms``); the first output
        frames are that much silence.
        """
        cdef Resampler self = cls(in_rate, out_rate, quality)
        try:
            ms = operator.index(frame_ms)
        except TypeError:
            raise ValueError(f"frame_ms must be an int, got {frame_ms!r}") from None
        if not 1 <= ms <= MAX_FRAME_MS:
            raise ValueError(f"frame_ms must be 1..{MAX_FRAME_MS}, got {ms}")
        if (self.in_rate * ms) % 1000 or (self.out_rate * ms) % 1000:
            raise ValueError(f"a {ms} ms frame is not a whole number of samples at "
                             f"{self.in_rate} Hz and {self.out_rate} Hz")
        self.in_frame_samples = self.in_rate * ms // 1000
        self.out_frame_samples = self.out_rate * ms // 1000
        self._fixed = True
        self._latency = 0 if self._identity else self._measure_latency(PRIME_MS // ms)
        self._grow(2 * (<size_t>self._latency + <size_t>self.out_frame_samples) + 64)
        self._prime()
        return self

    def __dealloc__(self):
        if self._sx != NULL:
            soxr_delete(self._sx)
            self._sx = NULL
        free(self._fifo)
        self._fifo = NULL

    cdef soxr_t _create(self) except NULL:
        cdef soxr_error_t err = NULL
        cdef soxr_io_spec_t io = soxr_io_spec(SOXR_INT16_I, SOXR_INT16_I)
        io.flags |= SOXR_NO_DITHER  # deterministic output; int16 in, int16 out needs no dither
        cdef soxr_quality_spec_t q
        if self.quality == "phone":
            q = soxr_quality_spec(SOXR_16_BITQ, 0)
            q.passband_end = 0.85
        else:
            q = soxr_quality_spec({"vhq": SOXR_VHQ, "hq": SOXR_HQ, "mq": SOXR_MQ,
                                   "lq": SOXR_LQ}[self.quality], 0)
        cdef soxr_runtime_spec_t rt = soxr_runtime_spec(1)
        rt.log2_min_dft_size = LOG2_DFT
        rt.log2_large_dft_size = LOG2_DFT
        cdef soxr_t sx = soxr_create(self.in_rate, self.out_rate, 1, &err, &io, &q, &rt)
        if err != NULL or sx == NULL:
            if sx != NULL:
                soxr_delete(sx)
            msg = (<bytes>err).decode("utf-8", "replace") if err != NULL else "unknown error"
            raise ValueError(f"soxr cannot resample {self.in_rate} -> {self.out_rate} Hz: {msg}")
        return sx

    cdef int _grow(self, size_t need) except -1:
        if need <= self._fifo_cap:
            return 0
        cdef size_t cap = max(need, 2 * self._fifo_cap)
        cdef int16_t* p = <int16_t*>realloc(self._fifo, cap * sizeof(int16_t))
        if p == NULL:
            raise MemoryError()
        self._fifo = p
        self._fifo_cap = cap
        return 0

    cdef int _measure_latency(self, int frames) except -1:
        """Worst output shortfall of soxr over ``frames`` silent frames, plus a margin."""
        cdef size_t fi = self.in_frame_samples, fo = self.out_frame_samples
        cdef size_t cap = fo * 64 + 4096
        cdef int16_t* zin = <int16_t*>malloc(fi * sizeof(int16_t))
        cdef int16_t* out = <int16_t*>malloc(cap * sizeof(int16_t))
        cdef size_t idone = 0, odone = 0, total = 0, used
        cdef long long worst = 0, lag
        cdef int n
        cdef soxr_error_t err = NULL
        if zin == NULL or out == NULL:
            free(zin)
            free(out)
            raise MemoryError()
        memset(zin, 0, fi * sizeof(int16_t))
        with nogil:
            for n in range(1, frames + 1):
                used = 0
                while used < fi and err == NULL:
                    err = soxr_process(self._sx, zin + used, fi - used, &idone, out, cap, &odone)
                    used += idone
                    total += odone
                lag = <long long>(n * fo) - <long long>total
                if lag > worst:
                    worst = lag
            if err == NULL:
                err = soxr_clear(self._sx)
        free(zin)
        free(out)
        if err != NULL:
            raise RuntimeError(f"soxr: {(<bytes>err).decode('utf-8', 'replace')}")
        return <int>(worst + (worst * PRIME_MARGIN_PERCENT + 99) // 100)

    cdef void _prime(self):
        memset(self._fifo, 0, self._latency * sizeof(int16_t))
        self._fifo_len = self._latency
        self._deficit = 0

    cdef int _feed(self, const int16_t* src, size_t n) except -1:
        """Resample n samples from src and append the output to the FIFO (GIL released in soxr)."""
        cdef size_t used = 0, idone = 0, odone = 0, room, drop
        cdef soxr_error_t err = NULL
        if self._identity:
            self._grow(self._fifo_len + n)
            memcpy(self._fifo + self._fifo_len, src, n * sizeof(int16_t))
            self._fifo_len += n
            return 0
        while True:
            # Room for this input's share plus whatever soxr still holds, so one pass normally suffices.
            self._grow(self._fifo_len + <size_t>((n - used) * <double>self.out_rate / self.in_rate
                                                 + soxr_delay(self._sx)) + 64)
            room = self._fifo_cap - self._fifo_len
            with nogil:
                err = soxr_process(self._sx, src + used, n - used, &idone, self._fifo + self._fifo_len,
                                   room, &odone)
            if err != NULL:
                raise RuntimeError(f"soxr: {(<bytes>err).decode('utf-8', 'replace')}")
            used += idone
            self._append_produced(odone)
            if used >= n and odone < room:
                return 0

    cdef void _append_produced(self, size_t odone):
        """Count odone samples just written after the FIFO's end, first paying any underrun debt."""
        cdef size_t drop = odone if odone < self._deficit else self._deficit
        if drop:
            memmove(self._fifo + self._fifo_len, self._fifo + self._fifo_len + drop,
                    (odone - drop) * sizeof(int16_t))
            self._deficit -= drop
        self._fifo_len += odone - drop

    cdef bytes _drain(self):
        cdef bytes out = PyBytes_FromStringAndSize(<char*>self._fifo, self._fifo_len * sizeof(int16_t))
        self._fifo_len = 0
        return out

    cdef int _enter(self) except -1:
        if self._busy:
            raise RuntimeError("Resampler is already in use by another thread")
        self._busy = True
        return 0

    def process(self, frame) -> bytes:
        """Resample one chunk (any whole number of int16 samples); return what soxr has ready.

        The length varies from call to call (soxr emits in blocks); ``flush()`` returns the rest.
        """
        if self._fixed:
            raise RuntimeError("a Resampler made by for_frames() is driven by process_into()")
        cdef Py_buffer view
        cdef Py_ssize_t n = _get_frame(frame, &view, False, "frame")
        self._enter()
        try:
            self._feed(<const int16_t*>view.buf, n)
            return self._drain()
        finally:
            self._busy = False
            PyBuffer_Release(&view)

    def process_into(self, src, dst) -> None:
        """Fixed mode: resample one input frame ``src`` and write exactly one output frame into ``dst``.

        ``dst`` is the caller's writable buffer (reused across ticks; nothing is allocated here).
        """
        cdef Py_buffer dview
        cdef Py_ssize_t m = _get_frame(dst, &dview, True, "dst")
        try:
            self._step(src, <int16_t*>dview.buf, m)
        finally:
            PyBuffer_Release(&dview)

    def process_frame(self, src) -> bytes:
        """Fixed mode: like ``process_into`` but returns a new ``bytes`` of one output frame."""
        if not self._fixed:
            raise RuntimeError("process_frame() needs a Resampler made by Resampler.for_frames()")
        cdef bytes out = PyBytes_FromStringAndSize(NULL, self.out_frame_samples * sizeof(int16_t))
        self._step(src, <int16_t*>PyBytes_AS_STRING(out), self.out_frame_samples)
        return out

    cdef int _step(self, object src, int16_t* dst, Py_ssize_t m) except -1:
        if not self._fixed:
            raise RuntimeError("process_into() needs a Resampler made by Resampler.for_frames()")
        cdef Py_buffer sview
        cdef Py_ssize_t n = _get_frame(src, &sview, False, "src")
        try:
            if n != self.in_frame_samples:
                raise ValueError(f"src has {n} samples; a frame at {self.in_rate} Hz is "
                                 f"{self.in_frame_samples}")
            if m != self.out_frame_samples:
                raise ValueError(f"dst has {m} samples; a frame at {self.out_rate} Hz is "
                                 f"{self.out_frame_samples}")
            self._enter()
            try:
                self._feed(<const int16_t*>sview.buf, n)
                self._pop_into(dst, m)
            finally:
                self._busy = False
        finally:
            PyBuffer_Release(&sview)
        return 0

    cdef void _pop_into(self, int16_t* dst, size_t m):
        cdef size_t take = m if m <= self._fifo_len else self._fifo_len
        memcpy(dst, self._fifo, take * sizeof(int16_t))
        memmove(self._fifo, self._fifo + take, (self._fifo_len - take) * sizeof(int16_t))
        self._fifo_len -= take
        if take < m:
            # soxr fell behind the primed latency: pad with silence and drop as much of the
            # output still to come, so the timeline (and the latency) stays exactly as stated.
            memset(dst + take, 0, (m - take) * sizeof(int16_t))
            self._deficit += m - take
            self.underruns += 1

    def flush(self) -> bytes:
        """End the stream: return all output still held, then reset for a new stream.

        In fixed mode this is the rest of the delayed stream (not a whole frame in general).
        """
        cdef size_t odone = 0, room
        cdef soxr_error_t err = NULL
        self._enter()
        try:
            if not self._identity:
                while True:
                    self._grow(self._fifo_len + <size_t>soxr_delay(self._sx) + 1024)
                    room = self._fifo_cap - self._fifo_len
                    with nogil:
                        err = soxr_process(self._sx, NULL, 0, NULL, self._fifo + self._fifo_len,
                                           room, &odone)
                    if err != NULL:
                        raise RuntimeError(f"soxr: {(<bytes>err).decode('utf-8', 'replace')}")
                    self._append_produced(odone)
                    if odone < room:
                        break
            return self._drain()
        finally:
            self._busy = False
            self._reset()

    def reset(self) -> None:
        """Drop all state (filter history, held output) and start a fresh stream, same settings."""
        self._enter()
        try:
            self._reset()
        finally:
            self._busy = False

    cdef int _reset(self) except -1:
        cdef soxr_error_t err = NULL
        if self._sx != NULL:
            err = soxr_clear(self._sx)
            if err != NULL:
                raise RuntimeError(f"soxr: {(<bytes>err).decode('utf-8', 'replace')}")
        self._fifo_len = 0
        self._deficit = 0
        if self._fixed:
            self._prime()
        return 0

    @property
    def fixed(self) -> bool:
        """True for a ``for_frames`` resampler."""
        return self._fixed

    @property
    def delay_samples(self) -> float:
        """How far the output lags the input now, in output samples.

        Fixed mode: the constant ``latency_samples``. Plain mode: what soxr holds back at the
        moment (it varies from call to call; 0 after flush/reset and for identity).
        """
        if self._fixed:
            return float(self._latency)
        if self._identity:
            return 0.0
        return soxr_delay(self._sx)

    @property
    def latency_samples(self) -> int:
        """Fixed mode: the constant output delay in output samples (0 in plain mode)."""
        return self._latency

    @property
    def latency_ms(self) -> float:
        """``latency_samples`` in milliseconds."""
        return self._latency * 1000.0 / self.out_rate

    def __repr__(self) -> str:
        mode = f", frames {self.in_frame_samples}->{self.out_frame_samples}, latency {self.latency_ms:.1f} ms" \
            if self._fixed else ""
        return f"Resampler({self.in_rate} -> {self.out_rate} Hz, {self.quality}{mode})"
