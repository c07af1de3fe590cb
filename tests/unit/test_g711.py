"""cython_mixer.g711 is bit-exact with ITU-T G.191 (the oracle data in shared/data/g711)."""
from __future__ import annotations

import array
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cython_mixer import g711

# CI checks shared/ out beside the clone: <root>/../shared/data/g711
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "g711"

LAWS = {
    "PCMU": (g711.ulaw_encode, g711.ulaw_decode, g711.ulaw_encode_into, g711.ulaw_decode_into),
    "PCMA": (g711.alaw_encode, g711.alaw_decode, g711.alaw_encode_into, g711.alaw_decode_into),
}
SUFFIX = {"PCMU": "u", "PCMA": "a"}
NAME = {"PCMU": "ulaw", "PCMA": "alaw"}
ALL_X = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def oracle(name: str) -> bytes:
    path = DATA / name
    if not path.is_file():
        pytest.fail(f"G.191 oracle file {path} is missing: the tests need shared/data/g711 "
                    f"beside the repository clone (see its README)", pytrace=False)
    return path.read_bytes()


def le16(data: bytes) -> np.ndarray:
    """int16 little-endian file contents as native int16."""
    return np.frombuffer(data, "<i2").astype(np.int16)


def pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.int16)


def first_mismatches(got: np.ndarray, want: np.ndarray, index_base: int = 0) -> str:
    bad = np.flatnonzero(got != want)[:5]
    return ", ".join(f"[{i + index_base}] {got[i]} != {want[i]}" for i in bad)


# --- exhaustive against the oracle tables --------------------------------------------------------

@pytest.mark.parametrize("law", ["PCMU", "PCMA"])
def test_every_linear_input_encodes_as_g191(law: str) -> None:
    want = np.frombuffer(oracle(f"g191_{NAME[law]}_enc.bin"), np.uint8)
    got = np.frombuffer(LAWS[law][0](ALL_X), np.uint8)
    assert want.size == 65536
    assert np.array_equal(got, want), first_mismatches(got, want, -32768)


@pytest.mark.parametrize("law", ["PCMU", "PCMA"])
def test_every_code_decodes_as_g191(law: str) -> None:
    want = le16(oracle(f"g191_{NAME[law]}_dec.bin"))
    got = pcm(LAWS[law][1](ALL_CODES))
    assert want.size == 256
    assert np.array_equal(got, want), first_mismatches(got, want)


# --- G.191's own sweep vectors -------------------------------------------------------------------

@pytest.mark.parametrize("law", ["PCMU", "PCMA"])
def test_g191_sweep_vectors(law: str) -> None:
    encode, decode = LAWS[law][:2]
    s = SUFFIX[law]
    sweep = le16(oracle("sweep.src"))
    words = le16(oracle(f"sweep-r.{s}")).view(np.uint16)
    assert not np.any(words >> 8), "sweep code files hold one code per int16 word (low byte)"
    codes = words.astype(np.uint8)
    got_codes = np.frombuffer(encode(sweep), np.uint8)
    assert np.array_equal(got_codes, codes), first_mismatches(got_codes, codes)
    decoded = le16(oracle(f"sweep-r.{s}-{s}"))         # decode of the reference codes
    got_decoded = pcm(decode(codes.tobytes()))
    assert np.array_equal(got_decoded, decoded), first_mismatches(got_decoded, decoded)
    round_trip = le16(oracle(f"sweep-r.re{s}"))        # encode then decode of the sweep
    got_round_trip = pcm(decode(encode(sweep)))
    assert np.array_equal(got_round_trip, round_trip), first_mismatches(got_round_trip, round_trip)


# --- specific vectors (reference §2.3: where audioop and spandsp differ from G.191) --------------

@pytest.mark.parametrize("x, code", [
    (-1, 0x7F), (-4, 0x7F), (-5, 0x7E), (-9, 0x7E), (-12, 0x7E), (-13, 0x7D),
    (-31612, 0x01), (4, 0xFE), (32767, 0x80), (-32768, 0x00), (0, 0xFF),
])
def test_ulaw_encode_vectors(x: int, code: int) -> None:
    assert g711.ulaw_encode(np.array([x], np.int16)) == bytes([code])


