"""G.711 µ-law (PCMU) and A-law (PCMA), bit-exact with the ITU-T G.191 reference.

PCM is native-endian int16 (bytes-like, or an int16 array); codes are bytes, one per sample.
The tables are computed at import by the G.191 ``ulaw_compress``/``alaw_compress``/``*_expand``
algorithms (one's complement of negative input before the segment search). stdlib audioop and
spandsp differ from G.191 on some negative µ-law decision boundaries (x = -1 gives 0x7F here,
0x7E in audioop); G.191 is the oracle.

Functions returning ``bytes`` allocate the result; the ``*_into`` variants write into a
caller's writable buffer of exactly the right size and return the number of samples.
"""
from cpython.buffer cimport Py_buffer, PyBuffer_Release
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int16_t, int32_t, uint8_t, uint16_t

__all__ = ["ulaw_encode", "ulaw_decode", "alaw_encode", "alaw_decode",
           "ulaw_encode_into", "ulaw_decode_into", "alaw_encode_into", "alaw_decode_into",
           "encode", "decode", "encode_into", "decode_into", "CODECS",
           "ULAW_SILENCE", "ALAW_SILENCE"]

#: Codec names accepted by the dispatchers (SDP encoding names, matched case-insensitively).
CODECS = ("PCMU", "PCMA")
#: The code for linear 0 in each law: what a silent G.711 frame is made of.
ULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5

cdef int16_t _dec[2][256]
cdef uint8_t _enc[2][16384]   # by (uint16_t)x >> 2: G.191 only looks at x >> 2 and the sign


# --- G.191 algorithms, one sample at a time (used only to fill the tables) --------------------

cdef uint8_t _ulaw_compress(int32_t x) noexcept nogil:
    # 14-bit magnitude plus bias 33; negative input is one's-complemented, not negated
    cdef int32_t absno = (((~x) >> 2) if x < 0 else (x >> 2)) + 33
    cdef int32_t i, segno = 1
    if absno > 0x1FFF:
        absno = 0x1FFF
    i = absno >> 6
    while i != 0:
        segno += 1
        i >>= 1
    cdef int32_t code = ((8 - segno) << 4) | (0x0F - ((absno >> segno) & 0x0F))
    if x >= 0:
        code |= 0x80
    return <uint8_t>code


cdef int16_t _ulaw_expand(uint8_t code) noexcept nogil:
    cdef int32_t sign = -1 if code < 0x80 else 1
    cdef int32_t mantissa = (~code) & 0xFF
    cdef int32_t exponent = (mantissa >> 4) & 0x07
    cdef int32_t step = 4 << (exponent + 1)
    mantissa &= 0x0F
    return <int16_t>(sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33))


cdef uint8_t _alaw_compress(int32_t x) noexcept nogil:
    # 12-bit magnitude; negative input is one's-complemented
    cdef int32_t ix = ((~x) >> 4) if x < 0 else (x >> 4)
    cdef int32_t iexp
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x80
    return <uint8_t>(ix ^ 0x55)


cdef int16_t _alaw_expand(uint8_t code) noexcept nogil:
    cdef int32_t ix = (code ^ 0x55) & 0x7F
    cdef int32_t iexp = ix >> 4
    cdef int32_t mant = ix & 0x0F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x08
    if iexp > 1:
        mant <<= iexp - 1
    return <int16_t>(mant if code > 127 else -mant)


cdef void _build_tables() noexcept nogil:
    cdef int32_t x
    cdef int c
    for c in range(256):
        _dec[CODEC_PCMU][c] = _ulaw_expand(<uint8_t>c)
        _dec[CODEC_PCMA][c] = _alaw_expand(<uint8_t>c)
    for x in range(-32768, 32768, 4):   # every x sharing x >> 2 gets the same code
        _enc[CODEC_PCMU][(<uint16_t>x) >> 2] = _ulaw_compress(x)
        _enc[CODEC_PCMA][(<uint16_t>x) >> 2] = _alaw_compress(x)


_build_tables()


# --- C API (declared in g711.pxd) --------------------------------------------------------------

cdef int codec_id(object name) except -1:
    if name == "PCMU":      # the common spelling first: no case folding on the hot path
        return CODEC_PCMU
    if name == "PCMA":
        return CODEC_PCMA
    if isinstance(name, str):
        up = name.upper()
        if up == "PCMU":
            return CODEC_PCMU
        if up == "PCMA":
            return CODEC_PCMA
    raise ValueError(f"unknown G.711 codec {name!r}; expected 'PCMU' or 'PCMA'")


cdef const int16_t* decode_table(int codec) noexcept nogil:
    return _dec[codec]


cdef const uint8_t* encode_table(int codec) noexcept nogil:
    return _enc[codec]


# --- Python API --------------------------------------------------------------------------------

cdef void _encode_run(int codec, const pcm16* pcm, uint8_t* codes, Py_ssize_t n) noexcept:
    if n >= NOGIL_MIN_SAMPLES:
        with nogil:
            encode_frame(_enc[codec], pcm, codes, n)
    else:
        encode_frame(_enc[codec], pcm, codes, n)


