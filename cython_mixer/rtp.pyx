# cython: annotation_typing=False
"""RTP fast path for the bridged-call relay: validate a datagram, rewrite its header, transcode.

``RtpRewriter`` turns packets received on one leg into packets for the other leg: the header is
rebuilt with the other leg's SSRC and with sequence numbers and timestamps moved by fixed offsets
(re-anchored when the source's SSRC changes, marker bit set), CSRCs, header extension and padding
are dropped, and the G.711 payload is copied or translated PCMU <-> PCMA through one 256-entry
table composed from ``cython_mixer.g711``'s tables (identical to decode then encode).

Ownership: the rewriter writes into its own preallocated ``buffer`` (a bytearray that never
resizes) and ``rewrite`` returns the packet length; the bytes stay valid until the next call.
``view(n)`` hands out a cached memoryview of the first n bytes for ``sendto``.

Anything that is not a whole, sane version-2 packet is dropped (return -1) and counted by reason;
no input makes it read outside the datagram.

The per-packet work is tens of nanoseconds, so it runs with the GIL held: releasing it costs as
much and lets a busy thread stall the event loop for a switch interval (see NOGIL_MIN_SAMPLES in
g711.pxd). The parse and write helpers are nogil so a batch API can release it.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int16_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy

from cython_mixer.g711 cimport (CODEC_PCMA, CODEC_PCMU, codec_id, decode_sample, decode_table,
                                 encode_sample, encode_table)

import operator

__all__ = ["RtpRewriter", "parse_header", "validate", "DROP_REASONS", "MAX_PACKET", "HEADER_SIZE",
           "OK", "TRUNCATED", "OVERSIZED", "BAD_VERSION", "BAD_CSRC", "BAD_EXTENSION",
           "BAD_PADDING", "EMPTY", "UNKNOWN_PT", "NO_EVENT_PT", "transcode_table"]

cdef enum:
    HDR = 12
    MAXPKT = 2047      # = firmware.media.rtp.MAX_PACKET; sockets read 2048 so longer ones show

cdef enum:   # drop reasons
    R_OK = 0
    R_TRUNCATED = 1     # shorter than the fixed header
    R_OVERSIZED = 2     # longer than MAX_PACKET (or cut by the socket read)
    R_BAD_VERSION = 3
    R_BAD_CSRC = 4      # CSRC list runs past the end
    R_BAD_EXTENSION = 5 # extension header or its data runs past the end
    R_BAD_PADDING = 6   # padding count 0 or larger than what follows the header
    R_EMPTY = 7         # no payload left
    R_UNKNOWN_PT = 8    # neither the audio nor the telephone-event payload type
    R_NO_EVENT_PT = 9   # an event, but the other leg negotiated no telephone-event
    N_REASONS = 10

OK, TRUNCATED, OVERSIZED, BAD_VERSION, BAD_CSRC = 0, 1, 2, 3, 4
BAD_EXTENSION, BAD_PADDING, EMPTY, UNKNOWN_PT, NO_EVENT_PT = 5, 6, 7, 8, 9
#: Names of the drop reasons, indexed by code (index 0 is OK).
DROP_REASONS = ("ok", "truncated", "oversized", "bad_version", "bad_csrc", "bad_extension",
                "bad_padding", "empty", "unknown_pt", "no_event_pt")
MAX_PACKET = MAXPKT
HEADER_SIZE = HDR


cdef struct Header:
    int marker
    int pt
    uint16_t seq
    uint32_t ts
    uint32_t ssrc
    Py_ssize_t start    # payload [start, end) after CSRCs, extension and padding
    Py_ssize_t end


cdef inline uint32_t _be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void _put32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef int _parse(const uint8_t* p, Py_ssize_t n, Header* h) noexcept nogil:
    """Validate one datagram (RFC 3550 §5.1, A.1) and locate its payload; a Reason code."""
    cdef Py_ssize_t off, words, pad
    if n > MAXPKT:
        return R_OVERSIZED
    if n < HDR:
        return R_TRUNCATED
    if (p[0] >> 6) != 2:
        return R_BAD_VERSION
    off = HDR + 4 * (p[0] & 0x0F)
    if off > n:
        return R_BAD_CSRC
    if p[0] & 0x10:
        if off + 4 > n:
            return R_BAD_EXTENSION
        words = (<Py_ssize_t>p[off + 2] << 8) | p[off + 3]
        off += 4 + 4 * words
        if off > n:
            return R_BAD_EXTENSION
    h.end = n
    if p[0] & 0x20:
        pad = p[n - 1]
        if pad == 0 or pad > n - off:
            return R_BAD_PADDING
        h.end = n - pad
    h.start = off
    h.marker = p[1] >> 7
    h.pt = p[1] & 0x7F
    h.seq = (<uint16_t>p[2] << 8) | p[3]
    h.ts = _be32(p + 4)
    h.ssrc = _be32(p + 8)
    return R_OK


cdef inline void _write(uint8_t* out, const uint8_t* src, const Header* h, int marker, int pt,
                        uint16_t seq, uint32_t ts, uint32_t ssrc,
                        const uint8_t* xlat) noexcept nogil:
    """A plain 12-byte header, then the payload copied or translated through xlat."""
    cdef Py_ssize_t k, n = h.end - h.start
    cdef const uint8_t* pay = src + h.start
    out[0] = 0x80
    out[1] = (0x80 if marker else 0) | pt
    out[2] = seq >> 8
    out[3] = seq & 0xFF
    _put32(out + 4, ts)
    _put32(out + 8, ssrc)
    if xlat == NULL:
        memcpy(out + HDR, pay, n)
    else:
        for k in range(n):
            out[HDR + k] = xlat[pay[k]]


# PCMU->PCMA and PCMA->PCMU code translation, composed once from the G.711 tables.
cdef uint8_t _xlat[2][256]


cdef void _build_xlat() noexcept nogil:
    cdef int c
    for c in range(256):
        _xlat[CODEC_PCMU][c] = encode_sample(encode_table(CODEC_PCMA), decode_sample(decode_table(CODEC_PCMU), c))
        _xlat[CODEC_PCMA][c] = encode_sample(encode_table(CODEC_PCMU), decode_sample(decode_table(CODEC_PCMA), c))


_build_xlat()


def transcode_table(src_codec: str) -> bytes:
    """The 256-byte translation used for payloads in ``src_codec`` (to the other G.711 law)."""
    return PyBytes_FromStringAndSize(<char*>_xlat[codec_id(src_codec)], 256)


cdef inline int _borrow(object data, Py_buffer* view, const uint8_t** p, Py_ssize_t* n) except -1:
    """Point at the datagram's bytes: bytes directly, any other buffer through the protocol."""
    if type(data) is bytes:
        p[0] = <const uint8_t*>PyBytes_AS_STRING(data)
        n[0] = PyBytes_GET_SIZE(data)
        return 0
    PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    p[0] = <const uint8_t*>view.buf
    n[0] = view.len
    return 1