@pytest.mark.parametrize("x, code", [
    (0, 0xD5), (-1, 0x55), (15, 0xD5), (16, 0xD4), (-16, 0x55), (-17, 0x54),
    (4096, 0x85), (32767, 0xAA), (-32768, 0x2A),
])
def test_alaw_encode_vectors(x: int, code: int) -> None:
    assert g711.alaw_encode(np.array([x], np.int16)) == bytes([code])


@pytest.mark.parametrize("law, code, x", [
    ("PCMU", 0x80, 32124), ("PCMU", 0x00, -32124), ("PCMU", 0xFF, 0), ("PCMU", 0x7F, 0),
    ("PCMA", 0xAA, 32256), ("PCMA", 0x2A, -32256), ("PCMA", 0xD5, 8), ("PCMA", 0x55, -8),
])
def test_decode_vectors(law: str, code: int, x: int) -> None:
    assert pcm(g711.decode(law, bytes([code]))).tolist() == [x]


def test_silence_constants_are_the_code_for_zero() -> None:
    assert g711.ulaw_encode(bytes(2)) == bytes([g711.ULAW_SILENCE])
    assert g711.alaw_encode(bytes(2)) == bytes([g711.ALAW_SILENCE])


# --- round trips ---------------------------------------------------------------------------------

def test_encode_of_decode_returns_every_code_but_ulaw_negative_zero() -> None:
    # µ-law has two zeros: 0x7F (-0) decodes to 0, which encodes as 0xFF (+0). A-law has no
    # zero level (±8 is its smallest), so all 256 of its codes come back.
    back_u = g711.ulaw_encode(g711.ulaw_decode(ALL_CODES))
    assert [c for c in range(256) if back_u[c] != c] == [0x7F]
    assert back_u[0x7F] == 0xFF
    assert g711.alaw_encode(g711.alaw_decode(ALL_CODES)) == ALL_CODES


@settings(max_examples=200, deadline=None)
@given(codes=st.binary(max_size=400), law=st.sampled_from(["PCMU", "PCMA"]))
def test_decode_encode_decode_is_decode(codes: bytes, law: str) -> None:
    encode, decode = LAWS[law][:2]
    once = decode(codes)
    assert decode(encode(once)) == once
    expect = codes.replace(b"\x7f", b"\xff") if law == "PCMU" else codes
    assert encode(once) == expect


@settings(max_examples=200, deadline=None)
@given(samples=st.lists(st.integers(-32768, 32767), max_size=400),
       law=st.sampled_from(["PCMU", "PCMA"]))
def test_encode_decode_encode_is_encode(samples: list[int], law: str) -> None:
    encode, decode = LAWS[law][:2]
    codes = encode(np.array(samples, np.int16))
    # x = -1..-4 encode to µ-law 0x7F, whose level 0 re-encodes as 0xFF
    expect = codes.replace(b"\x7f", b"\xff") if law == "PCMU" else codes
    assert encode(decode(codes)) == expect
    assert decode(encode(decode(codes))) == decode(codes)


# --- buffer kinds and the _into variants ---------------------------------------------------------

FRAME = np.linspace(-32768, 32767, 160).astype(np.int16)


@pytest.mark.parametrize("make", [
    lambda a: a.tobytes(), lambda a: bytearray(a.tobytes()), lambda a: memoryview(a.tobytes()),
    lambda a: memoryview(a.tobytes()).cast("h"), lambda a: array.array("h", a.tobytes()),
    lambda a: a, lambda a: a.astype("=i2"),
    lambda a: a.astype("<i2" if sys.byteorder == "little" else ">i2"),
], ids=["bytes", "bytearray", "memoryview", "memoryview-h", "array-h", "ndarray", "=i2", "native"])
def test_pcm_buffer_kinds(make) -> None:
    want = g711.ulaw_encode(FRAME.tobytes())
    assert g711.ulaw_encode(make(FRAME)) == want


def test_unaligned_frame_gives_the_same_codes() -> None:
    raw = bytearray(b"\x00" + FRAME.tobytes())
    view = memoryview(raw)[1:]   # int16 samples at an odd address
    assert g711.alaw_encode(view) == g711.alaw_encode(FRAME)
    out = bytearray(2 * 160 + 1)
    g711.alaw_decode_into(g711.alaw_encode(FRAME), memoryview(out)[1:])
    assert bytes(out[1:]) == g711.alaw_decode(g711.alaw_encode(FRAME))


