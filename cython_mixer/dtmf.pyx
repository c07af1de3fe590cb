# cython: annotation_typing=False
"""In-band DTMF detection: libspandsp's ``dtmf_rx`` (Debian 0.0.6 API) behind Q.24 checks.

Pipeline per frame, all in C: a DC blocker (first-order high-pass, -3 dB at 13 Hz, +0.04 dB at
697 Hz; on by default because spandsp is not DC tolerant and a USB handset's ADC may carry an
offset: 2000 LSB of DC already hides every digit; it does not remove mains hum) ->
spandsp ``dtmf_rx`` fed in chunks cut at its 102-sample block boundaries -> at each boundary,
the digits spandsp declared are confirmed by our own checks before ``feed`` returns them:

* frequency: each tone of the pair is re-measured on the two blocks spandsp matched (Hann
  window per block, Goertzel grid of 1 % steps, log-parabolic peak) and must be within
  +-2.5 % of nominal, so Q.24's "reject at 3.5 %" holds for the low group too (spandsp alone
  takes some low-group tones at 3.5 %);
* duration: the pair must hold at least half the energy of a sliding 32-sample window, at no
  less than a quarter of its peak power, for 25 ms (dips up to 6 ms ridden over), so tones
  under 23 ms are rejected at every block alignment (spandsp alone accepts some 21-23 ms
  tones). This can delay a digit by up to one block (12.75 ms) after spandsp's decision.

spandsp's twist limits are set to 10 dB (low group louder) and 5 dB (high group louder): it
compares single rectangular-window Goertzel bins, where the louder tone's leakage moves the
measured twist by about +-1.5 dB from block to block, so at its own 8/4 dB only about half of
Q.24's +4/-8 dB digits passed. Known limits, both in spandsp's fixed tests: with the low group
8 dB louder, '0' is missed at ~12 % of block alignments (941 Hz leaks into the 1209 Hz bin and
fails the 8 dB relative-peak test); with BOTH groups off by 1.5 % a few digits (mostly the
1633 Hz column) fail the 82 % energy test. Each group alone at +-1.5 % is always accepted.
"""
import sys

from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.math cimport cos, log, pi, sin, sqrt
from libc.stdint cimport int16_t, int64_t
from libc.string cimport memcpy
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from cython_mixer.g711 cimport get_pcm, pcm16, sat16

cdef extern from "spandsp.h" nogil:
    ctypedef struct dtmf_rx_state_t:
        pass
    ctypedef void (*digits_rx_callback_t)(void *user_data, const char *digits, int len)
    dtmf_rx_state_t *dtmf_rx_init(dtmf_rx_state_t *s, digits_rx_callback_t callback, void *user_data)
    int dtmf_rx_free(dtmf_rx_state_t *s)
    int dtmf_rx(dtmf_rx_state_t *s, const int16_t *amp, int samples)
    size_t dtmf_rx_get(dtmf_rx_state_t *s, char *digits, int max)
    int dtmf_rx_status(dtmf_rx_state_t *s)
    # 0.0.6: int dB arguments (floats in spandsp master)
    void dtmf_rx_parms(dtmf_rx_state_t *s, int filter_dialtone, int twist, int reverse_twist, int threshold)


cdef enum:
    BLOCK = 102             # spandsp's DTMF_SAMPLES_PER_BLOCK
    HIST = 512              # ring of detector input kept for the checks (power of two)
    CHECK_N = 2 * BLOCK     # the two blocks whose hits declared the digit
    ENV_WIN = 32            # envelope window, samples
    MIN_ON = 200            # 25 ms: required tone-on time (Q.24: reject < 23 ms, accept >= 40 ms)
    BRIDGE = 48             # a dip of up to 6 ms (key bounce, a lost sample run) does not end a run
    GRID = 13               # frequency grid points, -6 % .. +6 % in 1 % steps
    MAX_DIGITS = 128        # spandsp's MAX_DTMF_DIGITS
    NOGIL_MIN_SAMPLES = 2048  # as cython_mixer/g711.pxd: a 20 ms frame is cheaper than a GIL hand-off
    SAMPLE_RATE = 8000
    TWIST_DB = 10           # accepted twist, low group louder
    REVERSE_TWIST_DB = 5    # accepted twist, high group louder

cdef double GRID_STEP = 0.01
cdef double FREQ_TOL = 0.025
cdef double HP_POLE = 0.99  # DC blocker y = x - x1 + R*y1: -3 dB at ~13 Hz, +0.04 dB at 697 Hz

