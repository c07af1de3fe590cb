"""RTP packets (RFC 3550 §5.1): parse and build, for the slow path and as the tests' model.

The relay's per-packet work is ``cython_mixer.rtp``; this module is the readable reference it is
tested against. Parsing strips padding, skips a header extension (kept in ``extension``) and
rejects anything that is not a whole version-2 packet with ``RtpError``.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

VERSION = 2
HEADER_SIZE = 12
#: Largest datagram we accept. Sockets read RECV_SIZE bytes, so a longer datagram arrives cut to
#: RECV_SIZE and is rejected as oversized instead of being relayed truncated.
MAX_PACKET = 2047
RECV_SIZE = MAX_PACKET + 1

_HEADER = struct.Struct("!BBHII")


class RtpError(ValueError):
    """A datagram that is not a valid RTP packet (truncated, oversized, wrong version, …)."""


@dataclass
class RtpPacket:
    """One RTP packet. ``padding`` is the padding length seen (parse) or to add (build)."""

    pt: int
    seq: int
    ts: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None   # (profile-defined 16 bits, data: whole words)
    padding: int = 0
    version: int = field(default=VERSION, init=False)

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview, max_size: int = MAX_PACKET) -> RtpPacket:
        """Parse one datagram; ``RtpError`` says what is wrong with a bad one."""
        data = bytes(data)
        n = len(data)
        if n > max_size:
            raise RtpError(f"oversized RTP packet: {n} bytes > {max_size}")
        if n < HEADER_SIZE:
            raise RtpError(f"truncated RTP packet: {n} bytes < {HEADER_SIZE}-byte header")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if b0 >> 6 != VERSION:
            raise RtpError(f"RTP version {b0 >> 6}, expected {VERSION}")
        cc = b0 & 0x0F
        off = HEADER_SIZE + 4 * cc
        if off > n:
            raise RtpError(f"truncated RTP packet: {cc} CSRCs need {off} bytes, have {n}")
        csrc = struct.unpack_from(f"!{cc}I", data, HEADER_SIZE)
        extension = None
        if b0 & 0x10:
            if off + 4 > n:
                raise RtpError("truncated RTP packet: header extension cut off")
            profile, words = struct.unpack_from("!HH", data, off)
            end = off + 4 + 4 * words
            if end > n:
                raise RtpError(f"truncated RTP packet: extension of {words} words runs past the end")
            extension = (profile, data[off + 4:end])
            off = end
        end = n
        pad = 0
        if b0 & 0x20:
            pad = data[-1]
            if pad == 0 or pad > n - off:
                raise RtpError(f"bad RTP padding length {pad} for {n - off} bytes after the header")
            end -= pad
        return cls(pt=b1 & 0x7F, seq=seq, ts=ts, ssrc=ssrc, payload=data[off:end],
                   marker=bool(b1 & 0x80), csrc=tuple(csrc), extension=extension, padding=pad)

    def build(self) -> bytes:
        """The packet's bytes (``ValueError`` for a field out of range)."""
        if not 0 <= self.pt <= 127:
            raise ValueError(f"payload type {self.pt} out of range 0-127")
        if len(self.csrc) > 15:
            raise ValueError(f"{len(self.csrc)} CSRCs; at most 15")
        if not 0 <= self.padding <= 255:
            raise ValueError(f"padding {self.padding} out of range 0-255")
        b0 = VERSION << 6 | len(self.csrc) | (0x20 if self.padding else 0) \
            | (0x10 if self.extension is not None else 0)
        out = [_HEADER.pack(b0, (0x80 if self.marker else 0) | self.pt, self.seq & 0xFFFF,
                            self.ts & 0xFFFFFFFF, self.ssrc & 0xFFFFFFFF)]
        out.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            profile, ext = self.extension
            if len(ext) % 4:
                raise ValueError("header extension data must be whole 32-bit words")
            out.append(struct.pack("!HH", profile, len(ext) // 4) + ext)
        out.append(bytes(self.payload))
        if self.padding:
            out.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(out)
