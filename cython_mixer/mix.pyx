"""Saturating mixes of int16 frames with per-input gain, and the mix matrix behind a tap.

Arithmetic (identical in mix() and MixMatrix): a gain of G dB becomes the Q12 integer
``round(4096 * 10**(G/20))`` (``gain_q12``), so 0 dB is exactly 4096 and mixing at 0 dB is
bit-exact. Each output sample is ``clamp((sum(x_i * g_i) + 2048) >> 12)``: products are summed
wide (int32; int64 only when the gains of one output add up to 16× or more and an int32 sum
could overflow) and clamped to int16 once, at the end, never per input. The shift floors, so
the +2048 rounds halves up. Gains go from -inf (muted; None means the same) to +24 dB; a gain
below about -78 dB rounds to 0 and is silent.

The eavesdrop tap as a MixMatrix (inputs: 0 = target leg A, 1 = peer leg B, 2 = spy;
outputs: 0 = to the spy, 1 = to A, 2 = to B)::

    tap = MixMatrix(3, 3, input_codecs=("PCMU", "PCMA", "linear"),
                    output_codecs=("linear", "PCMU", "PCMA"))
    tap.set_gain(0, 0, 0.0); tap.set_gain(1, 0, 0.0)   # the spy hears A + B
    tap.set_gain(1, 1, 0.0); tap.set_gain(2, 1, 0.0)   # mode 2: A hears B + spy
    to_spy, to_a, to_b = tap.process((codes_a, codes_b, spy_pcm))   # every 20 ms

G.711 inputs are decoded and G.711 outputs encoded inside the same call; a leg that sent
nothing this tick is passed as None and counts as silence.
"""
import math
import numbers

from cpython.buffer cimport Py_buffer, PyBuffer_Release
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc
from libc.stdint cimport INT32_MAX, int16_t, int32_t, int64_t, uint8_t, uint16_t
from libc.string cimport memcpy, memset

from cython_mixer.g711 cimport (CODEC_PCMA, CODEC_PCMU, NOGIL_MIN_SAMPLES, codec_id, decode_frame,
                                decode_table, encode_frame, encode_table, get_codes, get_pcm,
                                pcm16)

__all__ = ["mix", "gain_q12", "MixMatrix", "GAIN_Q", "UNITY", "MAX_GAIN_DB", "MAX_SAMPLES",
           "FORMATS"]

#: Fractional bits of the fixed-point gains; UNITY is 0 dB.
GAIN_Q = 12
UNITY = 1 << GAIN_Q
#: The loudest gain accepted (15.85×; 32768 × its Q12 value still fits an int32).
MAX_GAIN_DB = 24.0
#: Largest frame a MixMatrix accepts (8 s at 8 kHz): a bound for its preallocated buffers.
MAX_SAMPLES = 65536
#: Frame formats of MixMatrix inputs and outputs: linear int16 and the two G.711 laws.
FORMATS = ("linear", "PCMU", "PCMA")

cdef enum:
    LINEAR = 2            # frame format id beside CODEC_PCMU/CODEC_PCMA
    Q = 12
    Q_UNITY = 4096
    Q_HALF = 2048

cdef const int16_t* _DEC[2]
cdef const uint8_t* _ENC[2]
_DEC[CODEC_PCMU] = decode_table(CODEC_PCMU)
_DEC[CODEC_PCMA] = decode_table(CODEC_PCMA)
_ENC[CODEC_PCMU] = encode_table(CODEC_PCMU)
_ENC[CODEC_PCMA] = encode_table(CODEC_PCMA)

ctypedef fused acc_t:
    int32_t
    int64_t


def gain_q12(db) -> int:
    """The Q12 multiplier used for a gain in dB (0 for None or -inf); ValueError if invalid."""
    return _q12(db)


