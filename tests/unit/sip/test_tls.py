"""SIP over TLS (RFC 3261 §26) on loopback: our UA to our UA (REGISTER, INVITE/BYE, Via TLS),
certificate verification on by default (self-signed rejected unless trusted, host name checked,
per-host opt-out), client certificates, a silent client cut by the handshake timeout while another
completes a call, and the sip.tls helpers (self-signed generation, fingerprint, bad files)."""
from __future__ import annotations

import asyncio
import logging
import ssl
import stat
import subprocess
from pathlib import Path

import pytest

from firmware.sip import tls
from firmware.sip.auth import DigestServer
from firmware.sip.message import Headers, Request, Via
from firmware.sip.registrar import Registrar
from firmware.sip.registration import GatewayRegistration
from firmware.sip.transaction import Timers
from firmware.sip.transport import Target, Transport, response_target
from firmware.sip.ua import IncomingCall, UserAgent
from firmware.sip.uri import SipUri
from tests.asynctest import run, wait_until

HOST = "127.0.0.1"
FAST = Timers(t1=0.02, t2=0.08, t4=0.1)
SDP_A = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
SDP_B = SDP_A.replace(b"40000", b"40002")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A server certificate (self-signed, SAN 127.0.0.1) and a second one used as a client's."""
    d = tmp_path_factory.mktemp("pki")
    cert, key = tls.ensure_self_signed(d / "server")
    ccert, ckey = tls.ensure_self_signed(d / "client", common_name="phone")
    return {"cert": cert, "key": key, "ccert": ccert, "ckey": ckey}


async def tls_ua(pki, *, client: ssl.SSLContext | None = None, server: ssl.SSLContext | None = None,
                 registrar: Registrar | None = None, domain: str = "a.test",
                 handshake_timeout: float = 10.0) -> UserAgent:
    t = Transport(HOST, 0, tls=server or tls.server_context(pki["cert"], pki["key"]),
                  tls_client=client if client is not None else tls.client_context(ca=pki["cert"]),
                  tls_handshake_timeout=handshake_timeout)
    await t.start()
    return UserAgent(t, domain=domain, registrar=registrar, timers=FAST)


def options_to(ua: UserAgent, port: int) -> Request:
    h = Headers()
    for k, v in (("Max-Forwards", "70"), ("From", "<sip:a@a.test>;tag=1"), ("To", "<sip:b@b.test>"),
                 ("Call-ID", Transport.new_branch()), ("CSeq", "1 OPTIONS")):
        h.set(k, v)
    return Request("OPTIONS", SipUri.parse(f"sip:b@{HOST}:{port};transport=tls"), h, b"")


# ------------------------------------------------------------------ helpers in sip.tls
def test_self_signed_is_made_once_private_and_fingerprint_matches_openssl(tmp_path) -> None:
    cert, key = tls.ensure_self_signed(tmp_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = cert.read_bytes()
    assert tls.ensure_self_signed(tmp_path) == (cert, key) and cert.read_bytes() == first  # reused
    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip().split("=", 1)[1] == tls.fingerprint(cert)
    assert len(tls.fingerprint(cert).split(":")) == 32


def test_bad_certificate_files_raise_value_error(tmp_path, pki) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ValueError, match="cannot load TLS certificate"):
        tls.server_context(tmp_path / "missing.pem", tmp_path / "missing.key")
    with pytest.raises(ValueError, match="cannot load TLS certificate"):
        tls.server_context(tmp_path / "junk.pem", pki["key"])
    with pytest.raises(ValueError, match="needs a CA file"):
        tls.server_context(pki["cert"], pki["key"], verify_clients=True)
    with pytest.raises(ValueError, match="cannot load TLS CA file"):
        tls.client_context(ca=tmp_path / "junk.pem")
    with pytest.raises(ValueError, match="no PEM certificate"):
        tls.fingerprint(tmp_path / "junk.pem")


def test_response_target_keeps_tls_and_its_default_port() -> None:
    via = Via.parse("SIP/2.0/TLS 10.0.0.1;branch=z9hG4bKx")
    assert response_target(via, None) == Target("tls", "10.0.0.1", 5061)


