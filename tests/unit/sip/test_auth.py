"""Digest authentication: published vectors, real baresip headers, server policy (nonces,
replay, enumeration, back-off), client behaviour and header parsing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.sip import auth
from firmware.sip.auth import (AuthResult, DigestClient, DigestError, DigestServer,
                               digest_response, parse_auth_header)

SECRET = b"unit-test-secret-0123456789"
PASSWORDS = {"alice": "Secr3t", "bob": "hunter2"}


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_server(clock: FakeClock | None = None, **kw) -> DigestServer:
    return DigestServer("earshot.local", SECRET, PASSWORDS.get, clock=clock or FakeClock(), **kw)


def login(server: DigestServer, user: str, password: str, algorithm: str = "SHA-256",
          method: str = "REGISTER", uri: str = "sip:earshot.local", source: str = "192.0.2.1") -> AuthResult:
    client = DigestClient(user, password)
    challenge = next(c for c in server.challenges() if f"algorithm={algorithm}" in c)
    return server.verify(method, client.authorization(challenge, method, uri), source)


# --- published test vectors -----------------------------------------------------------------

def test_rfc2617_mufasa_example():
    # RFC 2617 §3.5: GET /dir/index.html, password "Circle Of Life".
    assert digest_response("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life", "GET",
                           "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093",
                           "00000001", "0a4f113b", "auth") == "6629fae49393a05397450978507c4ef1"


def test_rfc2617_mufasa_via_client_header():
    challenge = ('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                 'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    client = DigestClient("Mufasa", "Circle Of Life", cnonce_factory=lambda: "0a4f113b")
    scheme, p = parse_auth_header(client.authorization(challenge, "GET", "/dir/index.html"))
    assert scheme == "Digest"
    assert p["response"] == "6629fae49393a05397450978507c4ef1"
    assert (p["qop"], p["nc"], p["cnonce"]) == ("auth", "00000001", "0a4f113b")
    assert p["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"
    assert p["algorithm"] == "MD5"


RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CHALLENGES = [
    f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
    f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"',
    f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, '
    f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"',
]


@pytest.mark.parametrize("algorithm,expected", [
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
])
def test_rfc7616_example(algorithm, expected):
    # RFC 7616 §3.9.1, the SHA-256 example RFC 8760 builds on (password "Circle of Life").
    assert digest_response(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life", "GET",
                           "/dir/index.html", RFC7616_NONCE, "00000001", RFC7616_CNONCE, "auth") == expected


@pytest.mark.parametrize("order", [1, -1])
def test_client_chooses_sha256_and_reproduces_rfc7616(order):
    client = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC7616_CNONCE)
    chosen = client.choose(RFC7616_CHALLENGES[::order])
    assert "algorithm=SHA-256" in chosen
    _, p = parse_auth_header(client.authorization(chosen, "GET", "/dir/index.html"))
    assert p["response"] == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert (p["algorithm"], p["qop"], p["opaque"]) == ("SHA-256", "auth", RFC7616_OPAQUE)


# --- real baresip 1.0.0 headers ---------------------------------------------------------------

# Captured on loopback from baresip 1.0.0 (account alice, auth_pass=Secr3t) answering a fixed
# challenge: nonce "1732600000.0a1b...", opaque 5ccc..., algorithm=MD5, qop="auth".
BARESIP_REGISTER_AUTH = (
    'Digest username="alice", realm="earshot.local", '
    'nonce="1732600000.0a1b2c3d4e5f60718293a4b5c6d7e8f9", uri="sip:127.0.0.1:5199", '
    'response="6797fe01620f194b5d9df99c5975f67f", opaque="5ccc069c403ebaf9f0171e9517f40e41", '
    'cnonce="0ea70586524f7b46", qop=auth, nc=00000001')
BARESIP_INVITE_AUTH = (
    'Digest username="alice", realm="earshot.local", '
    'nonce="1732600000.0a1b2c3d4e5f60718293a4b5c6d7e8f9", uri="sip:bob@127.0.0.1:5199", '
    'response="24c46f99ea81af3ae6fcc9f818b3d043", opaque="5ccc069c403ebaf9f0171e9517f40e41", '
    'cnonce="c9c26bfb7e8fbc8c", qop=auth, nc=00000001')

# Captured from baresip 1.0.0 answering DigestServer("earshot.local", FIXTURE_SECRET, ...,
# clock=lambda: 1000.0, algorithms=("MD5",)).challenges()[0].
FIXTURE_SECRET = b"fixture-secret-0123456789"
BARESIP_AUTH_FOR_OUR_NONCE = (
    'Digest username="alice", realm="earshot.local", nonce="AAAAAAAPQkCTIdDkc2pqU93uDN0kGm9HhUBpY4Io5mE", '
    'uri="sip:127.0.0.1:5199", response="00fe8c7606e125fa442cd5407f62f956", cnonce="099174672bd8074f", '
    'qop=auth, nc=00000001')


@pytest.mark.parametrize("method,header", [("REGISTER", BARESIP_REGISTER_AUTH), ("INVITE", BARESIP_INVITE_AUTH)])
def test_baresip_response_matches_our_digest(method, header):
    scheme, p = parse_auth_header(header)
    assert scheme == "Digest" and "algorithm" not in p  # baresip omits it: MD5 by default
    assert digest_response("MD5", p["username"], p["realm"], "Secr3t", method, p["uri"], p["nonce"],
                           p["nc"], p["cnonce"], p["qop"]) == p["response"]


def test_server_accepts_real_baresip_header_for_its_nonce():
    server = DigestServer("earshot.local", FIXTURE_SECRET, PASSWORDS.get, clock=lambda: 1000.0,
                          algorithms=("MD5",))
    result = server.verify("REGISTER", BARESIP_AUTH_FOR_OUR_NONCE, "127.0.0.1", request_uri="sip:127.0.0.1:5199")
    assert result == AuthResult(True, "alice", False, "ok")
    # baresip restarts nc at 1 when it reuses a nonce: refused, but as stale so it simply retries.
    again = server.verify("REGISTER", BARESIP_AUTH_FOR_OUR_NONCE, "127.0.0.1")
    assert (again.ok, again.stale, again.reason) == (False, True, "nonce count replayed")


def test_server_rejects_baresip_header_with_foreign_nonce():
    result = make_server(algorithms=("MD5",)).verify("REGISTER", BARESIP_REGISTER_AUTH, "127.0.0.1")
    assert result == AuthResult(False, None, False, "invalid nonce")


# --- server/client round trips ------------------------------------------------------------------

def test_challenges_list_sha256_first_with_one_nonce():
    chs = make_server(algorithms=("MD5", "SHA-256")).challenges()
    assert ["algorithm=SHA-256" in chs[0], "algorithm=MD5" in chs[1]] == [True, True]
    nonces = {parse_auth_header(c)[1]["nonce"] for c in chs}
    assert len(nonces) == 1
    for c in chs:
        scheme, p = parse_auth_header(c)
        assert scheme == "Digest" and p["realm"] == "earshot.local" and p["qop"] == "auth"
        assert "stale" not in p
    assert all(parse_auth_header(c)[1]["stale"] == "true" for c in make_server().challenges(stale=True))


def test_each_challenge_has_a_fresh_nonce():
    server = make_server()
    assert parse_auth_header(server.challenges()[0])[1]["nonce"] != parse_auth_header(server.challenges()[0])[1]["nonce"]


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_round_trip(algorithm):
    result = login(make_server(), "alice", "Secr3t", algorithm)
    assert result == AuthResult(True, "alice", False, "ok")


def test_round_trip_auth_int_with_body():
    server = make_server()
    challenge = server.challenges()[0].replace('qop="auth"', 'qop="auth-int"')
    client = DigestClient("bob", "hunter2")
    header = client.authorization(challenge, "INVITE", "sip:1001@earshot.local", body=b"v=0\r\n")
    assert parse_auth_header(header)[1]["qop"] == "auth-int"
    assert server.verify("INVITE", header, "192.0.2.1", body=b"v=0\r\n").ok
    header2 = client.authorization(challenge, "INVITE", "sip:1001@earshot.local", body=b"v=0\r\n")
    assert not server.verify("INVITE", header2, "192.0.2.1", body=b"v=1\r\n").ok  # body tampered


def test_no_qop_md5_accepted_once_and_refused_for_sha256():
    server = make_server()
    md5, sha = (next(c for c in server.challenges() if a in c).replace(', qop="auth"', "")
                for a in ("algorithm=MD5", "algorithm=SHA-256"))
    client = DigestClient("alice", "Secr3t")
    header = client.authorization(md5, "REGISTER", "sip:earshot.local")
    _, p = parse_auth_header(header)
    assert "qop" not in p and "nc" not in p and "cnonce" not in p
    assert server.verify("REGISTER", header, "192.0.2.1") == AuthResult(True, "alice", False, "ok")
    again = server.verify("REGISTER", header, "192.0.2.1")
    assert (again.ok, again.stale) == (False, True)  # single use: old clients just retry
    result = server.verify("REGISTER", client.authorization(sha, "REGISTER", "sip:earshot.local"), "192.0.2.1")
    assert result == AuthResult(False, None, False, "qop is required with this algorithm")


def test_algorithm_not_offered_is_refused():
    server = make_server(algorithms=("SHA-256",))
    challenge = server.challenges()[0].replace("SHA-256", "MD5")
    header = DigestClient("alice", "Secr3t").authorization(challenge, "REGISTER", "sip:x")
    assert server.verify("REGISTER", header, "192.0.2.1").reason == "unsupported algorithm"


def test_wrong_method_fails():
    server = make_server()
    header = DigestClient("alice", "Secr3t").authorization(server.challenges()[0], "REGISTER", "sip:x")
    assert server.verify("INVITE", header, "192.0.2.1").reason == "bad credentials"


def test_uri_must_match_request_uri_when_given():
    server = make_server()
    client = DigestClient("alice", "Secr3t")
    header = client.authorization(server.challenges()[0], "INVITE", "sip:1001@earshot.local")
    result = server.verify("INVITE", header, "192.0.2.1", request_uri="sip:1002@earshot.local")
    assert result == AuthResult(False, None, False, "uri does not match the request")
    assert server.verify("INVITE", header, "192.0.2.1", request_uri="sip:1001@earshot.local").ok


# --- enumeration, nonces, replay ------------------------------------------------------------------

def test_unknown_user_and_wrong_password_look_identical(monkeypatch):
    calls: list[str] = []
    real = auth.digest_response

    def counting(*args, **kw):
        calls.append(args[1])
        return real(*args, **kw)

    monkeypatch.setattr(auth, "digest_response", counting)
    server = make_server()
    wrong = login(server, "alice", "not-it", source="a")
    unknown = login(server, "mallory", "not-it", source="b")
    assert wrong == unknown == AuthResult(False, None, False, "bad credentials")
    # The server hashed once for each (client calls come first): the same work either way.
    assert calls == ["alice", "alice", "mallory", "mallory"]


def test_unknown_user_never_logs_in_even_with_the_dummy_password():
    server = make_server()
    server._dummy_password = "known-dummy"
    assert login(server, "mallory", "known-dummy") == AuthResult(False, None, False, "bad credentials")


def test_stale_nonce_with_correct_password():
    clock = FakeClock()
    server = make_server(clock, nonce_ttl=300.0)
    client = DigestClient("alice", "Secr3t")
    header = client.authorization(server.challenges()[0], "REGISTER", "sip:x")
    clock.t += 301.0
    assert server.verify("REGISTER", header, "192.0.2.1") == AuthResult(False, "alice", True, "stale nonce")
    bad = DigestClient("alice", "wrong").authorization(server.challenges()[0], "REGISTER", "sip:x")
    clock.t += 301.0
    assert server.verify("REGISTER", bad, "192.0.2.1") == AuthResult(False, None, False, "bad credentials")
    assert server.blocked("192.0.2.1") == 0.0


def test_nonce_just_inside_ttl_is_fresh():
    clock = FakeClock()
    server = make_server(clock, nonce_ttl=300.0)
    header = DigestClient("alice", "Secr3t").authorization(server.challenges()[0], "REGISTER", "sip:x")
    clock.t += 299.9
    assert server.verify("REGISTER", header, "192.0.2.1").ok


def _with_nonce(header: str, nonce: str) -> str:
    old = parse_auth_header(header)[1]["nonce"]
    return header.replace(old, nonce)


def test_forged_nonces_are_invalid():
    clock = FakeClock()
    server = make_server(clock)
    other_secret = DigestServer("earshot.local", b"another-secret-0123456789", PASSWORDS.get, clock=clock)
    other_realm = DigestServer("other.realm", SECRET, PASSWORDS.get, clock=clock)
    foreign = [parse_auth_header(s.challenges()[0])[1]["nonce"] for s in (other_secret, other_realm)]
    ours = parse_auth_header(server.challenges()[0])[1]["nonce"]
    flipped = ours[:20] + ("A" if ours[20] != "A" else "B") + ours[21:]
    for nonce in [*foreign, flipped, ours[:-1], ours + "A", "!" * 43, "", "1732600000.0a1b2c3d"]:
        challenge = f'Digest realm="earshot.local", nonce="{nonce}", algorithm=SHA-256, qop="auth"'
        header = DigestClient("alice", "Secr3t").authorization(challenge, "REGISTER", "sip:x")
        assert server.verify("REGISTER", header, f"src-{nonce}") == AuthResult(False, None, False, "invalid nonce")


def test_nonce_from_the_future_is_invalid():
    clock = FakeClock(5000.0)
    server = make_server(clock)
    challenge = server.challenges()[0]
    header = DigestClient("alice", "Secr3t").authorization(challenge, "REGISTER", "sip:x")
    clock.t = 100.0  # e.g. the monotonic clock restarted but the secret was kept
    assert server.verify("REGISTER", header, "192.0.2.1").reason == "invalid nonce"


def test_replayed_nc_is_refused_and_increasing_nc_accepted():
    server = make_server()
    challenge = server.challenges()[0]
    client = DigestClient("alice", "Secr3t")
    first = client.authorization(challenge, "REGISTER", "sip:x")
    second = client.authorization(challenge, "REGISTER", "sip:x")
    third = client.authorization(challenge, "REGISTER", "sip:x")
    assert [parse_auth_header(h)[1]["nc"] for h in (first, second, third)] == ["00000001", "00000002", "00000003"]
    assert server.verify("REGISTER", first, "s").ok
    replay = server.verify("REGISTER", first, "s")
    assert replay == AuthResult(False, "alice", True, "nonce count replayed")
    assert server.verify("REGISTER", third, "s").ok
    assert not server.verify("REGISTER", second, "s").ok  # lower than the highest seen


def test_replay_memory_is_bounded_and_eviction_does_not_reopen_replay():
    server = make_server(max_nonces=2)
    client = DigestClient("alice", "Secr3t")
    chs = [server.challenges()[0] for _ in range(3)]
    firsts = [client.authorization(c, "REGISTER", "sip:x") for c in chs]
    assert all(server.verify("REGISTER", h, "s").ok for h in firsts)
    assert len(server._nonces) == 2
    # The first nonce's record was evicted: a replay of it must still fail (as stale).
    assert server.verify("REGISTER", firsts[0], "s") == AuthResult(False, "alice", True, "stale nonce")


def test_unknown_nc_format_and_zero_nc_rejected():
    server = make_server()
    header = DigestClient("alice", "Secr3t").authorization(server.challenges()[0], "REGISTER", "sip:x")
    for nc in ("00000000", "0000000g", "123456789", ""):
        bad = header.replace("nc=00000001", f"nc={nc}" if nc else 'nc=""')
        assert server.verify("REGISTER", bad, "s").reason == "bad or missing nc"


# --- back-off ---------------------------------------------------------------------------------

def test_backoff_grows_caps_and_resets_on_success():
    clock = FakeClock()
    server = make_server(clock, max_failures=3, backoff_base=1.0, backoff_max=4.0)
    src = "198.51.100.7"
    for _ in range(2):
        assert not login(server, "alice", "guess", source=src).ok
    assert server.blocked(src, "alice") == 0.0
    assert not login(server, "alice", "guess", source=src).ok
    assert server.blocked(src, "alice") == pytest.approx(1.0)
    # While blocked the credentials are not even checked (even correct ones) and nothing grows.
    assert login(server, "alice", "Secr3t", source=src) == AuthResult(False, None, False, "too many failures, backing off")
    assert server.blocked(src, "alice") == pytest.approx(1.0)
    delays = []
    for _ in range(4):
        clock.t += server.blocked(src, "alice")
        assert server.blocked(src, "alice") == 0.0
        assert not login(server, "alice", "guess", source=src).ok
        delays.append(server.blocked(src, "alice"))
    assert delays == pytest.approx([2.0, 4.0, 4.0, 4.0])
    assert server.blocked("203.0.113.9", "alice") == 0.0  # other sources unaffected
    clock.t += 4.0
    assert login(server, "alice", "Secr3t", source=src).ok
    assert not login(server, "alice", "guess", source=src).ok
    assert server.blocked(src, "alice") == 0.0  # the count started again


def test_backoff_time_runs_down_with_the_clock():
    clock = FakeClock()
    server = make_server(clock, max_failures=1, backoff_base=2.0, backoff_max=60.0)
    login(server, "bob", "x", source="s")
    clock.t += 0.5
    assert server.blocked("s", "bob") == pytest.approx(1.5)


def test_one_phone_with_a_wrong_password_does_not_lock_out_its_neighbours():
    # phones behind one NAT address share a source: bob's stale password must not block alice
    clock = FakeClock()
    server = make_server(clock, max_failures=3, max_source_failures=8)
    src = "198.51.100.7"
    for _ in range(3):
        assert not login(server, "bob", "old-password", source=src).ok
    assert server.blocked(src, "bob") > 0
    assert server.blocked(src, "alice") == 0.0
    assert login(server, "alice", "Secr3t", source=src).ok


def test_reset_backoff_forgets_failures():
    server = make_server(FakeClock(), max_failures=1)
    login(server, "alice", "wrong", source="s")
    assert server.blocked("s", "alice") > 0
    server.reset_backoff()
    assert server.blocked("s", "alice") == 0.0 and login(server, "alice", "Secr3t", source="s").ok


def test_spraying_many_user_names_from_one_address_is_slowed_too():
    clock = FakeClock()
    server = make_server(clock, max_failures=3, max_source_failures=8)
    src = "203.0.113.66"
    for i in range(8):
        assert not login(server, f"user{i}", "guess", source=src).ok
    assert server.blocked(src) > 0 and server.blocked(src, "somebody-new") > 0
    assert login(server, "alice", "Secr3t", source=src).reason == "too many failures, backing off"
    assert server.blocked("192.0.2.200", "alice") == 0.0


def test_source_memory_is_bounded():
    server = make_server(max_failures=1, max_sources=3)
    for i in range(10):
        login(server, "bob", "x", source=f"10.0.0.{i}")
    assert len(server._sources) == 3


# --- malformed input -----------------------------------------------------------------------------

def _good_header(server: DigestServer) -> str:
    return DigestClient("alice", "Secr3t").authorization(server.challenges()[0], "REGISTER", "sip:x")


@pytest.mark.parametrize("mutate,reason", [
    (lambda h: "", "malformed credentials: missing auth scheme"),
    (lambda h: "Basic YWxpY2U6U2VjcjN0", "not Digest credentials"),
    (lambda h: h.replace('username="alice"', 'username="alice'), "malformed credentials"),
    (lambda h: h.replace("username=", "username "), "malformed credentials: expected '='"),
    (lambda h: h + ', realm="x"', "malformed credentials: duplicate parameter 'realm'"),
    (lambda h: h.replace(", ", " "), "malformed credentials: expected ','"),
    (lambda h: h + "\r\nVia: x", "malformed credentials: control character"),
    (lambda h: h + ", x=" + "a" * 9000, "malformed credentials: header longer"),
    (lambda h: h.replace(', response="', ', resp="'), "missing parameter(s): response"),
    (lambda h: h.replace("algorithm=SHA-256", "algorithm=SHA-512-256"), "unsupported algorithm"),
    (lambda h: h.replace("algorithm=SHA-256", "algorithm=MD5-sess"), "unsupported algorithm"),
    (lambda h: h.replace('realm="earshot.local"', 'realm="evil.example"'), "wrong realm"),
    (lambda h: h.replace("qop=auth", "qop=auth-conf"), "unsupported qop"),
    (lambda h: h.replace("cnonce=", "xcnonce="), "missing cnonce"),
    (lambda h: h.replace('response="', 'response="0'), "bad response format"),
    (lambda h: h + ", userhash=true", "userhash is not supported"),
    (lambda h: h + ', x="dangling\\', "malformed credentials"),
    (lambda h: h.replace('username="alice"', 'username="al\udcffice"'), "malformed credentials: header is not valid UTF-8"),
])
def test_malformed_headers_fail_with_reason(mutate, reason):
    server = make_server()
    result = server.verify("REGISTER", mutate(_good_header(server)), "192.0.2.1")
    assert not result.ok and not result.stale and result.username is None
    assert result.reason.startswith(reason)


def test_parse_auth_header_quoting_commas_case_and_whitespace():
    scheme, p = parse_auth_header(
        'digest  USERNAME = "a\\"b\\\\c" ,, Realm="x, y",uri="sip:a@b;transport=tcp",'
        ' nc=00000001 , Qop = auth ,')
    assert scheme == "digest"
    assert p == {"username": 'a"b\\c', "realm": "x, y", "uri": "sip:a@b;transport=tcp",
                 "nc": "00000001", "qop": "auth"}


@pytest.mark.parametrize("text", ['Digest a', 'Digest a=', 'Digest =b', 'Digest a="b" c', 'Digest a=b"c"',
                                  'Di@gest a=b', 'Digest a="x', 'Digest a=b, a=c', 'Digest a=b, A=c'])
def test_parse_auth_header_rejects(text):
    with pytest.raises(DigestError):
        parse_auth_header(text)


def test_secrets_stay_out_of_reprs_and_reasons():
    server = make_server()
    client = DigestClient("alice", "Secr3t")
    results = [login(server, "alice", "Secr3t"), login(server, "alice", "wrong-Secr3t"),
               server.verify("REGISTER", 'Digest username="alice", response="Secr3t"', "x")]
    # Nothing from the wire is echoed: a Basic header or a garbled one may carry the password.
    results += [server.verify("REGISTER", h, "y") for h in (
        "Basic YWxpY2U6U2VjcjN0", "Basic Secr3t", "Digest Secr3t", "Digest Secr3t=1, Secr3t=2",
        'Digest x="Secr3t', "Digest Secr3t=", "Digest a=Secr3t b")]
    assert "YWxpY2U6U2VjcjN0" not in repr(results)
    for text in [repr(server), repr(client), str(client), *map(repr, results)]:
        assert "Secr3t" not in text and SECRET.decode() not in text and "hunter2" not in text


# --- client ------------------------------------------------------------------------------------------

def test_client_nc_counts_per_nonce_and_escapes_quotes():
    client = DigestClient('we"ird\\user', "pw", cnonce_factory=lambda: "c1")
    a = 'Digest realm="r", nonce="n1", qop="auth"'
    b = 'Digest realm="r", nonce="n2", qop="auth"'
    ncs = [parse_auth_header(client.authorization(ch, "REGISTER", "sip:x"))[1]["nc"] for ch in (a, a, b, a)]
    assert ncs == ["00000001", "00000002", "00000001", "00000003"]
    assert parse_auth_header(client.authorization(a, "REGISTER", "sip:x"))[1]["username"] == 'we"ird\\user'


def test_client_choose_skips_unusable_and_raises_when_none():
    client = DigestClient("a", "b")
    good = 'Digest realm="r", nonce="n", algorithm=MD5'
    assert client.choose(['Basic realm="r"', 'Digest realm="r", nonce="n", algorithm=SHA-512-256',
                          'Digest realm="r', good]) == good
    with pytest.raises(DigestError):
        client.choose(['Digest realm="r", nonce="n", algorithm=AKAv1-MD5', "Basic x"])
    with pytest.raises(DigestError):
        client.authorization('Digest realm="r", nonce="n", qop="auth-conf"', "REGISTER", "sip:x")
    with pytest.raises(DigestError):
        client.authorization('Digest nonce="n"', "REGISTER", "sip:x")


def test_server_rejects_bad_configuration():
    for kw in ({"secret": b"short"}, {"algorithms": ()}, {"algorithms": ("SHA-512",)},
               {"realm": ""}, {"realm": 'a"b'}, {"nonce_ttl": 0}, {"backoff_max": 0.5}):
        args = {"realm": "r", "secret": SECRET, "lookup_password": PASSWORDS.get, **kw}
        with pytest.raises(ValueError):
            DigestServer(**args)


# --- properties -----------------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)


@settings(max_examples=150, deadline=None)
@given(user=_text, password=st.text(max_size=20), uri=_text, algorithm=st.sampled_from(["SHA-256", "MD5"]))
def test_property_client_server_round_trip_any_text(user, password, uri, algorithm):
    server = DigestServer("earshot.local", SECRET, {user: password}.get, clock=FakeClock())
    challenge = next(c for c in server.challenges() if algorithm in c)
    header = DigestClient(user, password).authorization(challenge, "INVITE", uri)
    assert server.verify("INVITE", header, "s", request_uri=uri) == AuthResult(True, user, False, "ok")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_property_garbage_never_raises(text):
    server = make_server()
    for candidate in (text, "Digest " + text):
        result = server.verify("REGISTER", candidate, "fuzz")
        assert not result.ok
        try:
            parse_auth_header(candidate)
        except DigestError:
            pass
