"""cython_mixer — Earshot's media core.

Every per-sample and per-packet operation lives here, in Cython, over whole 20 ms frames.
Frames are ``bytes``-like buffers of native-endian signed 16-bit PCM (``int16``) at the
internal rate; G.711 payloads are ``bytes`` of one code per sample.

Modules: g711 (µ-law/A-law), mix (saturating sums and mix matrices), tone (tone_stream://
and DTMF generation), dtmf (in-band detection, libspandsp), resample (libsoxr), jitter
(RTP jitter buffer).
"""

#: The one internal rate and frame size every participant is converted to (DESIGN §2).
INTERNAL_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = INTERNAL_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2