def test_empty_input() -> None:
    assert g711.ulaw_encode(b"") == b""
    assert g711.alaw_decode(b"") == b""


@pytest.mark.parametrize("law", ["PCMU", "PCMA"])
def test_into_variants_write_the_callers_buffer(law: str) -> None:
    encode, decode, encode_into, decode_into = LAWS[law]
    codes = bytearray(160)
    assert encode_into(FRAME, codes) == 160
    assert bytes(codes) == encode(FRAME)
    assert g711.encode_into(law, FRAME, codes) == 160 and bytes(codes) == encode(FRAME)
    lin = np.zeros(160, np.int16)
    assert decode_into(codes, lin) == 160
    assert lin.tobytes() == decode(codes)
    raw = bytearray(320)
    assert g711.decode_into(law, bytes(codes), raw) == 160 and bytes(raw) == decode(codes)


def test_dispatchers_match_the_named_functions() -> None:
    assert g711.encode("PCMU", FRAME) == g711.ulaw_encode(FRAME)
    assert g711.encode("PCMA", FRAME) == g711.alaw_encode(FRAME)
    assert g711.decode("PCMU", ALL_CODES) == g711.ulaw_decode(ALL_CODES)
    assert g711.decode("pcma", ALL_CODES) == g711.alaw_decode(ALL_CODES)


# --- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    b"\x00\x01\x02",                        # odd byte count
    np.zeros(4, np.int32),                  # wrong itemsize
    np.zeros(4, np.uint16),                 # wrong type, right itemsize
    np.zeros(4, np.float32),
    np.zeros(4, ">i2" if sys.byteorder == "little" else "<i2"),   # foreign byte order
    np.zeros((2, 4), np.int16),             # not one frame
    np.zeros(8, np.int16)[::2],             # not contiguous
], ids=["odd", "int32", "uint16", "float32", "swapped", "2-D", "strided"])
def test_bad_pcm_is_a_value_error(bad) -> None:
    with pytest.raises(ValueError, match="pcm"):
        g711.ulaw_encode(bad)
    with pytest.raises(ValueError, match="pcm"):
        g711.alaw_encode_into(bad, bytearray(100))


def test_bad_codes_are_a_value_error() -> None:
    with pytest.raises(ValueError, match="1-byte"):
        g711.ulaw_decode(np.zeros(4, np.int16))
    with pytest.raises(ValueError, match="codes"):
        g711.alaw_decode(np.zeros(8, np.uint8)[::2])


def test_bad_destination_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="dst"):
        g711.ulaw_encode_into(FRAME, bytearray(159))           # wrong size
    with pytest.raises(ValueError, match="dst"):
        g711.ulaw_encode_into(FRAME, bytes(160))               # read-only
    with pytest.raises(ValueError, match="dst"):
        g711.ulaw_decode_into(bytes(160), bytearray(321))      # odd bytes
    with pytest.raises(ValueError, match="dst"):
        g711.ulaw_decode_into(bytes(160), np.zeros(160, np.int32))
    with pytest.raises(ValueError, match="dst"):
        g711.alaw_decode_into(bytes(160), np.zeros(161, np.int16))


def test_overlapping_source_and_destination_is_a_value_error() -> None:
    buf = bytearray(480)
    with pytest.raises(ValueError, match="overlaps"):
        g711.ulaw_decode_into(memoryview(buf)[:160], memoryview(buf)[100:420])
    with pytest.raises(ValueError, match="overlaps"):
        g711.alaw_encode_into(memoryview(buf)[:320], memoryview(buf)[:160])
    assert g711.ulaw_decode_into(memoryview(buf)[:160], memoryview(buf)[160:]) == 160


@pytest.mark.parametrize("codec", ["G729", "L16", "", "PCMU "])
def test_unknown_codec_is_a_value_error(codec: str) -> None:
    with pytest.raises(ValueError, match="codec"):
        g711.encode(codec, FRAME)
    with pytest.raises(ValueError, match="codec"):
        g711.decode(codec, b"\xff")


def test_wrong_argument_types_are_type_errors() -> None:
    with pytest.raises(TypeError):
        g711.ulaw_encode("not a frame")
    with pytest.raises(TypeError):
        g711.encode(None, FRAME)
