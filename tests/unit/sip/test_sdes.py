"""firmware.sip.sdes and the SRTP side of firmware.sip.sdp: a=crypto lines (RFC 4568) and the
SRTP policies of offer/answer."""
from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.sip import sdes, sdp

# RFC 4568 §4 / §9.1 examples
RFC_KEY = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
RFC_LINE = f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:32"


def test_rfc4568_example_parses_with_lifetime_and_mki() -> None:
    c = sdes.parse(RFC_LINE)
    assert (c.tag, c.suite, c.lifetime, c.mki) == (1, "AES_CM_128_HMAC_SHA1_80", 2 ** 20, (1, 32))
    assert c.key == base64.b64decode(RFC_KEY) and len(c.key) == 30
    assert c.encode() == RFC_LINE
    assert sdes.usable(c) == "MKI is not supported"
    assert RFC_KEY not in repr(c)      # keys never reach a log through repr


def test_rfc4568_32_bit_tag_suite_and_plain_lifetime() -> None:
    line = "2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32"
    c = sdes.parse(line)
    assert c.suite == "AES_CM_128_HMAC_SHA1_32" and c.tag == 2
    c2 = sdes.parse(f"3 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1000 WSH=64")
    assert c2.lifetime == 1000 and c2.mki is None and c2.session_params == ("WSH=64",)
    assert sdes.usable(c2) is None and sdes.parse(c2.encode()) == c2


def test_gcm_suite_takes_a_28_byte_key() -> None:
    c = sdes.new_crypto(1, "AEAD_AES_128_GCM")
    assert len(c.key) == 28 and sdes.parse(c.encode()) == c


@pytest.mark.parametrize("line, reason", [
    ("", "needs <tag> <suite> <key-params>"),
    ("1 AES_CM_128_HMAC_SHA1_80", "needs <tag> <suite> <key-params>"),
    (f"x AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "tag must be 1-9 digits"),
    (f"1 F8_128_HMAC_SHA1_80 inline:{RFC_KEY}", "unknown crypto suite 'F8_128_HMAC_SHA1_80'"),
    (f"1 AES_CM_128_HMAC_SHA1_80 uri:{RFC_KEY}", "key method must be inline:"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPyw", "needs a 30-byte key||salt, got 17"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}AAAA", "needs a 30-byte key||salt, got 33"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVe*CFCanVmcjkpPywjNWhcYD0mXXtxaVBR", "not base64"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^49", "out of range"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|soon", "bad key lifetime"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:x", "bad MKI"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:32|2^20", "lifetime must come before MKI"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY};inline:{RFC_KEY}", "more than one key"),
    (f"1 AEAD_AES_128_GCM inline:{RFC_KEY}", "AEAD_AES_128_GCM needs a 28-byte key||salt"),
])
def test_malformed_lines_raise_sdes_error_with_the_reason(line: str, reason: str) -> None:
    with pytest.raises(sdes.SdesError, match=None) as err:
        sdes.parse(line)
    assert reason in str(err.value)
    assert isinstance(err.value, ValueError)


@given(st.text(max_size=120))
def test_any_text_parses_or_raises_sdes_error(text: str) -> None:
    try:
        c = sdes.parse(text)
    except sdes.SdesError:
        return
    assert sdes.parse(c.encode()).key == c.key


def test_offer_keys_are_fresh_and_cover_every_suite() -> None:
    a, b = sdes.offer_cryptos(), sdes.offer_cryptos()
    assert [c.suite for c in a] == list(sdes.OFFER_SUITES) and [c.tag for c in a] == [1, 2, 3]
    assert all(x.key != y.key for x, y in zip(a, b))


# --- offer/answer with SRTP -----------------------------------------------------------------------

def _offer(srtp: str) -> sdp.SessionDescription:
    return sdp.parse(sdp.make_offer("192.0.2.1", 4000, srtp=srtp).encode())


def test_require_offers_savp_with_keys_and_answer_keeps_tag_and_suite() -> None:
    offer = _offer("require")
    assert offer.media[0].proto == "RTP/SAVP"
    assert [n for n, _ in offer.media[0].attributes].count("crypto") == 3
    answer, got = sdp.negotiate(offer, "192.0.2.2", 5000, srtp="offer")
    assert got.secure and got.crypto_remote.tag == 1 and got.crypto_local.suite == "AES_CM_128_HMAC_SHA1_80"
    wire = sdp.parse(answer.encode())
    assert wire.media[0].proto == "RTP/SAVP"
    back = sdp.parse_answer(offer, wire)
    # each side's local key is the other's remote key
    assert back.crypto_local.key == got.crypto_remote.key and back.crypto_remote.key == got.crypto_local.key


def test_offer_policy_is_best_effort_avp_with_keys() -> None:
    offer = _offer("offer")
    assert offer.media[0].proto == "RTP/AVP"
    _, plain = sdp.negotiate(offer, "192.0.2.2", 5000)            # an answerer with SRTP off
    assert not plain.secure
    answer, _ = sdp.negotiate(offer, "192.0.2.2", 5000)
    assert not sdp.parse_answer(offer, sdp.parse(answer.encode())).secure
    answer, keyed = sdp.negotiate(offer, "192.0.2.2", 5000, srtp="offer")
    assert keyed.secure and sdp.parse_answer(offer, sdp.parse(answer.encode())).secure


def test_savp_refused_when_off_and_plain_refused_when_required() -> None:
    with pytest.raises(sdp.NoCommonCodec, match="SRTP is off here"):
        sdp.negotiate(_offer("require"), "192.0.2.2", 5000)
    with pytest.raises(sdp.NoCommonCodec, match="no usable a=crypto"):
        sdp.negotiate(_offer("off"), "192.0.2.2", 5000, srtp="require")


def test_bad_crypto_lines_are_skipped_and_named_when_none_is_left() -> None:
    offer = _offer("require")
    m = offer.media[0]
    good = [a for a in m.attributes if a[0] == "crypto"]
    m.attributes = [a for a in m.attributes if a[0] != "crypto"]
    m.attributes += [("crypto", "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ="),
                     ("crypto", "2 NULL_CIPHER inline:abcd"), good[1]]
    _, got = sdp.negotiate(offer, "192.0.2.2", 5000, srtp="require")
    assert got.crypto_remote.tag == 2 and got.crypto_remote.suite == "AES_CM_128_HMAC_SHA1_32"
    m.attributes = m.attributes[:-1]
    with pytest.raises(sdp.NoCommonCodec, match="got 5 bytes.*unknown crypto suite"):
        sdp.negotiate(offer, "192.0.2.2", 5000, srtp="require")


def test_answer_without_crypto_to_savp_offer_is_refused() -> None:
    offer = _offer("require")
    answer = sdp.parse(sdp.negotiate(offer, "192.0.2.2", 5000, srtp="offer")[0].encode())
    answer.media[0].attributes = [a for a in answer.media[0].attributes if a[0] != "crypto"]
    with pytest.raises(sdp.NoCommonCodec, match="no usable a=crypto"):
        sdp.parse_answer(offer, answer)


def test_reanswer_reuses_our_key_for_the_same_suite() -> None:
    offer = _offer("require")
    _, first = sdp.negotiate(offer, "192.0.2.2", 5000, srtp="offer")
    _, again = sdp.negotiate(offer, "192.0.2.2", 5000, srtp="offer", srtp_key=first.crypto_local)
    assert again.crypto_local.key == first.crypto_local.key


def test_unknown_policy_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="srtp policy must be one of"):
        sdp.make_offer("192.0.2.1", 4000, srtp="maybe")
