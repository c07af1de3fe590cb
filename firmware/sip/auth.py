"""HTTP Digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760): MD5 and SHA-256.

Server side: stateless HMAC nonces, nonce-count replay tracking in bounded memory, identical
work for unknown users and wrong passwords, and per-source exponential back-off.
Client side: answers WWW-Authenticate / Proxy-Authenticate challenges.
Works on header *values* (strings); the SIP layer picks the header names.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("earshot.sip.auth")

__all__ = ["DigestError", "AuthResult", "DigestServer", "DigestClient", "parse_auth_header",
           "digest_response", "ALGORITHMS"]

#: Supported algorithms, strongest first (RFC 8760 §2.4: list the preferred one first).
ALGORITHMS: dict[str, Callable[[bytes], "hashlib._Hash"]] = {
    "SHA-256": hashlib.sha256,
    "MD5": hashlib.md5,
}
_STRENGTH = {name: rank for rank, name in enumerate(reversed(list(ALGORITHMS)))}
_HEX_LEN = {"SHA-256": 64, "MD5": 32}

MAX_HEADER = 8192
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_NC = re.compile(r"[0-9a-fA-F]{1,8}")
_HEX = re.compile(r"[0-9a-f]+")


# Parameter names we may quote in errors; anything else from the wire is never echoed.
_KNOWN = frozenset({"username", "realm", "nonce", "uri", "response", "algorithm", "cnonce", "opaque",
                    "qop", "nc", "userhash", "stale", "domain", "charset"})


class DigestError(ValueError):
    """A malformed or unusable Digest header. ``reason`` never echoes header text."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _user_key(source: str, username: str) -> str:
    return f"{source}\x00{username}"


def _claimed_user(header_value: str) -> str | None:
    """The username an Authorization value claims (unverified), for keying the back-off."""
    try:
        return parse_auth_header(header_value)[1].get("username")
    except DigestError:
        return None


