"""SDES key exchange (RFC 4568): the ``a=crypto`` attribute of an SRTP media section.

    a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<base64 key||salt>[|lifetime][|MKI:len] [session-params]

``parse(value)`` reads the part after ``a=crypto:`` into a ``Crypto``; ``Crypto.encode()`` writes
it back. ``new_crypto(tag, suite)`` makes our own side with a fresh random master key. Anything
we cannot use exactly as written (malformed line, unknown suite, short or long key, bad
lifetime or MKI) raises ``SdesError`` saying what was wrong.
"""
from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass

# suite -> (master key bytes, master salt bytes); RFC 4568 §6.2, RFC 7714 §12 for GCM
SUITES: dict[str, tuple[int, int]] = {
    "AES_CM_128_HMAC_SHA1_80": (16, 14),
    "AES_CM_128_HMAC_SHA1_32": (16, 14),
    "AEAD_AES_128_GCM": (16, 12),
}
# our preference order when we offer
OFFER_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM")
MAX_LIFETIME = 2 ** 48        # SRTP's own limit for one master key (RFC 3711 §9.2)


class SdesError(ValueError):
    """An a=crypto line we cannot use, with the reason."""


@dataclass(frozen=True)
class Crypto:
    """One a=crypto attribute with a single inline key (the only kind we accept)."""

    tag: int
    suite: str
    key: bytes                          # master key || master salt
    lifetime: int | None = None         # packets, None: the suite's maximum
    mki: tuple[int, int] | None = None  # (value, length in bytes)
    session_params: tuple[str, ...] = ()

    def encode(self) -> str:
        """The attribute value (after ``a=crypto:``)."""
        params = "inline:" + base64.b64encode(self.key).decode("ascii")
        if self.lifetime is not None:
            n = self.lifetime.bit_length() - 1
            params += f"|2^{n}" if self.lifetime == 1 << n else f"|{self.lifetime}"
        if self.mki is not None:
            params += f"|{self.mki[0]}:{self.mki[1]}"
        return " ".join([str(self.tag), self.suite, params, *self.session_params])

    def __repr__(self) -> str:            # never log a key
        return f"Crypto(tag={self.tag}, suite={self.suite}, lifetime={self.lifetime}, mki={self.mki})"


_TAG = re.compile(r"[0-9]{1,9}")
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def parse(value: str) -> Crypto:
    """Parse an a=crypto value (``tag suite key-params [session-params]``)."""
    if not isinstance(value, str):
        raise SdesError(f"a=crypto value must be text, got {type(value).__name__}")
    parts = value.split()
    if len(parts) < 3:
        raise SdesError(f"a=crypto needs <tag> <suite> <key-params> (got {value[:60]!r})")
    tag_text, suite, key_params, *session = parts
    if not _TAG.fullmatch(tag_text):
        raise SdesError(f"a=crypto tag must be 1-9 digits (got {tag_text[:20]!r})")
    if suite not in SUITES:
        raise SdesError(f"unknown crypto suite {suite[:40]!r} (we support {', '.join(SUITES)})")
    if ";" in key_params:
        raise SdesError("more than one key in a=crypto is not supported")
    method, sep, info = key_params.partition(":")
    if method != "inline" or not sep:
        raise SdesError(f"key method must be inline: (got {key_params[:20]!r})")
    fields = info.split("|")
    if len(fields) > 3:
        raise SdesError("inline key has too many |-separated fields")
    key = _key(fields[0], suite)
    lifetime: int | None = None
    mki: tuple[int, int] | None = None
    for extra in fields[1:]:
        if ":" in extra:
            if mki is not None:
                raise SdesError("inline key has two MKI fields")
            mki = _mki(extra)
        elif lifetime is None and mki is None:
            lifetime = _lifetime(extra)
        else:
            raise SdesError(f"bad inline key field {extra[:20]!r} (lifetime must come before MKI)")
    return Crypto(int(tag_text), suite, key, lifetime, mki, tuple(session))


def _key(text: str, suite: str) -> bytes:
    klen, slen = SUITES[suite]
    if not _B64.fullmatch(text):
        raise SdesError(f"inline key is not base64 ({len(text)} characters)")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SdesError("inline key is not valid base64") from None
    if len(key) != klen + slen:
        raise SdesError(f"{suite} needs a {klen + slen}-byte key||salt, got {len(key)} bytes")
    return key


def _lifetime(text: str) -> int:
    m = re.fullmatch(r"2\^([0-9]{1,2})|([0-9]{1,15})", text)
    if not m:
        raise SdesError(f"bad key lifetime {text[:20]!r} (2^n or a number of packets)")
    value = 1 << int(m.group(1)) if m.group(1) else int(m.group(2))
    if not 1 <= value <= MAX_LIFETIME:
        raise SdesError(f"key lifetime {text!r} out of range 1-2^48")
    return value


def _mki(text: str) -> tuple[int, int]:
    value, _, length = text.partition(":")
    if not (value.isascii() and value.isdigit() and length.isascii() and length.isdigit()):
        raise SdesError(f"bad MKI {text[:20]!r} (value:length)")
    v, n = int(value), int(length)
    if not 1 <= n <= 128 or v >= 1 << (8 * n):
        raise SdesError(f"bad MKI {text[:20]!r}: length 1-128 bytes holding the value")
    return v, n


def new_crypto(tag: int, suite: str, lifetime: int | None = None) -> Crypto:
    """Our side of a crypto attribute: a fresh random master key and salt."""
    if suite not in SUITES:
        raise SdesError(f"unknown crypto suite {suite!r}")
    if not (isinstance(tag, int) and 0 <= tag <= 999_999_999):
        raise SdesError(f"a=crypto tag must be 0-999999999, got {tag!r}")
    klen, slen = SUITES[suite]
    return Crypto(tag, suite, secrets.token_bytes(klen + slen), lifetime)


def offer_cryptos() -> list[Crypto]:
    """The crypto attributes of an offer: one fresh key per suite we support, tags 1, 2, ..."""
    return [new_crypto(i, suite) for i, suite in enumerate(OFFER_SUITES, 1)]


def usable(c: Crypto) -> str | None:
    """Why we cannot run SRTP with ``c`` as it stands, or None when we can."""
    if c.mki is not None:
        return "MKI is not supported"
    unknown = [p for p in c.session_params if not p.startswith("WSH=")]   # WSH is only a hint
    if unknown:
        return f"unsupported session parameter {unknown[0][:30]!r}"
    return None