cdef int32_t _q12(object db) except -1:
    if db is None:
        return 0
    if not isinstance(db, numbers.Real):
        raise ValueError(f"gain must be a number of dB or None, got {db!r}")
    x = float(db)
    if math.isnan(x):
        raise ValueError("gain is NaN dB")
    if x == -math.inf:
        return 0
    if x > MAX_GAIN_DB:
        raise ValueError(f"gain {x} dB is above the {MAX_GAIN_DB} dB limit")
    return int(round(UNITY * 10.0 ** (x / 20.0)))


cdef int _format_id(object name) except -1:
    if name == "linear":
        return LINEAR
    try:
        return codec_id(name)
    except ValueError:
        raise ValueError(f"unknown frame format {name!r}; expected one of {FORMATS}") from None


# --- kernels (nogil) ---------------------------------------------------------------------------

cdef extern from *:
    """
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #elif defined(__ARM_NEON)
    #include <arm_neon.h>
    #endif
    /* out = clamp(a + b) over int16 frames: one saturating add (SSE2 paddsw, NEON sqadd) per
       8 samples, which is exactly the int32 sum clamped once. Loads may be unaligned. */
    static void earshot_sat_add16(const earshot_pcm16 *a, const earshot_pcm16 *b,
                                  int16_t *out, Py_ssize_t n) {
        Py_ssize_t k = 0;
    #if defined(__SSE2__)
        for (; k + 8 <= n; k += 8)
            _mm_storeu_si128((__m128i *)(void *)(out + k), _mm_adds_epi16(
                _mm_loadu_si128((const __m128i *)(const void *)(a + k)),
                _mm_loadu_si128((const __m128i *)(const void *)(b + k))));
    #elif defined(__ARM_NEON)
        for (; k + 8 <= n; k += 8)
            vst1q_u8((uint8_t *)(void *)(out + k), vreinterpretq_u8_s16(vqaddq_s16(
                vreinterpretq_s16_u8(vld1q_u8((const uint8_t *)(const void *)(a + k))),
                vreinterpretq_s16_u8(vld1q_u8((const uint8_t *)(const void *)(b + k))))));
    #endif
        for (; k < n; k++) {
            int32_t v = (int32_t)a[k] + b[k];
            out[k] = (int16_t)(v > 32767 ? 32767 : (v < -32768 ? -32768 : v));
        }
    }
    """
    void _sat_add16 "earshot_sat_add16"(const pcm16* a, const pcm16* b, int16_t* out,
                                        Py_ssize_t n) noexcept nogil


cdef inline int32_t _sat(int32_t v) noexcept nogil:
    return 32767 if v > 32767 else (-32768 if v < -32768 else v)


cdef void _weighted(const pcm16** src, const int32_t* g, Py_ssize_t m, Py_ssize_t n, acc_t* acc,
                    int16_t* out) noexcept nogil:
    cdef Py_ssize_t i, k
    cdef const pcm16* s = src[0]
    cdef acc_t gi = g[0]
    cdef acc_t v
    for k in range(n):
        acc[k] = s[k] * gi
    for i in range(1, m):
        s = src[i]
        gi = g[i]
        for k in range(n):
            acc[k] += s[k] * gi
    for k in range(n):
        v = (acc[k] + Q_HALF) >> Q
        out[k] = <int16_t>(32767 if v > 32767 else (-32768 if v < -32768 else v))


cdef void _mix_column(const pcm16** src, const int32_t* g, Py_ssize_t m, Py_ssize_t n,
                      void* acc, int16_t* out) noexcept nogil:
    """out = the clamped, gain-weighted sum of m input frames (every gain non-zero)."""
    cdef Py_ssize_t i, k
    cdef int64_t gsum = 0
    cdef bint unity = True
    cdef const pcm16* a
    cdef int32_t* acc32 = <int32_t*>acc
    for i in range(m):
        gsum += g[i]
        unity = unity and g[i] == Q_UNITY
    if m == 0:
        memset(out, 0, n * sizeof(int16_t))
    elif unity and m == 1:
        memcpy(out, src[0], n * sizeof(int16_t))
    elif unity and m == 2:   # the listen mix (A + B) and a whisper (leg + spy)
        _sat_add16(src[0], src[1], out, n)
    elif unity:              # plain int32 sum: cannot overflow below 65,536 inputs
        a = src[0]
        for k in range(n):
            acc32[k] = a[k]
        for i in range(1, m):
            a = src[i]
            for k in range(n):
                acc32[k] += a[k]
        for k in range(n):
            out[k] = <int16_t>_sat(acc32[k])
    elif gsum * 32768 + Q_HALF <= INT32_MAX:
        _weighted(src, g, m, n, <int32_t*>acc, out)
    else:
        _weighted(src, g, m, n, <int64_t*>acc, out)