#: The only rate spandsp's detector works at; resample other legs first.
RATE = 8000

cdef const char *_KEYS = b"123A456B789C*0#D"
cdef double _ROW[4]
cdef double _COL[4]
_ROW[:] = [697.0, 770.0, 852.0, 941.0]
_COL[:] = [1209.0, 1336.0, 1477.0, 1633.0]
cdef double _HANN[BLOCK]
cdef int _i
for _i in range(BLOCK):
    _HANN[_i] = 0.5 - 0.5 * cos(2.0 * pi * (_i + 0.5) / BLOCK)




cdef Py_ssize_t _get_pcm(object obj, Py_buffer *view, bint writable) except -1:
    """Acquire obj as native int16 PCM (g711's shared checks); anything unusable is a ValueError.
    Returns the sample count; the caller must PyBuffer_Release(view)."""
    try:
        return get_pcm(obj, view, writable, "frame")
    except TypeError as exc:
        raise ValueError(f"frame must be a bytes-like int16 buffer ({exc})") from None


cdef double _grid_peak(const double *xw, double nominal) noexcept nogil:
    """Relative deviation of the strongest tone near ``nominal`` in two windowed blocks.

    The blocks' Goertzel powers on a +-6 % grid are summed (a phase jump between the blocks,
    e.g. key bounce, does no harm), and the peak refined by a log-parabola. Returns +-1 when
    the peak is at the grid's edge (further off than the grid reaches).
    """
    cdef double p[GRID]
    cdef double w, coeff, s0, s1, s2, d
    cdef int g, n, b, best = 0
    for g in range(GRID):
        w = 2.0 * pi * nominal * (1.0 + (g - GRID // 2) * GRID_STEP) / SAMPLE_RATE
        coeff = 2.0 * cos(w)
        p[g] = 1e-9
        for b in range(2):
            s1 = 0.0
            s2 = 0.0
            for n in range(b * BLOCK, (b + 1) * BLOCK):
                s0 = xw[n] + coeff * s1 - s2
                s2 = s1
                s1 = s0
            p[g] += s1 * s1 + s2 * s2 - coeff * s1 * s2
        if p[g] > p[best]:
            best = g
    if best == 0 or best == GRID - 1:
        return -1.0 if best == 0 else 1.0
    cdef double a = log(p[best - 1]), c = log(p[best + 1])
    d = a - 2.0 * log(p[best]) + c
    cdef double frac = 0.5 * (a - c) / d if d < 0.0 else 0.0
    return ((best - GRID // 2) + frac) * GRID_STEP


cdef inline int _key_pos(char digit) noexcept nogil:
    """Index of digit in _KEYS (row * 4 + column), -1 if none."""
    cdef int pos
    for pos in range(16):
        if _KEYS[pos] == digit:
            return pos
    return -1


cdef struct Slide:
    # sliding DFT bin over the last ENV_WIN samples, phase referred to the analysis start
    double re, im           # the bin
    double zr, zi           # e^{-jw(q - first)} for the next sample q
    double c, s             # cos w, sin w (rotation by e^{-jw} per sample)
    double br, bi           # e^{+jw ENV_WIN}: turns z back to the outgoing sample's phasor


cdef void _slide_init(Slide *b, double freq) noexcept nogil:
    cdef double w = 2.0 * pi * freq / SAMPLE_RATE
    b.re = 0.0
    b.im = 0.0
    b.zr = 1.0
    b.zi = 0.0
    b.c = cos(w)
    b.s = sin(w)
    b.br = cos(w * ENV_WIN)
    b.bi = sin(w * ENV_WIN)


cdef inline void _slide_step(Slide *b, double x, double old) noexcept nogil:
    """Add x at phasor z, remove the sample ENV_WIN back (phasor z * e^{jw ENV_WIN})."""
    cdef double orr = b.zr * b.br - b.zi * b.bi, oi = b.zr * b.bi + b.zi * b.br, zr
    b.re += x * b.zr - old * orr
    b.im += x * b.zi - old * oi
    zr = b.zr
    b.zr = zr * b.c + b.zi * b.s          # z *= e^{-jw}
    b.zi = b.zi * b.c - zr * b.s


cdef inline double _slide_power(Slide *b) noexcept nogil:
    return b.re * b.re + b.im * b.im


cdef void _slide_renorm(Slide *b) noexcept nogil:
    cdef double m = sqrt(b.zr * b.zr + b.zi * b.zi)
    b.zr /= m
    b.zi /= m


cdef class DtmfDetector:
    """DTMF digits from 8 kHz int16 frames, Q.24-checked (see the module docstring).

    ``highpass`` (default on) removes DC before the detector. ``q24_checks=False`` gives
    spandsp's plain decisions (with the 10/5 dB twist limits). Digits are reported once, at
    their start (27-40 ms into the tone); ``active`` tells while the digit is still held.
    """
    cdef dtmf_rx_state_t *_rx
    cdef readonly bint highpass
    cdef readonly bint q24_checks
    cdef double _hp_x1, _hp_y1
    cdef int16_t _hist[HIST]
    cdef int16_t _chunk[BLOCK]
    cdef int64_t _n                 # samples fed since reset: absolute index of the next one
    cdef int _block_pos
    cdef char _pending              # declared by spandsp, not yet confirmed
    # Tone-on tracking for the pending digit: a sliding 32-sample DFT at its two nominal
    # frequencies gives, per window end p, the pair's power tp[p] and the window energy en[p].
    cdef Slide _row, _col
    cdef double _energy             # sum of squares in the current window
    cdef int64_t _ana_first         # first sample of the analysis
    cdef int64_t _ana_next          # next sample to slide in
    cdef double _tp[HIST]
    cdef double _en[HIST]
    cdef double _ref                # the pair's peak power over the declaring blocks
    cdef int64_t _scan_pos          # next window end to examine
    cdef int64_t _run_start         # first window end of the current tone-on run, -1: none
    cdef int64_t _run_deadline      # a run must start by the boundary that declared the digit
    cdef int _below                 # window ends not "on" since the run's last "on"
    cdef char _active               # confirmed digit spandsp still hears
    cdef char *_out
    cdef Py_ssize_t _out_cap

    def __cinit__(self, rate=RATE, *, highpass=True, q24_checks=True):
        if type(rate) is bool or rate != RATE:
            raise ValueError(f"DtmfDetector works at {RATE} Hz only, got rate={rate!r}; resample first")
        self._rx = dtmf_rx_init(NULL, NULL, NULL)
        self._out_cap = 64
        self._out = <char *>PyMem_Malloc(self._out_cap)
        if self._rx == NULL or self._out == NULL:
            raise MemoryError()
        self.highpass = highpass
        self.q24_checks = q24_checks
        self._reset_state()

    def __dealloc__(self):
        if self._rx != NULL:
            dtmf_rx_free(self._rx)
        PyMem_Free(self._out)

    cdef void _reset_state(self) noexcept nogil:
        dtmf_rx_init(self._rx, NULL, NULL)     # re-initialises the state in place
        dtmf_rx_parms(self._rx, 0, TWIST_DB, REVERSE_TWIST_DB, -99)
        self._hp_x1 = 0.0
        self._hp_y1 = 0.0
        self._n = 0
        self._block_pos = 0
        self._pending = 0
        self._active = 0

    def reset(self) -> None:
        """Forget all state, as if newly made (e.g. when the leg changes)."""
        self._reset_state()

    @property
    def active(self) -> str:
        """The confirmed digit whose tone is still present, else ''."""
        return chr(self._active) if self._active else ""

    def feed(self, frame) -> str:
        """Process one frame (any whole number of samples); return the digits confirmed in it."""
        cdef Py_buffer view
        cdef Py_ssize_t n = _get_pcm(frame, &view, False), got
        cdef Py_ssize_t need = n // BLOCK + 2
        cdef char *grown
        try:
            if need > self._out_cap:
                grown = <char *>PyMem_Realloc(self._out, need)
                if grown == NULL:
                    raise MemoryError()
                self._out = grown
                self._out_cap = need
            if n >= NOGIL_MIN_SAMPLES:
                with nogil:
                    got = self._process(<const pcm16 *>view.buf, n)
            else:
                got = self._process(<const pcm16 *>view.buf, n)
        finally:
            PyBuffer_Release(&view)
        return self._out[:got].decode("ascii")

    cdef Py_ssize_t _process(self, const pcm16 *x, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t i = 0, take, k, got = 0
        cdef double xin, x1, y1, y0, ya, yb, d0, d1, d2, d3
        cdef double pole = HP_POLE, pole2 = HP_POLE * HP_POLE
        cdef double pole3 = pole2 * HP_POLE, pole4 = pole2 * pole2
        cdef int16_t *chunk = self._chunk
        cdef int16_t *hist = self._hist
        cdef int64_t at
        while i < n:
            take = min(n - i, BLOCK - self._block_pos)
            if self.highpass:
                x1 = self._hp_x1
                y1 = self._hp_y1
                k = 0
                while k + 4 <= take:    # four outputs from one y1: a quarter of the recurrence
                    d0 = x[i + k] - x1
                    d1 = x[i + k + 1] - x[i + k]
                    d2 = x[i + k + 2] - x[i + k + 1]
                    d3 = x[i + k + 3] - x[i + k + 2]
                    x1 = x[i + k + 3]
                    y0 = d0 + pole * y1
                    ya = d1 + pole * d0 + pole2 * y1
                    yb = d2 + pole * d1 + pole2 * d0 + pole3 * y1
                    y1 = d3 + pole * d2 + pole2 * d1 + pole3 * d0 + pole4 * y1
                    chunk[k] = sat16(y0)
                    chunk[k + 1] = sat16(ya)
                    chunk[k + 2] = sat16(yb)
                    chunk[k + 3] = sat16(y1)
                    k += 4
                while k < take:
                    xin = x[i + k]
                    y1 = xin - x1 + pole * y1
                    x1 = xin
                    chunk[k] = sat16(y1)
                    k += 1
                self._hp_x1 = x1
                self._hp_y1 = y1
            else:
                memcpy(chunk, x + i, take * sizeof(int16_t))     # x may be unaligned
            at = self._n & (HIST - 1)                            # keep what spandsp saw
            k = min(take, HIST - at)
            memcpy(hist + at, chunk, k * sizeof(int16_t))
            memcpy(hist, chunk + k, (take - k) * sizeof(int16_t))
            dtmf_rx(self._rx, chunk, <int>take)
            self._n += take
            self._block_pos += take
            i += take
            if self._block_pos == BLOCK:
                self._block_pos = 0
                got = self._boundary(got)
        return got

    cdef Py_ssize_t _boundary(self, Py_ssize_t got) noexcept nogil:
        """At the end of a spandsp block: collect, check and emit digits into _out[got:]."""
        cdef char digits[MAX_DIGITS + 1]
        cdef size_t k, count = dtmf_rx_get(self._rx, digits, MAX_DIGITS)
        cdef int status = dtmf_rx_status(self._rx), pos
        if self._active and status != self._active:
            self._active = 0
        if not self.q24_checks:
            for k in range(count):
                self._out[got] = digits[k]
                got += 1
            if count:
                self._active = digits[count - 1]
            return got
        if self._pending and status != self._pending:
            self._pending = 0                  # spandsp's digit ended before it was confirmed
        if count:
            self._pending = 0
            pos = _key_pos(digits[count - 1])  # at most one digit per block in practice
            if pos >= 0 and self._check_frequency(pos):
                self._pending = digits[count - 1]
                self._start_envelope(pos)
        if self._pending and self._envelope_confirms():
            self._out[got] = self._pending
            got += 1
            self._active = self._pending
            self._pending = 0
        return got

    cdef bint _check_frequency(self, int pos) noexcept nogil:
        """Both tones of the digit at table ``pos`` within FREQ_TOL over the last two blocks."""
        cdef double xw[CHECK_N]
        cdef int n
        cdef int64_t first = self._n - CHECK_N
        for n in range(CHECK_N):
            xw[n] = _HANN[n % BLOCK] * self._hist[(first + n) & (HIST - 1)] if first + n >= 0 else 0.0
        return (abs(_grid_peak(xw, _ROW[pos // 4])) <= FREQ_TOL
                and abs(_grid_peak(xw, _COL[pos % 4])) <= FREQ_TOL)

    cdef void _start_envelope(self, int pos) noexcept nogil:
        """Set up tone-on tracking for the digit at table position ``pos``: analyse the ring,
        take the pair's peak power over the declaring blocks and trace its run back."""
        cdef int64_t p, anchor, lo
        cdef int below = 0
        _slide_init(&self._row, _ROW[pos // 4])
        _slide_init(&self._col, _COL[pos % 4])
        self._energy = 0.0
        self._ana_first = self._n - HIST if self._n > HIST else 0
        self._ana_next = self._ana_first
        self._advance()
        lo = self._ana_first + ENV_WIN - 1
        p = self._n - CHECK_N + ENV_WIN - 1
        if p < lo:
            p = lo
        anchor = p
        for p in range(p, self._n):
            if self._tp[p & (HIST - 1)] > self._tp[anchor & (HIST - 1)]:
                anchor = p
        self._ref = self._tp[anchor & (HIST - 1)]
        self._run_start = anchor
        p = anchor - 1
        while p >= lo and below <= BRIDGE:       # back to the start, riding over short dips
            if self._on(p):
                self._run_start = p
                below = 0
            else:
                below += 1
            p -= 1
        self._scan_pos = anchor + 1
        self._run_deadline = self._n
        self._below = 0

    cdef void _advance(self) noexcept nogil:
        """Slide the analysis over the samples fed since the last call."""
        cdef int64_t q
        cdef double x, old
        for q in range(self._ana_next, self._n):
            x = self._hist[q & (HIST - 1)]
            old = self._hist[(q - ENV_WIN) & (HIST - 1)] if q - ENV_WIN >= self._ana_first else 0.0
            self._energy += x * x - old * old
            _slide_step(&self._row, x, old)
            _slide_step(&self._col, x, old)
            if q >= self._ana_first + ENV_WIN - 1:
                self._tp[q & (HIST - 1)] = _slide_power(&self._row) + _slide_power(&self._col)
                self._en[q & (HIST - 1)] = self._energy
        self._ana_next = self._n
        _slide_renorm(&self._row)
        _slide_renorm(&self._col)

    cdef inline bint _on(self, int64_t p) noexcept nogil:
        """The pair dominates the window ending at p (>= half its energy; a pure pair gives
        tp = 16 * en for 32 samples) at no less than a quarter of its peak power."""
        cdef double tp = self._tp[p & (HIST - 1)], en = self._en[p & (HIST - 1)]
        return en > 0.0 and tp >= 0.25 * self._ref and tp >= 0.5 * (ENV_WIN / 2) * en

    cdef bint _envelope_confirms(self) noexcept nogil:
        """Advance tone-on tracking; True once a run (dips <= BRIDGE) reaches MIN_ON."""
        cdef int64_t p
        self._advance()
        if self._run_start >= 0 and self._scan_pos - self._run_start >= MIN_ON:
            return True
        for p in range(self._scan_pos, self._n):
            if self._on(p):
                if self._run_start < 0:
                    if p > self._run_deadline:   # later sound is not this digit's tone
                        break
                    self._run_start = p
                self._below = 0
                if p + 1 - self._run_start >= MIN_ON:
                    self._scan_pos = p + 1
                    return True
            elif self._run_start >= 0:
                self._below += 1
                if self._below > BRIDGE:
                    self._run_start = -1
                    self._below = 0
        self._scan_pos = self._n
        return False


def _bench_raw_spandsp(frames_buffer, n_frames: int) -> int:
    """Nanoseconds for spandsp alone (dtmf_rx + dtmf_rx_get per 160-sample frame), timed in C.

    ``frames_buffer`` holds ``n_frames`` contiguous 160-sample int16 frames. Benchmarks only.
    """
    cdef Py_buffer view
    cdef Py_ssize_t n = _get_pcm(frames_buffer, &view, False)
    cdef Py_ssize_t frames = n_frames, f
    cdef dtmf_rx_state_t *rx
    cdef char digits[MAX_DIGITS + 1]
    cdef timespec t0, t1
    cdef int16_t *aligned = NULL
    try:
        if frames < 0 or frames * 160 > n:
            raise ValueError(f"frames_buffer holds {n // 160} frames, asked for {n_frames}")
        aligned = <int16_t *>PyMem_Malloc(max(frames * 160, 1) * sizeof(int16_t))
        if aligned == NULL:
            raise MemoryError()
        rx = dtmf_rx_init(NULL, NULL, NULL)
        if rx == NULL:
            raise MemoryError()
        memcpy(aligned, view.buf, frames * 160 * sizeof(int16_t))
        dtmf_rx_parms(rx, 0, TWIST_DB, REVERSE_TWIST_DB, -99)
        with nogil:
            clock_gettime(CLOCK_MONOTONIC, &t0)
            for f in range(frames):
                dtmf_rx(rx, aligned + f * 160, 160)
                dtmf_rx_get(rx, digits, MAX_DIGITS)
            clock_gettime(CLOCK_MONOTONIC, &t1)
        dtmf_rx_free(rx)
    finally:
        PyMem_Free(aligned)
        PyBuffer_Release(&view)
    return (t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec)