# ------------------------------------------------------------------ our UA to our UA
def test_register_invite_bye_between_our_uas_over_tls(pki) -> None:
    async def main(pki):
        auth = DigestServer("b.test", b"k" * 32, {"alice": "pw"}.get)
        reg = Registrar("b.test", auth, min_expires=1)
        b = await tls_ua(pki, registrar=reg, domain="b.test")
        a = await tls_ua(pki)
        seen_vias: list[str] = []
        b.transport.on_message = _spy(b.transport.on_message, seen_vias)
        gw = GatewayRegistration(a, registrar=f"sip:{HOST}:{b.transport.tls_port};transport=tls",
                                 username="alice", password="pw", domain="b.test", expires=60)
        gw.start()
        await gw.wait_state("registered", 5)
        [contact] = reg.lookup("alice")
        assert contact.source.transport == "tls"                       # reachable over its connection
        assert contact.uri.params.get("transport") == "tls" and contact.uri.port == a.transport.tls_port
        incoming: asyncio.Queue[IncomingCall] = asyncio.Queue()
        b.on_invite = incoming.put_nowait
        out = await a.call(f"sip:bob@{HOST}:{b.transport.tls_port};transport=tls", SDP_A, from_user="alice")
        inc = await incoming.get()
        assert inc.source.transport == "tls"
        inc.answer(SDP_B)
        assert (await out.wait("answer")).status == 200 and out.remote_sdp == SDP_B
        await inc.wait("ack")
        await out.hangup()
        await inc.wait("bye")
        assert await inc.ended == "remote bye"
        await gw.stop()
        assert reg.lookup("alice") == []
        assert seen_vias and all(v.startswith("SIP/2.0/TLS") for v in seen_vias)
        # nothing went over plain UDP or TCP; one TLS connection carried it all
        assert b.transport.stats.tcp_accepted == 0 and b.transport.stats.tls_accepted == 1
        assert a.transport.stats.tcp_accepted == 0
        await a.close()
        await b.close()
    run(main(pki))


def _spy(inner, vias: list[str]):
    def handler(msg, source):
        if isinstance(msg, Request):
            vias.append(str(msg.vias[0]))
        inner(msg, source)
    return handler


# ------------------------------------------------------------------ verification
def test_client_rejects_self_signed_server_unless_given_its_cert(pki, caplog) -> None:
    async def main(pki):
        server = await tls_ua(pki)
        port = server.transport.tls_port
        strict = await tls_ua(pki, client=tls.client_context())            # system CAs only
        resp = await strict.send_request(options_to(strict, port))
        assert resp.status == 503                                          # handshake refused
        assert server.transport.stats.received == 0
        trusting = await tls_ua(pki)                                       # given the server's cert
        assert (await trusting.send_request(options_to(trusting, port))).status == 200
        # trusted certificate but the wrong host name: refused too
        wrong = await tls_ua(pki)
        wrong.transport.tls_names[(HOST, port)] = "pbx.example.com"
        assert (await wrong.send_request(options_to(wrong, port))).status == 503
        # verification switched off for this host (a gateway with tls_verify = false)
        lax = await tls_ua(pki, client=tls.client_context())
        lax.transport.tls_unverified.add(HOST)
        assert (await lax.send_request(options_to(lax, port))).status == 200
        for ua in (server, strict, trusting, wrong, lax):
            await ua.close()
    with caplog.at_level(logging.WARNING, logger="earshot.sip.transport"):
        run(main(pki))
    assert any("CERTIFICATE_VERIFY_FAILED" in r.getMessage() for r in caplog.records)


def test_client_certificate_required_when_verifying_clients(pki) -> None:
    async def main(pki):
        server = await tls_ua(pki, server=tls.server_context(pki["cert"], pki["key"], verify_clients=True,
                                                             ca=pki["ccert"]))
        port = server.transport.tls_port
        anonymous = await tls_ua(pki)
        assert (await anonymous.send_request(options_to(anonymous, port))).status != 200
        phone = await tls_ua(pki, client=tls.client_context(ca=pki["cert"], cert=pki["ccert"], key=pki["ckey"]))
        assert (await phone.send_request(options_to(phone, port))).status == 200
        assert server.transport.stats.tls_accepted == 1
        for ua in (server, anonymous, phone):
            await ua.close()
    run(main(pki))