# --- mix() -------------------------------------------------------------------------------------

def mix(frames, gains_db=None) -> bytes:
    """Saturating sum of int16 frames of equal length, each at its gain in dB (default 0 dB).

    A frame may be None (silence), but at least one must be present to give the length."""
    cdef Py_ssize_t nin = len(frames)
    cdef Py_ssize_t i, m = 0, n = -1, cnt
    if nin == 0:
        raise ValueError("mix() needs at least one frame")
    if gains_db is not None and len(gains_db) != nin:
        raise ValueError(f"{len(gains_db)} gains for {nin} frames")
    # validate every gain before touching any buffer
    gains = [Q_UNITY] * nin if gains_db is None else [_q12(db) for db in gains_db]
    cdef Py_buffer* views = <Py_buffer*>PyMem_Calloc(nin, sizeof(Py_buffer))
    cdef const pcm16** src = <const pcm16**>PyMem_Malloc(nin * sizeof(pcm16*))
    cdef int32_t* g = <int32_t*>PyMem_Malloc(nin * sizeof(int32_t))
    cdef void* acc = NULL
    cdef int16_t* dst
    cdef Py_ssize_t held = 0
    cdef bytes out
    if views == NULL or src == NULL or g == NULL:
        PyMem_Free(views); PyMem_Free(src); PyMem_Free(g)
        raise MemoryError()
    try:
        for i in range(nin):
            f = frames[i]
            if f is None:
                continue
            cnt = get_pcm(f, &views[held], False, "frame", i)
            held += 1
            if n < 0:
                n = cnt
            elif cnt != n:
                raise ValueError(f"frame {i} has {cnt} samples, earlier frames {n}")
            if gains[i] != 0:
                src[m] = <const pcm16*>views[held - 1].buf
                g[m] = gains[i]
                m += 1
        if n < 0:
            raise ValueError("every frame is None: no frame length")
        out = PyBytes_FromStringAndSize(NULL, 2 * n)
        acc = PyMem_Malloc(max(n, 1) * sizeof(int64_t))
        if acc == NULL:
            raise MemoryError()
        dst = <int16_t*>PyBytes_AS_STRING(out)
        if n * nin >= NOGIL_MIN_SAMPLES:
            with nogil:
                _mix_column(src, g, m, n, acc, dst)
        else:
            _mix_column(src, g, m, n, acc, dst)
    finally:
        for i in range(held):
            PyBuffer_Release(&views[i])
        PyMem_Free(views); PyMem_Free(src); PyMem_Free(g); PyMem_Free(acc)
    return out


# --- MixMatrix ---------------------------------------------------------------------------------