def validate(data) -> int:
    """0 if ``data`` is a whole version-2 RTP packet with a payload, else a drop reason code."""
    cdef Py_buffer view
    cdef const uint8_t* p
    cdef Py_ssize_t n
    cdef Header h
    cdef int r
    cdef int held = _borrow(data, &view, &p, &n)
    try:
        r = _parse(p, n, &h)
        if r == R_OK and h.end == h.start:
            r = R_EMPTY
        return r
    finally:
        if held:
            PyBuffer_Release(&view)


def parse_header(data):
    """``(marker, pt, seq, ts, ssrc, start, end)`` for a valid packet (payload is
    ``data[start:end]``, possibly empty), or None for anything ``validate`` rejects."""
    cdef Py_buffer view
    cdef const uint8_t* p
    cdef Py_ssize_t n
    cdef Header h
    cdef int held = _borrow(data, &view, &p, &n)
    try:
        if _parse(p, n, &h) != R_OK:
            return None
    finally:
        if held:
            PyBuffer_Release(&view)
    return (bool(h.marker), h.pt, h.seq, h.ts, h.ssrc, h.start, h.end)


cdef int _pt_arg(object value, str what, bint optional) except -2:
    if value is None:
        if optional:
            return -1
        raise ValueError(f"{what} is required")
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an int, got {value!r}") from None
    if not 0 <= v <= 127:
        raise ValueError(f"{what} must be an RTP payload type 0-127, got {v}")
    return v


cdef uint32_t _u32_arg(object value, str what, uint32_t hi) except? 0xFFFFFFFF:
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an int, got {value!r}") from None
    if not 0 <= v <= hi:
        raise ValueError(f"{what} must be in 0..{hi}, got {v}")
    return v


