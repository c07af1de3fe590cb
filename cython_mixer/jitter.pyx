# cython: annotation_typing=False
"""RTP jitter buffer for one audio stream: reorder, de-duplicate, conceal loss, bound latency.

The network side calls ``put(seq, ts, payload, marker)`` for each RTP packet (one frame of
``frame_samples`` per packet); the media clock calls ``get()`` once per 20 ms tick and gets
``(payload, kind)``:

* ``FRAME``     the next frame in sequence order;
* ``CONCEALED`` the frame was lost, late or the buffer ran short: the last good payload again,
  at most ``max_conceal`` times in a row;
* ``SILENCE``   nothing to play (``None``): the caller plays silence;
* ``WAITING``   still filling to ``target`` frames after construction or ``reset()`` (``None``).

Playout starts when ``target`` frames are buffered and then holds about ``target`` frames, so a
frame waits target-1 to target ticks. Depth never exceeds ``max_depth``: a frame that would go
beyond it pushes out the oldest one (one per packet in a burst). Clock drift is corrected one
frame at a time: when the depth stays above target for a while one frame is dropped, when it
stays below one concealment frame is inserted; the buffer is never dumped. Sequence numbers
(16 bit) and timestamps (32 bit) wrap. A jump of more than ``jump`` frames (or the timestamp
equivalent) is a new stream: it is taken at once with the marker bit or into an empty buffer,
otherwise after the next packet confirms it (RFC 3550 A.1 style), so one stray packet cannot
flush good audio. On an SSRC change the caller calls ``reset()``.
"""
from enum import IntEnum

from libc.stdint cimport int32_t, int64_t, uint32_t
from libc.stdlib cimport free, malloc

import operator


class Put(IntEnum):
    """What ``put`` did with a packet."""
    ACCEPTED = 0    #: stored for playout
    DUPLICATE = 1   #: the same sequence number is already buffered: dropped
    LATE = 2        #: its playout time has passed: dropped
    RESET = 3       #: a new stream (jump, marker): the buffer restarted from this packet
    JUMP = 4        #: an unconfirmed jump: dropped until the next packet confirms it


class Kind(IntEnum):
    """What ``get`` returned."""
    FRAME = 0
    CONCEALED = 1
    SILENCE = 2
    WAITING = 3


ACCEPTED, DUPLICATE, LATE, RESET, JUMP = Put
FRAME, CONCEALED, SILENCE, WAITING = Kind

cdef object _ACCEPTED = Put.ACCEPTED, _DUPLICATE = Put.DUPLICATE, _LATE = Put.LATE
cdef object _RESET = Put.RESET, _JUMP = Put.JUMP
cdef object _FRAME = Kind.FRAME, _CONCEALED = Kind.CONCEALED, _SILENCE = Kind.SILENCE
cdef object _WAITING = Kind.WAITING

cdef enum:
    MAX_DEPTH_LIMIT = 256

cdef inline int64_t _s16(int64_t x) noexcept nogil:
    """x as a signed 16-bit difference (sequence arithmetic)."""
    return ((x + 32768) & 0xFFFF) - 32768


cdef int _int_in(object value, str what, int64_t lo, int64_t hi) except? -1:
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an int, got {value!r}") from None
    if not lo <= v <= hi:
        raise ValueError(f"{what} must be in {lo}..{hi}, got {v}")
    return 0