cdef class MixMatrix:
    """K input frames -> M output frames each tick, every output a gain-weighted mix of inputs.

    Gains start muted. Input and output formats are "linear" (native int16 PCM, 2 bytes a sample),
    "PCMU" or "PCMA" (one code a sample). process() writes the outputs into buffers the matrix
    owns and returns read-only views of them: they are overwritten by the next process() call,
    so copy what must outlive it. One owner at a time: not for concurrent use from threads.
    """
    cdef readonly Py_ssize_t inputs, outputs, samples
    cdef int* _in_fmt
    cdef int* _out_fmt
    cdef int32_t* _gain          # Q12, [j * inputs + i]: input i heard in output j
    cdef double* _db             # as set, for gain_db()
    cdef bint* _used             # input i is heard in some output
    cdef Py_buffer* _views
    cdef bint* _held
    cdef const pcm16** _lin      # this tick's linear input frames (NULL = silent)
    cdef const pcm16** _col_src
    cdef int32_t* _col_g
    cdef int16_t* _decoded       # inputs * samples: decoded G.711 input frames
    cdef void* _acc              # samples int64: accumulator
    cdef int16_t* _mixed         # samples: a G.711 output before encoding
    cdef char** _out_buf
    cdef list _out_arrays
    cdef list _out_views
    cdef bint _busy

    def __cinit__(self, int inputs, int outputs, int samples=160, input_codecs=None,
                  output_codecs=None):
        if inputs < 1 or outputs < 1:
            raise ValueError(f"need at least one input and one output, got {inputs}×{outputs}")
        if not 1 <= samples <= MAX_SAMPLES:
            raise ValueError(f"samples must be 1..{MAX_SAMPLES}, got {samples}")
        self.inputs, self.outputs, self.samples = inputs, outputs, samples
        cdef Py_ssize_t k = inputs, m = outputs, n = samples
        self._in_fmt = <int*>PyMem_Calloc(k, sizeof(int))
        self._out_fmt = <int*>PyMem_Calloc(m, sizeof(int))
        self._gain = <int32_t*>PyMem_Calloc(k * m, sizeof(int32_t))
        self._db = <double*>PyMem_Calloc(k * m, sizeof(double))
        self._used = <bint*>PyMem_Calloc(k, sizeof(bint))
        self._views = <Py_buffer*>PyMem_Calloc(k, sizeof(Py_buffer))
        self._held = <bint*>PyMem_Calloc(k, sizeof(bint))
        self._lin = <const pcm16**>PyMem_Calloc(k, sizeof(pcm16*))
        self._col_src = <const pcm16**>PyMem_Calloc(k, sizeof(pcm16*))
        self._col_g = <int32_t*>PyMem_Calloc(k, sizeof(int32_t))
        self._decoded = <int16_t*>PyMem_Calloc(k * n, sizeof(int16_t))
        self._acc = PyMem_Calloc(n, sizeof(int64_t))
        self._mixed = <int16_t*>PyMem_Calloc(n, sizeof(int16_t))
        self._out_buf = <char**>PyMem_Calloc(m, sizeof(char*))
        if (self._in_fmt == NULL or self._out_fmt == NULL or self._gain == NULL or self._db == NULL
                or self._used == NULL or self._views == NULL or self._held == NULL
                or self._lin == NULL or self._col_src == NULL or self._col_g == NULL
                or self._decoded == NULL or self._acc == NULL or self._mixed == NULL
                or self._out_buf == NULL):
            raise MemoryError()
        cdef Py_ssize_t i
        for i in range(k * m):
            self._db[i] = -math.inf
        if input_codecs is not None and len(input_codecs) != k:
            raise ValueError(f"{len(input_codecs)} input formats for {k} inputs")
        if output_codecs is not None and len(output_codecs) != m:
            raise ValueError(f"{len(output_codecs)} output formats for {m} outputs")
        for i in range(k):
            self._in_fmt[i] = LINEAR if input_codecs is None else _format_id(input_codecs[i])
        self._out_arrays = [None] * m
        self._out_views = [None] * m
        for i in range(m):
            self._set_out_fmt(i, LINEAR if output_codecs is None else _format_id(output_codecs[i]))

    def __dealloc__(self):
        PyMem_Free(self._in_fmt); PyMem_Free(self._out_fmt); PyMem_Free(self._gain)
        PyMem_Free(self._db); PyMem_Free(self._used); PyMem_Free(self._views)
        PyMem_Free(self._held); PyMem_Free(self._lin); PyMem_Free(self._col_src)
        PyMem_Free(self._col_g); PyMem_Free(self._decoded); PyMem_Free(self._acc)
        PyMem_Free(self._mixed)
        PyMem_Free(self._out_buf)

    cdef int _set_out_fmt(self, Py_ssize_t j, int fmt) except -1:
        arr = bytearray(self.samples * (2 if fmt == LINEAR else 1))
        self._out_fmt[j] = fmt
        self._out_arrays[j] = arr
        self._out_views[j] = memoryview(arr).toreadonly()   # pins arr: it can never be resized
        self._out_buf[j] = PyByteArray_AS_STRING(arr)
        return 0

    cdef int _check(self, i, j) except -1:
        if self._busy:
            raise RuntimeError("MixMatrix changed while process() runs")
        if not (isinstance(i, numbers.Integral) and 0 <= i < self.inputs):
            raise ValueError(f"input index {i!r} not in 0..{self.inputs - 1}")
        if not (isinstance(j, numbers.Integral) and 0 <= j < self.outputs):
            raise ValueError(f"output index {j!r} not in 0..{self.outputs - 1}")
        return 0

    cdef void _update_used(self) noexcept:
        cdef Py_ssize_t i, j
        for i in range(self.inputs):
            self._used[i] = False
            for j in range(self.outputs):
                if self._gain[j * self.inputs + i] != 0:
                    self._used[i] = True

    def set_gain(self, i, j, db) -> None:
        """Input i is heard in output j at db dB (None or -inf: muted)."""
        self._check(i, j)
        cdef int32_t g = _q12(db)
        cdef Py_ssize_t at = <Py_ssize_t>j * self.inputs + <Py_ssize_t>i
        self._gain[at] = g
        self._db[at] = -math.inf if db is None else float(db)
        self._update_used()

    def mute(self, i, j) -> None:
        """Input i is not heard in output j."""
        self.set_gain(i, j, None)

    def gain_db(self, i, j) -> float:
        """The gain of input i in output j as set (-inf when muted)."""
        self._check(i, j)
        return self._db[<Py_ssize_t>j * self.inputs + <Py_ssize_t>i]

    @property
    def input_codecs(self) -> tuple:
        return tuple(FORMATS[0 if f == LINEAR else 1 + f] for f in self._in_fmt[:self.inputs])

    @property
    def output_codecs(self) -> tuple:
        return tuple(FORMATS[0 if f == LINEAR else 1 + f] for f in self._out_fmt[:self.outputs])

    def set_input_codec(self, i, codec: str) -> None:
        """Frames for input i are now "linear", "PCMU" or "PCMA"."""
        self._check(i, 0)
        self._in_fmt[<Py_ssize_t>i] = _format_id(codec)

    def set_output_codec(self, j, codec: str) -> None:
        """Output j is now "linear", "PCMU" or "PCMA" (earlier views keep the old buffer)."""
        self._check(0, j)
        self._set_out_fmt(j, _format_id(codec))

    def process(self, frames) -> list:
        """Mix one tick: frames[i] is input i (None: silence); returns one view per output."""
        cdef Py_ssize_t i, j, k = self.inputs, n = self.samples, cnt
        cdef list out
        if self._busy:
            raise RuntimeError("MixMatrix.process() re-entered")
        if len(frames) != k:
            raise ValueError(f"{len(frames)} frames for {k} inputs")
        try:
            for i in range(k):
                f = frames[i]
                if f is None:
                    continue
                if self._in_fmt[i] == LINEAR:
                    cnt = get_pcm(f, &self._views[i], False, "input", i)
                else:
                    cnt = get_codes(f, &self._views[i], False, "input", i)
                self._held[i] = True
                if cnt != n:
                    raise ValueError(f"input {i} has {cnt} samples, the matrix takes {n}")
            self._busy = True
            if n * (k + self.outputs) >= NOGIL_MIN_SAMPLES:
                with nogil:
                    self._run()
            else:
                self._run()
        finally:
            self._busy = False
            for i in range(k):
                if self._held[i]:
                    PyBuffer_Release(&self._views[i])
                    self._held[i] = False
        out = PyList_New(self.outputs)
        for j in range(self.outputs):
            view = self._out_views[j]
            Py_INCREF(view)           # PyList_SET_ITEM steals a reference
            PyList_SET_ITEM(out, j, view)
        return out

    cdef void _run(self) noexcept nogil:
        cdef Py_ssize_t i, j, m, k = self.inputs, n = self.samples
        cdef int fmt
        cdef int32_t g
        cdef int16_t* dec
        for i in range(k):
            fmt = self._in_fmt[i]
            if not self._held[i] or not self._used[i]:
                self._lin[i] = NULL
            elif fmt == LINEAR:
                self._lin[i] = <const pcm16*>self._views[i].buf
            else:
                dec = self._decoded + i * n
                decode_frame(_DEC[fmt], <const uint8_t*>self._views[i].buf, <pcm16*>dec, n)
                self._lin[i] = <const pcm16*>dec
        for j in range(self.outputs):
            m = 0
            for i in range(k):
                g = self._gain[j * k + i]
                if g != 0 and self._lin[i] != NULL:
                    self._col_src[m] = self._lin[i]
                    self._col_g[m] = g
                    m += 1
            fmt = self._out_fmt[j]
            if fmt == LINEAR:
                _mix_column(self._col_src, self._col_g, m, n, self._acc, <int16_t*>self._out_buf[j])
            else:   # mix into scratch, then one encode pass (keeps the mix loop vectorisable)
                _mix_column(self._col_src, self._col_g, m, n, self._acc, self._mixed)
                encode_frame(_ENC[fmt], <const pcm16*>self._mixed, <uint8_t*>self._out_buf[j], n)


