"""SRTP (RFC 3711) for one leg, from the keys SDES negotiated: libsrtp through ``pylibsrtp``.

``SrtpContext(suite, tx_key, rx_key)`` holds an outbound session (our key: what we send) and an
inbound one (the peer's key: what we receive). ``protect(rtp)`` gives the SRTP packet to send;
``unprotect(srtp)`` gives the plain RTP packet or None: packets failing authentication, replayed
packets and anything else libsrtp refuses are dropped and counted, never played. libsrtp keeps the
rollover counter across sequence-number wrap. A key lifetime from a=crypto is enforced here by
counting packets (libsrtp enforces only its own 2^48 limit).
"""
from __future__ import annotations

import pylibsrtp

from firmware.sip.sdes import SUITES

_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
}
REPLAY_WINDOW = 128
_AUTH = "authentication failure"
_REPLAY = ("replay check failed (bad index)", "replay check failed (index too old)")


class SrtpContext:
    """Both directions of one leg's SRTP. Not thread-safe; one per leg."""

    def __init__(self, suite: str, tx_key: bytes, rx_key: bytes, *,
                 tx_lifetime: int | None = None, rx_lifetime: int | None = None) -> None:
        if suite not in _PROFILES:
            raise ValueError(f"unknown SRTP suite {suite!r}; expected one of {', '.join(_PROFILES)}")
        need = sum(SUITES[suite])
        for what, key in (("tx_key", tx_key), ("rx_key", rx_key)):
            if not isinstance(key, bytes) or len(key) != need:
                raise ValueError(f"{what} for {suite} must be {need} bytes of key||salt")
        self.suite = suite
        self.tx_key, self.rx_key = tx_key, rx_key
        self._tx = pylibsrtp.Session(self._policy(suite, tx_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        self._rx = pylibsrtp.Session(self._policy(suite, rx_key, pylibsrtp.Policy.SSRC_ANY_INBOUND))
        self._tx_left = tx_lifetime
        self._rx_left = rx_lifetime
        self._c = dict.fromkeys(("protected", "unprotected", "auth_failures", "replays",
                                 "rx_errors", "tx_errors", "key_expired"), 0)

    @staticmethod
    def _policy(suite: str, key: bytes, ssrc_type: int) -> pylibsrtp.Policy:
        policy = pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=_PROFILES[suite])
        policy.window_size = REPLAY_WINDOW
        return policy

    def same_keys(self, suite: str, tx_key: bytes, rx_key: bytes) -> bool:
        """True when a renegotiation kept this context's keys (keep it: ROC and replay state)."""
        return (suite, tx_key, rx_key) == (self.suite, self.tx_key, self.rx_key)

    def protect(self, packet) -> bytes | None:
        """The SRTP form of one RTP packet, or None (counted) when it cannot be sent."""
        if self._tx_left is not None:
            if self._tx_left <= 0:
                self._c["key_expired"] += 1
                return None
            self._tx_left -= 1
        try:
            out = self._tx.protect(bytes(packet))
        except (pylibsrtp.Error, ValueError):
            self._c["tx_errors"] += 1
            return None
        self._c["protected"] += 1
        return out

    def unprotect(self, packet: bytes) -> bytes | None:
        """The RTP packet inside one SRTP packet, or None (dropped and counted)."""
        if self._rx_left is not None and self._rx_left <= 0:
            self._c["key_expired"] += 1
            return None
        try:
            out = self._rx.unprotect(packet)
        except pylibsrtp.Error as exc:
            reason = str(exc)
            key = "auth_failures" if reason == _AUTH else "replays" if reason in _REPLAY else "rx_errors"
            self._c[key] += 1
            return None
        except ValueError:              # longer than libsrtp's buffer
            self._c["rx_errors"] += 1
            return None
        if self._rx_left is not None:
            self._rx_left -= 1
        self._c["unprotected"] += 1
        return out

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._c)