cdef class JitterBuffer:
    """Jitter buffer of RTP audio frames keyed by sequence number (see the module docstring)."""

    cdef readonly int frame_samples
    cdef readonly int target
    cdef readonly int max_depth
    cdef readonly object payload_size
    cdef readonly int max_conceal
    cdef readonly int drift_window
    cdef readonly int jump
    cdef Py_ssize_t _psize
    cdef int _mask
    cdef int64_t* _slot_seq          # extended sequence number held by each slot, -1 if empty
    cdef list _slot_payload
    cdef bint _anchored, _started, _refilling
    cdef int64_t _next               # extended sequence number of the next frame to play
    cdef int64_t _top                # highest buffered extended sequence number (if _count)
    cdef int _count
    cdef int64_t _ref_ext            # newest accepted packet, for timestamp checks
    cdef uint32_t _ref_ts
    cdef int _bad_seq                # RFC 3550-style probation: the seq that confirms a jump
    cdef object _last_good
    cdef int _conceal_run
    cdef int _above_run, _above_min, _below_run, _below_max
    cdef long long _received, _duplicates, _late, _lost, _concealed, _silence
    cdef long long _dropped_overflow, _drift_drops, _drift_inserts, _underruns, _resets, _jumps

    def __cinit__(self, *args, **kwargs):
        self._slot_seq = NULL

    def __init__(self, frame_samples: int = 160, target: int = 2, max_depth: int = 8,
                 payload_size: int | None = None, *, max_conceal: int = 2, drift_window: int = 50,
                 jump: int = 100) -> None:
        """``max_conceal``: repeats of the last frame before silence; ``drift_window``: ticks
        (divided by how far off target the depth is) before a drift correction; ``jump``: a
        sequence step of more frames than this starts a new stream."""
        _int_in(frame_samples, "frame_samples", 1, 48000)
        _int_in(max_depth, "max_depth", 1, MAX_DEPTH_LIMIT)
        _int_in(target, "target", 1, max_depth)
        _int_in(max_conceal, "max_conceal", 0, 1000)
        _int_in(drift_window, "drift_window", 1, 100000)
        _int_in(jump, "jump", max_depth + 1, 32767)
        if payload_size is not None:
            _int_in(payload_size, "payload_size", 1, 65535)
            self._psize = payload_size
            payload_size = int(payload_size)
        else:
            self._psize = -1
        self.frame_samples, self.target, self.max_depth = frame_samples, target, max_depth
        self.payload_size = payload_size
        self.max_conceal, self.drift_window, self.jump = max_conceal, drift_window, jump
        cdef int ring = 1
        while ring < max_depth:
            ring <<= 1
        self._mask = ring - 1
        free(self._slot_seq)
        self._slot_seq = <int64_t*>malloc(ring * sizeof(int64_t))
        if self._slot_seq == NULL:
            raise MemoryError()
        self._slot_payload = [None] * ring
        self._clear()
        self._last_good = None

    def __dealloc__(self):
        free(self._slot_seq)
        self._slot_seq = NULL

    cdef void _clear(self):
        cdef int i
        for i in range(self._mask + 1):
            self._slot_seq[i] = -1
            self._slot_payload[i] = None
        self._count = 0
        self._anchored = self._started = self._refilling = False
        self._bad_seq = -1
        self._conceal_run = 0
        self._above_run = self._below_run = 0

    def reset(self) -> None:
        """Forget the stream (e.g. on an SSRC change): empty, WAITING again. Stats are kept."""
        self._clear()
        self._last_good = None
        self._resets += 1

    # --- network side ----------------------------------------------------------------------------

    def put(self, seq: int, ts: int, payload, marker: bool = False) -> Put:
        """Offer one RTP packet's payload; return what happened to it (a ``Put``)."""
        _int_in(seq, "seq", 0, 0xFFFF)
        _int_in(ts, "ts", 0, 0xFFFFFFFF)
        if type(payload) is not bytes:
            try:
                payload = memoryview(payload).tobytes()   # keep a private, immutable copy
            except TypeError:
                raise ValueError(f"payload must be bytes-like, got {type(payload).__name__}") from None
        cdef Py_ssize_t n = len(<bytes>payload)
        if n == 0:
            raise ValueError("payload is empty")
        if self._psize >= 0 and n != self._psize:
            raise ValueError(f"payload has {n} bytes; this stream's frames are {self._psize}")
        self._received += 1
        return self._put(seq, ts, payload, marker)

    cdef object _put(self, int seq, uint32_t ts, bytes payload, bint marker):
        cdef int64_t ext, d, k, first
        cdef int32_t tsdev
        if not self._anchored:
            self._anchor(<int64_t>seq + (<int64_t>1 << 32), ts)
            return self._store(self._next, ts, payload)
        ext = self._next + _s16(seq - (self._next & 0xFFFF))
        d = ext - self._next
        tsdev = <int32_t>(ts - <uint32_t>(self._ref_ts + <uint32_t>((ext - self._ref_ext) * self.frame_samples)))
        cdef int64_t jump_ts = <int64_t>self.jump * self.frame_samples
        if d < -self.jump or tsdev < -jump_ts:
            if not (marker or seq == self._bad_seq):
                return self._probation(seq)
            return self._resync(ext, ts, payload)
        if d > self.jump or (tsdev > jump_ts and not marker):
            if not (marker or self._count == 0 or seq == self._bad_seq):
                return self._probation(seq)
            return self._resync(ext, ts, payload)
        self._bad_seq = -1
        if d < 0:
            if not self._started and (self._count == 0 or self._top - ext < self.max_depth):
                self._next = ext   # still filling: an earlier packet arrived late, start there
                return self._store(ext, ts, payload)
            self._late += 1
            return _LATE
        if d >= self.max_depth:
            if self._count == 0:
                self._lost += d    # never arrived while we were waiting: start at this packet
                self._next = ext
            else:
                for k in range(d - self.max_depth + 1):   # one per packet in an in-order burst
                    self._drop_front(True)
        return self._store(ext, ts, payload)

    cdef object _probation(self, int seq):
        self._bad_seq = (seq + 1) & 0xFFFF
        self._jumps += 1
        return _JUMP

    cdef object _resync(self, int64_t ext, uint32_t ts, bytes payload):
        cdef bint started = self._started
        self._clear()
        self._anchor(ext, ts)
        self._started = self._refilling = started
        self._resets += 1
        self._store(ext, ts, payload)
        return _RESET

    cdef void _anchor(self, int64_t ext, uint32_t ts):
        self._anchored = True
        self._next = ext
        self._ref_ext, self._ref_ts = ext, ts

    cdef object _store(self, int64_t ext, uint32_t ts, bytes payload):
        cdef int slot = ext & self._mask
        if self._slot_seq[slot] == ext:
            self._duplicates += 1
            return _DUPLICATE
        self._slot_seq[slot] = ext
        self._slot_payload[slot] = payload
        if self._count == 0 or ext > self._top:
            self._top = ext
        self._count += 1
        if ext >= self._ref_ext:
            self._ref_ext, self._ref_ts = ext, ts
        return _ACCEPTED

    cdef void _drop_front(self, bint overflow):
        """Skip the frame at the playout point (overflow or drift); a hole there counts as lost."""
        cdef int slot = self._next & self._mask
        if self._slot_seq[slot] == self._next:
            self._slot_seq[slot] = -1
            self._slot_payload[slot] = None
            self._count -= 1
            if overflow:
                self._dropped_overflow += 1
        else:
            self._lost += 1
        self._next += 1

    # --- clock side ------------------------------------------------------------------------------

    def get(self) -> tuple:
        """The next tick's frame: ``(payload or None, Kind)``. Call exactly once per tick."""
        cdef int64_t span, first
        if not self._anchored:
            return None, _WAITING
        span = self._span()
        if not self._started:
            if span < self.target:
                return None, _WAITING
            self._started = True
        elif self._refilling:
            # After an underrun: what is missing at the front will not come; wait for target frames.
            if self._count == 0:
                return self._fill()
            first = self._next
            while self._slot_seq[first & self._mask] != first:   # stops at _top at the latest
                first += 1
            if self._top - first + 1 < self.target:
                return self._fill()
            self._lost += first - self._next
            self._next = first
            span = self._span()
            self._refilling = False
            self._above_run = self._below_run = 0
        elif span == 0:
            self._underruns += 1
            self._refilling = True
            return self._fill()
        if span > self.target:
            self._below_run = 0
            if self._above_run == 0 or span < self._above_min:
                self._above_min = <int>span
            self._above_run += 1
            if self._above_run * (self._above_min - self.target) >= self.drift_window:
                self._above_run = 0
                self._drift_drops += 1
                self._drop_front(False)   # one frame, never more
        elif span < self.target:
            self._above_run = 0
            if self._below_run == 0 or span > self._below_max:
                self._below_max = <int>span
            self._below_run += 1
            if self._below_run * (self.target - self._below_max) >= self.drift_window:
                self._below_run = 0
                self._drift_inserts += 1
                return self._fill()       # play one extra frame; the queue waits a tick
        else:
            self._above_run = self._below_run = 0
        cdef int slot = self._next & self._mask
        self._next += 1
        if self._slot_seq[slot] != self._next - 1:
            self._lost += 1
            return self._fill()
        payload = self._slot_payload[slot]
        self._slot_seq[slot] = -1
        self._slot_payload[slot] = None
        self._count -= 1
        self._last_good = payload
        self._conceal_run = 0
        return payload, _FRAME

    cdef inline int64_t _span(self):
        return self._top - self._next + 1 if self._count else 0

    cdef tuple _fill(self):
        """A frame for a tick with nothing in sequence: repeat the last good one, then silence."""
        if self._last_good is not None and self._conceal_run < self.max_conceal:
            self._conceal_run += 1
            self._concealed += 1
            return self._last_good, _CONCEALED
        self._silence += 1
        return None, _SILENCE

    # --- state -----------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Frames from the playout point to the newest buffered frame (the latency, in ticks)."""
        return self._span()

    @property
    def stats(self) -> dict:
        """Counters since construction (``reset()`` keeps them) and the current depth."""
        return {
            "received": self._received, "duplicates": self._duplicates, "late": self._late,
            "lost": self._lost, "concealed": self._concealed, "silence": self._silence,
            "dropped_overflow": self._dropped_overflow, "drift_drops": self._drift_drops,
            "drift_inserts": self._drift_inserts, "underruns": self._underruns,
            "resets": self._resets, "jumps": self._jumps, "depth": self._span(),
        }

    def __repr__(self) -> str:
        return (f"JitterBuffer(frame_samples={self.frame_samples}, target={self.target}, "
                f"max_depth={self.max_depth}, depth={self._span()})")