# --- the C floor, for the benchmark -------------------------------------------------------------

from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

cdef uint8_t* _floor_out = NULL   # module-visible, so the compiler must really write every frame


def _bench_c_floor(a_codes, b_codes, str codec="PCMU", Py_ssize_t frames=20000) -> float:
    """The listen step (decode two legs, saturating add, encode) as a plain C loop over whole
    frames, timed inside C: the floor a Python-callable mix can approach. Returns µs per frame.
    Benchmark use only (``tests/bench/bench_mix.py`` prints cython_mixer's ratio to it)."""
    cdef Py_buffer va, vb
    cdef Py_ssize_t n = get_codes(a_codes, &va, False, "a_codes")
    cdef Py_ssize_t m
    cdef int c = codec_id(codec)
    cdef const int16_t* dec = decode_table(c)
    cdef const uint8_t* enc = encode_table(c)
    cdef const uint8_t* a
    cdef const uint8_t* b
    cdef uint8_t* out
    cdef timespec t0, t1
    cdef Py_ssize_t r, k, f, nf
    cdef int32_t v
    try:
        m = get_codes(b_codes, &vb, False, "b_codes")
        try:
            if m != n or n % 160 or n == 0:
                raise ValueError("a_codes and b_codes must be the same whole number of 160-code frames")
            nf = n // 160
            a = <const uint8_t*>va.buf
            b = <const uint8_t*>vb.buf
            global _floor_out
            PyMem_Free(_floor_out)
            _floor_out = <uint8_t*>PyMem_Malloc(n)
            if _floor_out == NULL:
                raise MemoryError()
            out = _floor_out
            with nogil:
                clock_gettime(CLOCK_MONOTONIC, &t0)
                for r in range(frames):
                    f = (r % nf) * 160
                    for k in range(160):
                        v = <int32_t>dec[a[f + k]] + dec[b[f + k]]
                        if v > 32767:
                            v = 32767
                        elif v < -32768:
                            v = -32768
                        out[f + k] = enc[(<uint16_t>(<int16_t>v)) >> 2]
                clock_gettime(CLOCK_MONOTONIC, &t1)
        finally:
            PyBuffer_Release(&vb)
    finally:
        PyBuffer_Release(&va)
    ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)
    return ns / frames / 1000.0