cdef class RtpRewriter:
    """One direction of a bridged call: packets from the source leg, rewritten for the sink leg.

    ``ssrc``, ``seq``, ``ts``: the sink leg's sender state; the first packet goes out with this
    sequence number and timestamp (marker set), later ones keep the source's spacing. ``in_pt`` is
    the source's audio payload type, ``out_pt`` the sink's (default: the same). ``in_codec`` and
    ``out_codec`` ("PCMU"/"PCMA") transcode when they differ. ``in_event_pt``/``out_event_pt``:
    the telephone-event payload types (None: not negotiated). ``on_event(ssrc, ts, marker,
    payload)`` is called for each valid telephone-event packet, with the source's header values.
    """

    cdef readonly uint32_t ssrc
    cdef readonly int in_pt, out_pt, in_event_pt, out_event_pt
    cdef readonly bytearray buffer
    cdef readonly object on_event
    cdef readonly bint transcoding
    cdef const uint8_t* _xl
    cdef uint8_t* _out
    cdef object _export             # a memoryview held for life: the bytearray can never resize
    cdef list _views
    cdef bint _anchored
    cdef uint32_t _in_ssrc
    cdef uint16_t _seq_off, _next_seq
    cdef uint32_t _ts_off, _next_ts
    cdef long long _relayed, _events, _anchors
    cdef long long _dropped[N_REASONS]

    def __init__(self, ssrc, seq=0, ts=0, *, in_pt=0, out_pt=None, in_codec=None,
                 out_codec=None, in_event_pt=None, out_event_pt=None, on_event=None):
        self.ssrc = _u32_arg(ssrc, "ssrc", 0xFFFFFFFF)
        self._next_seq = <uint16_t>_u32_arg(seq, "seq", 0xFFFF)
        self._next_ts = _u32_arg(ts, "ts", 0xFFFFFFFF)
        self.in_pt = _pt_arg(in_pt, "in_pt", False)
        self.out_pt = self.in_pt if out_pt is None else _pt_arg(out_pt, "out_pt", False)
        self.in_event_pt = _pt_arg(in_event_pt, "in_event_pt", True)
        self.out_event_pt = _pt_arg(out_event_pt, "out_event_pt", True)
        if self.in_event_pt == self.in_pt:
            raise ValueError(f"in_event_pt {self.in_event_pt} is also the audio payload type")
        if (in_codec is None) != (out_codec is None):
            raise ValueError("give both in_codec and out_codec, or neither")
        self._xl = NULL
        if in_codec is not None:
            src, dst = codec_id(in_codec), codec_id(out_codec)
            if src != dst:
                self._xl = _xlat[src]
        self.transcoding = self._xl != NULL
        if on_event is not None and not callable(on_event):
            raise ValueError(f"on_event must be callable, got {on_event!r}")
        self.on_event = on_event
        self.buffer = bytearray(MAXPKT)
        self._export = memoryview(self.buffer)
        self._out = <uint8_t*><char*>self.buffer
        self._views = [None] * (MAXPKT + 1)
        self._anchored = False
        self._relayed = self._events = self._anchors = 0
        for k in range(N_REASONS):
            self._dropped[k] = 0

    def rewrite(self, data) -> int:
        """Rewrite one datagram into ``buffer``; its length, or -1 if the packet is dropped."""
        cdef Py_buffer view
        cdef const uint8_t* p
        cdef Py_ssize_t n
        cdef int held = _borrow(data, &view, &p, &n)
        try:
            return self._rewrite(p, n)
        finally:
            if held:
                PyBuffer_Release(&view)

    cdef Py_ssize_t _rewrite(self, const uint8_t* p, Py_ssize_t n) except -2:
        cdef Header h
        cdef int r = _parse(p, n, &h)
        cdef int pt, marker
        cdef bint event
        cdef uint16_t seq
        cdef uint32_t ts
        if r == R_OK and h.end == h.start:
            r = R_EMPTY
        if r != R_OK:
            self._dropped[r] += 1
            return -1
        event = h.pt == self.in_event_pt
        if not event and h.pt != self.in_pt:
            self._dropped[R_UNKNOWN_PT] += 1
            return -1
        marker = h.marker
        if not self._anchored or h.ssrc != self._in_ssrc:
            # first packet, or the source restarted: continue the sink's numbering from here
            self._seq_off = <uint16_t>(self._next_seq - h.seq)
            self._ts_off = self._next_ts - h.ts
            self._in_ssrc = h.ssrc
            self._anchored = True
            self._anchors += 1
            marker = 1
        seq = <uint16_t>(h.seq + self._seq_off)
        ts = h.ts + self._ts_off
        if event:
            self._events += 1
            if self.on_event is not None:
                self.on_event(h.ssrc, h.ts, bool(h.marker), (<char*>p)[h.start:h.end])
            if self.out_event_pt < 0:
                self._dropped[R_NO_EVENT_PT] += 1
                return -1
            pt = self.out_event_pt
            _write(self._out, p, &h, marker, pt, seq, ts, self.ssrc, NULL)
        else:
            _write(self._out, p, &h, marker, self.out_pt, seq, ts, self.ssrc, self._xl)
        if <int16_t>(seq - self._next_seq) >= 0:     # newest so far (wrap-aware)
            self._next_seq = <uint16_t>(seq + 1)
            if not event and <int>(ts + <uint32_t>(h.end - h.start) - self._next_ts) > 0:
                self._next_ts = ts + <uint32_t>(h.end - h.start)   # G.711: a sample per byte
        self._relayed += 1
        return HDR + h.end - h.start

    def view(self, Py_ssize_t n):
        """A memoryview of ``buffer[:n]`` (cached per length; valid until the next rewrite)."""
        if not 0 <= n <= MAXPKT:
            raise ValueError(f"length {n} out of range 0-{MAXPKT}")
        v = self._views[n]
        if v is None:
            v = self._export[:n]
            self._views[n] = v
        return v

    @property
    def next_seq(self) -> int:
        """The sequence number the sink leg's next packet should carry."""
        return self._next_seq

    @property
    def next_ts(self) -> int:
        """The timestamp just after the newest audio written (for resuming the sink's clock)."""
        return self._next_ts

    @property
    def stats(self) -> dict:
        out = {"relayed": self._relayed, "events": self._events, "anchors": self._anchors}
        for k in range(1, N_REASONS):
            out["dropped_" + DROP_REASONS[k]] = self._dropped[k]
        return out

    def __repr__(self) -> str:
        return (f"RtpRewriter(ssrc={self.ssrc:#010x}, in_pt={self.in_pt}, out_pt={self.out_pt}, "
                f"transcoding={bool(self.transcoding)})")