def test_silent_client_is_cut_after_handshake_timeout_while_another_completes_a_call(pki) -> None:
    async def main(pki):
        b = await tls_ua(pki, handshake_timeout=0.3)
        port = b.transport.tls_port
        silent_r, silent_w = await asyncio.open_connection(HOST, port)    # TCP up, no ClientHello
        incoming: asyncio.Queue[IncomingCall] = asyncio.Queue()
        b.on_invite = incoming.put_nowait
        a = await tls_ua(pki)
        out = await a.call(f"sip:bob@{HOST}:{port};transport=tls", SDP_A)
        inc = await incoming.get()
        inc.answer(SDP_B)
        assert (await out.wait("answer")).status == 200
        await inc.wait("ack")
        assert b.transport.connections == 1                              # the silent one is not counted
        assert await asyncio.wait_for(silent_r.read(), 5) == b""          # dropped by the server
        await out.hangup()
        await inc.wait("bye")
        silent_w.close()
        await a.close()
        await b.close()
    run(main(pki))


def test_plain_sip_on_the_tls_port_is_not_delivered(pki) -> None:
    async def main(pki):
        b = await tls_ua(pki, handshake_timeout=2.0)
        got = []
        b.transport.on_message = lambda m, s: got.append(m)
        r, w = await asyncio.open_connection(HOST, b.transport.tls_port)
        w.write(b"OPTIONS sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK1\r\n\r\n")
        await w.drain()
        answer = await asyncio.wait_for(r.read(), 5)                      # a TLS alert at most, then EOF
        assert b"SIP/2.0" not in answer
        assert got == [] and b.transport.stats.received == 0
        w.close()
        await b.close()
    run(main(pki))


# ------------------------------------------------------------------ the service from the config
def test_service_listens_on_tls_and_gateway_verification_follows_tls_verify(pki, tmp_path, monkeypatch,
                                                                           caplog) -> None:
    from firmware import config
    from firmware.sip.service import SipService
    monkeypatch.setenv("EARSHOT_STATE_DIR", str(tmp_path / "state"))

    async def main():
        auth = DigestServer("pbx.test", b"k" * 32, {"earshot": "gw-pass"}.get)
        reg = Registrar("pbx.test", auth, min_expires=1)
        pbx = await tls_ua(pki, registrar=reg, domain="pbx.test")     # self-signed upstream
        gw = f'host = "{HOST}:{pbx.transport.tls_port}"\nusername = "earshot"\npassword = "gw-pass"\n' \
             'realm = "pbx.test"\ntransport = "tls"\n'
        base = f'[sip]\nlisten = "{HOST}:0"\ntls_listen = "{HOST}:0"\n[[gateways]]\nname = "pbx"\n{gw}'
        strict = SipService(lambda: config.parse(base))
        await strict.start()
        assert strict.transport.tls_port > 0
        assert strict.tls_fingerprint == tls.fingerprint(tmp_path / "state" / tls.CERT_NAME)
        await strict.gateways["pbx"].wait_state("failed", 5)            # self-signed: refused by default
        assert reg.lookup("earshot") == []
        await strict.stop()
        lax = SipService(lambda: config.parse(base + "tls_verify = false\n"))
        assert lax.tls_fingerprint == strict.tls_fingerprint            # the generated cert is kept
        await lax.start()
        await lax.gateways["pbx"].wait_state("registered", 5)
        [c] = reg.lookup("earshot")
        assert c.source.transport == "tls" and c.uri.params.get("transport") == "tls"
        assert c.uri.port == lax.transport.tls_port
        await lax.stop()
        await pbx.close()
    with caplog.at_level(logging.INFO, logger="earshot.sip"):
        run(main())
    assert any("SHA-256 fingerprint" in r.getMessage() for r in caplog.records)