def parse_auth_header(value: str) -> tuple[str, dict[str, str]]:
    """Split ``Digest a=b, c="d"`` into (scheme, params). Param names are lower-cased;
    quoted strings are unescaped; commas inside quotes are data. Raises DigestError."""
    if not isinstance(value, str):
        raise DigestError("header value is not a string")
    if len(value) > MAX_HEADER:
        raise DigestError(f"header longer than {MAX_HEADER} characters")
    if any(ch in value for ch in "\r\n\x00"):
        raise DigestError("control character in header")
    try:
        value.encode("utf-8")  # lone surrogates (from a surrogateescape decode) cannot be hashed
    except UnicodeEncodeError:
        raise DigestError("header is not valid UTF-8") from None
    n, i = len(value), 0

    def skip_ws(i: int) -> int:
        while i < n and value[i] in " \t":
            i += 1
        return i

    def token(i: int) -> tuple[str, int]:
        j = i
        while j < n and value[j] in _TOKEN:
            j += 1
        return value[i:j], j

    i = skip_ws(i)
    scheme, i = token(i)
    if not scheme:
        raise DigestError("missing auth scheme")
    if i < n and value[i] not in " \t":
        raise DigestError(f"bad character after auth scheme at column {i + 1}")
    params: dict[str, str] = {}
    while True:
        i = skip_ws(i)
        while i < n and value[i] == ",":  # empty list elements are allowed (RFC 7230 §7)
            i = skip_ws(i + 1)
        if i >= n:
            break
        name, i = token(i)
        if not name:
            raise DigestError(f"expected a parameter name at column {i + 1}")
        i = skip_ws(i)
        if i >= n or value[i] != "=":
            raise DigestError(f"expected '=' after the parameter name ending at column {i}")
        i = skip_ws(i + 1)
        if i < n and value[i] == '"':
            chars: list[str] = []
            i += 1
            while True:
                if i >= n:
                    raise DigestError("unterminated quoted string")
                ch = value[i]
                if ch == "\\":
                    if i + 1 >= n:
                        raise DigestError("dangling escape at the end")
                    chars.append(value[i + 1])
                    i += 2
                elif ch == '"':
                    i += 1
                    break
                else:
                    chars.append(ch)
                    i += 1
            val = "".join(chars)
        else:
            j = i
            while j < n and value[j] not in ", \t\"":
                j += 1
            if j == i:
                raise DigestError(f"empty parameter value at column {i + 1}")
            val, i = value[i:j], j
        key = name.lower()
        if key in params:
            raise DigestError(f"duplicate parameter {key!r}" if key in _KNOWN else "duplicate parameter")
        params[key] = val
        i = skip_ws(i)
        if i < n and value[i] != ",":
            raise DigestError(f"expected ',' at column {i + 1}")
    return scheme, params


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _h(algorithm: str, text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return ALGORITHMS[algorithm](data).hexdigest()


def digest_response(algorithm: str, username: str, realm: str, password: str, method: str,
                    uri: str, nonce: str, nc: str | None = None, cnonce: str | None = None,
                    qop: str | None = None, body: bytes = b"") -> str:
    """The request-digest of RFC 7616 §3.4.1 (RFC 2069 form when ``qop`` is None)."""
    if algorithm not in ALGORITHMS:
        raise DigestError(f"unsupported algorithm {algorithm!r}")
    ha1 = _h(algorithm, f"{username}:{realm}:{password}")
    if qop == "auth-int":
        ha2 = _h(algorithm, f"{method}:{uri}:{_h(algorithm, body)}")
    else:
        ha2 = _h(algorithm, f"{method}:{uri}")
    if qop is None:
        return _h(algorithm, f"{ha1}:{nonce}:{ha2}")
    if qop not in ("auth", "auth-int") or nc is None or cnonce is None:
        raise DigestError("qop needs auth or auth-int with nc and cnonce")
    return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def _algorithm(params: dict[str, str]) -> str | None:
    """The canonical algorithm name (default MD5), or None when unsupported."""
    name = params.get("algorithm", "MD5").upper()
    return name if name in ALGORITHMS else None


@dataclass(frozen=True)
class AuthResult:
    """``username`` is set only when the password was proven (ok, or stale)."""

    ok: bool
    username: str | None
    stale: bool
    reason: str


_NONCE_RAW = 8 + 8 + 16          # timestamp ms, salt, truncated HMAC-SHA-256
_NONCE_LEN = 43                  # base64url of 32 bytes without padding
_NOQOP_USED = 1 << 40            # nc marker: a no-qop nonce is single use
_FUTURE_SLACK_MS = 1000


class DigestServer:
    """Challenges and verifies Digest credentials for one realm.

    ``secret`` keys the nonce HMAC: use random bytes per process (with the default monotonic
    clock), or a persisted secret together with ``clock=time.time``.

    Interop: baresip 1.0.0 (Debian 12) gives up ("Function not implemented") on a 401 that
    carries *any* SHA-256 challenge, whatever the order; serve it with ``algorithms=("MD5",)``.
    """

    def __init__(self, realm: str, secret: bytes, lookup_password: Callable[[str], str | None],
                 nonce_ttl: float = 300.0, algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
                 clock: Callable[[], float] = time.monotonic, max_failures: int = 5,
                 backoff_base: float = 1.0, backoff_max: float = 60.0,
                 max_nonces: int = 4096, max_sources: int = 4096,
                 max_source_failures: int | None = None) -> None:
        if not realm or '"' in realm or "\\" in realm or any(ch < " " for ch in realm):
            raise ValueError("realm must be non-empty printable text without quotes or backslashes")
        if not isinstance(secret, (bytes, bytearray)) or len(secret) < 16:
            raise ValueError("secret must be at least 16 bytes")
        algs = [a.upper() for a in algorithms]
        if not algs or any(a not in ALGORITHMS for a in algs):
            raise ValueError(f"algorithms must be a non-empty subset of {list(ALGORITHMS)}")
        if nonce_ttl <= 0 or max_failures < 1 or backoff_base <= 0 or backoff_max < backoff_base:
            raise ValueError("nonce_ttl, max_failures, backoff_base must be positive and backoff_max >= backoff_base")
        if max_nonces < 1 or max_sources < 1:
            raise ValueError("max_nonces and max_sources must be at least 1")
        self.realm = realm
        self.algorithms = tuple(sorted(set(algs), key=lambda a: -_STRENGTH[a]))
        self._key = hmac.new(bytes(secret), b"earshot digest nonce\x00" + realm.encode(), hashlib.sha256).digest()
        self._lookup = lookup_password
        self._ttl_ms = int(nonce_ttl * 1000)
        self._clock = clock
        self._max_failures = max_failures
        # Back-off is kept per (address, user) so one phone with a stale password cannot lock out
        # the other phones behind the same NAT address; a coarser per-address budget still stops
        # password spraying across many user names.
        self._max_source_failures = max_source_failures or 10 * max_failures
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_nonces = max_nonces
        self._max_sources = max_sources
        # nonce -> (timestamp ms, highest nc accepted); ordered by last use.
        self._nonces: OrderedDict[str, tuple[int, int]] = OrderedDict()
        # Nonces issued at or before this time whose record was evicted count as stale,
        # so eviction can never re-open a replay window.
        self._floor_ms: int | None = None
        # source -> (consecutive failures, time of last failure); ordered by last failure.
        self._sources: OrderedDict[str, tuple[int, float]] = OrderedDict()
        # Unknown users are checked against this so they cost the same as wrong passwords.
        self._dummy_password = secrets.token_hex(16)

    def __repr__(self) -> str:
        return f"DigestServer(realm={self.realm!r}, algorithms={self.algorithms!r})"

    def _now_ms(self) -> int:
        return int(round(self._clock() * 1000))

    # --- nonces ---

    def _make_nonce(self) -> str:
        payload = self._now_ms().to_bytes(8, "big", signed=True) + secrets.token_bytes(8)
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode("ascii")

    def _check_nonce(self, nonce: str) -> tuple[str, int]:
        """("ok" | "stale" | "invalid", issue time in ms)."""
        if len(nonce) != _NONCE_LEN or not nonce.isascii():
            return "invalid", 0
        try:
            raw = base64.urlsafe_b64decode(nonce + "=")
        except (binascii.Error, ValueError):
            return "invalid", 0
        if len(raw) != _NONCE_RAW:
            return "invalid", 0
        mac = hmac.new(self._key, raw[:16], hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, raw[16:]):
            return "invalid", 0
        ts = int.from_bytes(raw[:8], "big", signed=True)
        now = self._now_ms()
        if ts > now + _FUTURE_SLACK_MS:
            return "invalid", ts
        if now - ts > self._ttl_ms:
            return "stale", ts
        if self._floor_ms is not None and ts <= self._floor_ms and nonce not in self._nonces:
            return "stale", ts
        return "ok", ts

    def _record_nonce(self, nonce: str, ts: int, nc: int) -> None:
        self._nonces[nonce] = (ts, nc)
        self._nonces.move_to_end(nonce)
        now = self._now_ms()
        while self._nonces:  # expired records are useless: a stale nonce is refused anyway
            oldest_ts = next(iter(self._nonces.values()))[0]
            if now - oldest_ts <= self._ttl_ms:
                break
            self._nonces.popitem(last=False)
        while len(self._nonces) > self._max_nonces:
            _, (old_ts, _) = self._nonces.popitem(last=False)
            self._floor_ms = old_ts if self._floor_ms is None else max(self._floor_ms, old_ts)

    def challenges(self, stale: bool = False) -> list[str]:
        """WWW-Authenticate / Proxy-Authenticate values, strongest algorithm first."""
        nonce = self._make_nonce()
        tail = ", stale=true" if stale else ""
        return [f'Digest realm={_quote(self.realm)}, nonce="{nonce}", algorithm={alg}, qop="auth"{tail}'
                for alg in self.algorithms]

    # --- back-off ---

    def blocked(self, source: str, username: str | None = None) -> float:
        """Seconds before credentials for ``username`` from ``source`` are checked again
        (without a user name: the address-wide budget only)."""
        wait = self._wait(source, self._max_source_failures)
        if username is not None:
            wait = max(wait, self._wait(_user_key(source, username), self._max_failures))
        return wait

    def reset_backoff(self) -> None:
        """Forget every failure: after the users or passwords change, earlier failures say
        nothing about the new credentials (a phone refused a minute ago may be right now)."""
        self._sources.clear()

    def _wait(self, key: str, allowed: int) -> float:
        rec = self._sources.get(key)
        if rec is None or rec[0] < allowed:
            return 0.0
        failures, last = rec
        delay = min(self._backoff_max, self._backoff_base * 2.0 ** min(failures - allowed, 64))
        return max(0.0, last + delay - self._clock())

    def _failed(self, source: str, username: str | None) -> None:
        now = self._clock()
        for key in (source, _user_key(source, username or "")):
            failures, last = self._sources.pop(key, (0, now))
            if now - last > 10 * self._backoff_max:
                failures = 0  # a long quiet spell forgives old mistakes
            self._sources[key] = (failures + 1, now)
        while len(self._sources) > self._max_sources:
            self._sources.popitem(last=False)

    # --- verification ---

    def verify(self, method: str, header_value: str, source: str, body: bytes = b"",
               request_uri: str | None = None) -> AuthResult:
        """Check an Authorization / Proxy-Authorization value for a request from ``source``."""
        claimed = _claimed_user(header_value)
        if self.blocked(source, claimed) > 0:
            return AuthResult(False, None, False, "too many failures, backing off")
        result = self._verify(method, header_value, body, request_uri)
        if result.ok:
            self._sources.pop(_user_key(source, claimed or ""), None)
        elif not result.stale:
            self._failed(source, claimed)
        return result

    def _verify(self, method: str, header_value: str, body: bytes, request_uri: str | None) -> AuthResult:
        def fail(reason: str) -> AuthResult:
            return AuthResult(False, None, False, reason)

        words = header_value.split(None, 1) if isinstance(header_value, str) else []
        if words and words[0].lower() != "digest":
            return fail("not Digest credentials")  # checked before parsing: Basic carries a password
        try:
            scheme, p = parse_auth_header(header_value)
        except DigestError as e:
            return fail(f"malformed credentials: {e.reason}")
        if scheme.lower() != "digest":
            return fail("not Digest credentials")
        missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
        if missing:
            return fail(f"missing parameter(s): {', '.join(missing)}")
        algorithm = _algorithm(p)
        if algorithm is None or algorithm not in self.algorithms:
            return fail("unsupported algorithm")
        if p["realm"] != self.realm:
            return fail("wrong realm")
        if p.get("userhash", "false").lower() != "false":
            return fail("userhash is not supported")
        qop = p.get("qop")
        nc_text = cnonce = None
        if qop is None:
            if algorithm != "MD5":
                return fail("qop is required with this algorithm")  # RFC 2069 form is MD5-only
        else:
            qop = qop.lower()
            if qop not in ("auth", "auth-int"):
                return fail("unsupported qop")
            nc_text, cnonce = p.get("nc", ""), p.get("cnonce", "")
            if not _NC.fullmatch(nc_text) or int(nc_text, 16) == 0:
                return fail("bad or missing nc")
            if not cnonce:
                return fail("missing cnonce")
        if request_uri is not None and p["uri"] != request_uri:
            return fail("uri does not match the request")
        response = p["response"].lower()
        if len(response) != _HEX_LEN[algorithm] or not _HEX.fullmatch(response):
            return fail("bad response format")
        nonce_state, ts = self._check_nonce(p["nonce"])
        if nonce_state == "invalid":
            return fail("invalid nonce")

        username = p["username"]
        password = self._lookup(username)
        # Same hashing and comparison whether or not the user exists (no enumeration by timing).
        expected = digest_response(algorithm, username, self.realm,
                                   password if password is not None else self._dummy_password,
                                   method, p["uri"], p["nonce"], nc_text, cnonce, qop, body)
        match = hmac.compare_digest(expected, response)
        if password is None or not match:
            return fail("bad credentials")
        if nonce_state == "stale":
            return AuthResult(False, username, True, "stale nonce")
        nc = int(nc_text, 16) if nc_text is not None else _NOQOP_USED
        prev = self._nonces.get(p["nonce"])
        if prev is not None and (nc_text is None or nc <= prev[1]):
            # A replay (or a client reusing nc): the peer learns nothing new from a fresh nonce.
            return AuthResult(False, username, True, "nonce count replayed")
        self._record_nonce(p["nonce"], ts, nc)
        return AuthResult(True, username, False, "ok")


class DigestClient:
    """Builds Authorization values for our own requests (gateway registration, outbound calls)."""

    def __init__(self, username: str, password: str,
                 cnonce_factory: Callable[[], str] | None = None, max_nonces: int = 16) -> None:
        self.username = username
        self._password = password
        self._cnonce = cnonce_factory or (lambda: secrets.token_hex(8))
        self._nc: OrderedDict[str, int] = OrderedDict()
        self._max_nonces = max_nonces

    def __repr__(self) -> str:
        return f"DigestClient(username={self.username!r})"

    @staticmethod
    def _usable(challenge: str) -> tuple[str, dict[str, str]] | None:
        try:
            scheme, p = parse_auth_header(challenge)
        except DigestError:
            return None
        if scheme.lower() != "digest" or "realm" not in p or "nonce" not in p:
            return None
        algorithm = _algorithm(p)
        return (algorithm, p) if algorithm else None

    def choose(self, challenges: list[str]) -> str:
        """The challenge with the strongest algorithm we support (first one on ties)."""
        best: tuple[int, str] | None = None
        for challenge in challenges:
            usable = self._usable(challenge)
            if usable and (best is None or _STRENGTH[usable[0]] > best[0]):
                best = (_STRENGTH[usable[0]], challenge)
        if best is None:
            raise DigestError("no usable Digest challenge (need MD5 or SHA-256)")
        return best[1]

    def _next_nc(self, nonce: str) -> int:
        nc = self._nc.pop(nonce, 0) + 1
        self._nc[nonce] = nc
        while len(self._nc) > self._max_nonces:
            self._nc.popitem(last=False)
        return nc

    def authorization(self, challenge_header: str, method: str, uri: str, body: bytes = b"") -> str:
        """An Authorization (or Proxy-Authorization) value answering ``challenge_header``."""
        usable = self._usable(challenge_header)
        if usable is None:
            raise DigestError("challenge is not a usable Digest challenge (need realm, nonce, MD5 or SHA-256)")
        algorithm, p = usable
        offered = [q.strip().lower() for q in p.get("qop", "").split(",") if q.strip()]
        qop: str | None = None
        if offered:
            qop = "auth" if "auth" in offered else "auth-int" if "auth-int" in offered else None
            if qop is None:
                raise DigestError("challenge offers no qop we support (auth, auth-int)")
        nc_text = cnonce = None
        if qop:
            nc_text = f"{self._next_nc(p['nonce']):08x}"
            cnonce = self._cnonce()
        response = digest_response(algorithm, self.username, p["realm"], self._password, method, uri,
                                   p["nonce"], nc_text, cnonce, qop, body)
        parts = [f"username={_quote(self.username)}", f"realm={_quote(p['realm'])}",
                 f"nonce={_quote(p['nonce'])}", f"uri={_quote(uri)}", f'response="{response}"',
                 f"algorithm={algorithm}"]
        if "opaque" in p:
            parts.append(f"opaque={_quote(p['opaque'])}")
        if qop:
            parts += [f"qop={qop}", f"nc={nc_text}", f"cnonce={_quote(cnonce or '')}"]
        return "Digest " + ", ".join(parts)


def gate(server: DigestServer, req: Any, source: str, reply: Callable[[Any, int, str], Any], *,
         user: str | None = None, proxy: bool = False) -> tuple[str | None, Any]:
    """The digest check of one request, as a UAS answers it: ``(the proven user, None)``, or
    ``(None, the refusal)`` — 403 with Retry-After while ``source`` (and ``user``) is backing off,
    else 401 (``proxy``: 407) with fresh challenges, ``stale=true`` for an expired nonce.
    ``reply(req, status, reason)`` builds the response (the caller's headers, tag)."""
    wait = server.blocked(source, user)
    if wait > 0:
        resp = reply(req, 403, "Forbidden")
        resp.headers.set("Retry-After", str(int(wait + 0.999)))
        return None, resp
    names = ("Proxy-Authorization", "Authorization") if proxy else ("Authorization",)
    header = next((v for v in (req.headers.get(n) for n in names) if v is not None), None)
    stale = False
    if header is not None:
        result = server.verify(req.method, header, source, body=req.body, request_uri=str(req.uri))
        if result.ok:
            return result.username, None
        stale = bool(result.stale)
        log.info("%s for %s from %s refused: %s", req.method, user or getattr(req.uri, "user", "") or "?",
                 source, result.reason)
    code, reason, field = (407, "Proxy Authentication Required", "Proxy-Authenticate") if proxy else \
        (401, "Unauthorized", "WWW-Authenticate")
    resp = reply(req, code, reason)
    for challenge in server.challenges(stale=stale):
        resp.headers.add(field, challenge)
    return None, resp