cdef void _decode_run(int codec, const uint8_t* codes, pcm16* pcm, Py_ssize_t n) noexcept:
    if n >= NOGIL_MIN_SAMPLES:
        with nogil:
            decode_frame(_dec[codec], codes, pcm, n)
    else:
        decode_frame(_dec[codec], codes, pcm, n)


cdef bytes _encode(int codec, object pcm):
    cdef Py_buffer src
    cdef Py_ssize_t n = get_pcm(pcm, &src, False, "pcm")
    cdef bytes out
    try:
        out = PyBytes_FromStringAndSize(NULL, n)
        _encode_run(codec, <const pcm16*>src.buf, <uint8_t*>PyBytes_AS_STRING(out), n)
    finally:
        PyBuffer_Release(&src)
    return out


cdef bytes _decode(int codec, object codes):
    cdef Py_buffer src
    cdef Py_ssize_t n = get_codes(codes, &src, False, "codes")
    cdef bytes out
    try:
        out = PyBytes_FromStringAndSize(NULL, 2 * n)
        _decode_run(codec, <const uint8_t*>src.buf, <pcm16*>PyBytes_AS_STRING(out), n)
    finally:
        PyBuffer_Release(&src)
    return out


cdef int _check_apart(Py_buffer* src, Py_buffer* dst) except -1:
    # in-place or overlapping conversion would read samples it has already overwritten
    cdef const char* s = <const char*>src.buf
    cdef const char* d = <const char*>dst.buf
    if src.len and dst.len and s < d + dst.len and d < s + src.len:
        raise ValueError("dst overlaps the source buffer")
    return 0


cdef Py_ssize_t _encode_into(int codec, object pcm, object dst) except -1:
    cdef Py_buffer src, out
    cdef Py_ssize_t n = get_pcm(pcm, &src, False, "pcm")
    cdef Py_ssize_t m
    try:
        m = get_codes(dst, &out, True, "dst")
        try:
            if m != n:
                raise ValueError(f"dst holds {m} codes but pcm has {n} samples")
            _check_apart(&src, &out)
            _encode_run(codec, <const pcm16*>src.buf, <uint8_t*>out.buf, n)
        finally:
            PyBuffer_Release(&out)
    finally:
        PyBuffer_Release(&src)
    return n


cdef Py_ssize_t _decode_into(int codec, object codes, object dst) except -1:
    cdef Py_buffer src, out
    cdef Py_ssize_t n = get_codes(codes, &src, False, "codes")
    cdef Py_ssize_t m
    try:
        m = get_pcm(dst, &out, True, "dst")
        try:
            if m != n:
                raise ValueError(f"dst holds {m} samples but there are {n} codes")
            _check_apart(&src, &out)
            _decode_run(codec, <const uint8_t*>src.buf, <pcm16*>out.buf, n)
        finally:
            PyBuffer_Release(&out)
    finally:
        PyBuffer_Release(&src)
    return n


def ulaw_encode(pcm) -> bytes:
    """µ-law codes for int16 PCM."""
    return _encode(CODEC_PCMU, pcm)


def ulaw_decode(codes) -> bytes:
    """int16 PCM for µ-law codes."""
    return _decode(CODEC_PCMU, codes)


def alaw_encode(pcm) -> bytes:
    """A-law codes for int16 PCM."""
    return _encode(CODEC_PCMA, pcm)


def alaw_decode(codes) -> bytes:
    """int16 PCM for A-law codes."""
    return _decode(CODEC_PCMA, codes)


def ulaw_encode_into(pcm, dst) -> int:
    """Write the µ-law codes of pcm into dst (len(pcm)/2 bytes); return the sample count."""
    return _encode_into(CODEC_PCMU, pcm, dst)


def ulaw_decode_into(codes, dst) -> int:
    """Write the int16 PCM of µ-law codes into dst (2·len(codes) bytes); return the count."""
    return _decode_into(CODEC_PCMU, codes, dst)


def alaw_encode_into(pcm, dst) -> int:
    """Write the A-law codes of pcm into dst (len(pcm)/2 bytes); return the sample count."""
    return _encode_into(CODEC_PCMA, pcm, dst)


def alaw_decode_into(codes, dst) -> int:
    """Write the int16 PCM of A-law codes into dst (2·len(codes) bytes); return the count."""
    return _decode_into(CODEC_PCMA, codes, dst)


def encode(codec: str, pcm) -> bytes:
    """Encode int16 PCM with codec "PCMU" or "PCMA"."""
    return _encode(codec_id(codec), pcm)


def decode(codec: str, codes) -> bytes:
    """Decode codes of codec "PCMU" or "PCMA" to int16 PCM."""
    return _decode(codec_id(codec), codes)


def encode_into(codec: str, pcm, dst) -> int:
    """encode() into a caller's buffer; return the sample count."""
    return _encode_into(codec_id(codec), pcm, dst)


def decode_into(codec: str, codes, dst) -> int:
    """decode() into a caller's buffer; return the sample count."""
    return _decode_into(codec_id(codec), codes, dst)
