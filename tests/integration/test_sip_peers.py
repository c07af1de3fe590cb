"""Earshot's SIP stack against real peers on 127.0.0.1 (tests/peers drivers): SIPp UAC calls into an
answering Earshot UA, baresip registering with digest auth, and Earshot as a gateway client
registering to (and calling through) a SIPp UAS that challenges with 401.
Every peer is bounded by its own timeout; the asyncio side is bounded by wait_for."""
from __future__ import annotations

import asyncio
from functools import partial
import gc
import os
import secrets
from pathlib import Path

import pytest

from firmware.sip import sdp
from firmware.sip.auth import DigestServer
from firmware.sip.registrar import Registrar
from firmware.sip.registration import GatewayRegistration
from firmware.sip.transaction import Timers
from firmware.sip.transport import Transport
from firmware.sip.ua import IncomingCall, UserAgent
from tests.peers import PeerGroup
from tests.peers.baresip import Account, Baresip
from tests.peers.sipp import Sipp
from tests import asynctest

pytestmark = pytest.mark.peers
HOST = "127.0.0.1"
TIMERS = Timers(t1=0.2, t2=1.6, t4=1.0)   # 64*T1 = 12.8 s: the tables drain within the test


run = partial(asynctest.run, timeout=90.0)


async def wait_until(cond, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


def open_sockets() -> int:
    """Sockets this process holds (fds linking to socket:[…]), after collecting garbage so that
    sockets other tests dropped without closing do not count."""
    gc.collect()
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


def answering(ua: UserAgent) -> None:
    """The test extension: answer every call with a negotiated SDP; the caller hangs up."""
    def on_invite(call: IncomingCall) -> None:
        try:
            answer, _ = sdp.negotiate(sdp.parse(call.remote_sdp), HOST, 40000)
        except ValueError:
            call.reject(488)
            return
        call.ringing()
        call.answer(answer.encode())
    ua.on_invite = on_invite


def test_sipp_uac_sequential_and_20_concurrent_calls_leave_nothing_behind(tmp_path: Path) -> None:
    peers = PeerGroup(tmp_path)

    async def main():
        before = open_sockets()
        t = Transport(HOST, 0)
        await t.start()
        ua = UserAgent(t, domain=HOST, timers=TIMERS)
        answering(ua)
        try:
            seq = peers.add(Sipp(tmp_path, "uac", remote=f"{HOST}:{t.port}", name="seq", calls=10,
                                 rate=20, limit=1, timeout=30))
            r1 = await asyncio.to_thread(seq.run)
            assert r1.ok and r1.successful == 10 and r1.failed == 0, r1.output
            # "no retransmission storm": on an idle machine this is 0; a loaded CI core may delay one
            # answer past SIPp's T1, which is correct protocol behaviour, not a storm.
            assert r1.retransmissions <= 1, r1.stats
            par = peers.add(Sipp(tmp_path, "uac", remote=f"{HOST}:{t.port}", name="par", calls=40,
                                 rate=200, limit=20, timeout=30))
            r2 = await asyncio.to_thread(par.run)
            assert r2.ok and r2.successful == 40 and r2.failed == 0, r2.output
            assert r2.retransmissions <= 4, r2.stats
            assert not r1.errors.strip() and not r2.errors.strip(), r1.errors + r2.errors
            # nothing retransmitted on our side either
            assert ua.stats_2xx_retransmissions <= 5
            assert ua.layer.stats.server_retransmissions <= 5
            assert len(ua.calls) == 0 and len(ua.dialogs) == 0
            await wait_until(lambda: len(ua.layer) == 0, 64 * TIMERS.t1 + 5)   # timers J and L
            assert t.connections == 0
        finally:
            await ua.close()
        assert open_sockets() == before

    try:
        run(main())
    finally:
        peers.close()


def test_sipp_uac_over_tcp_call_completes(tmp_path: Path) -> None:
    peers = PeerGroup(tmp_path)

    async def main():
        t = Transport(HOST, 0)
        await t.start()
        ua = UserAgent(t, domain=HOST, timers=TIMERS)
        answering(ua)
        try:
            s = peers.add(Sipp(tmp_path, "uac", remote=f"{HOST}:{t.port}", name="tcp", calls=3,
                               rate=10, limit=1, timeout=20, transport="tcp"))
            r = await asyncio.to_thread(s.run)
            assert r.ok and r.successful == 3, r.output
            assert len(ua.calls) == 0 and len(ua.dialogs) == 0
            # timer J is 0 on TCP, timer L (accepted INVITE) stays 64*T1 on every transport
            await wait_until(lambda: len(ua.layer) == 0, 64 * TIMERS.t1 + 5)
            await wait_until(lambda: t.connections == 0, 5)   # SIPp's connection closed with it
        finally:
            await ua.close()
        assert t.connections == 0

    try:
        run(main())
    finally:
        peers.close()


def _registrar_ua(users: dict[str, str]) -> tuple[Transport, Registrar, DigestServer]:
    auth = DigestServer("earshot", secrets.token_bytes(32), users.get, algorithms=("MD5",))
    return Transport(HOST, 0), Registrar(HOST, auth, min_expires=10), auth


def test_baresip_registers_with_digest_right_password_only(tmp_path: Path) -> None:
    peers = PeerGroup(tmp_path)

    async def main():
        t, reg, auth = _registrar_ua({"1001": "s3cret", "1002": "other"})
        await t.start()
        ua = UserAgent(t, domain=HOST, digest_server=auth, registrar=reg, timers=TIMERS)
        changes: list[str] = []
        reg.on_change = lambda user, contacts: changes.append(user)
        try:
            good = peers.add(Baresip(tmp_path, "good", Account("1001", registrar=f"{HOST}:{t.port}",
                                                                password="s3cret"), lifetime=20))
            bad = peers.add(Baresip(tmp_path, "bad", Account("1002", registrar=f"{HOST}:{t.port}",
                                                              password="wrong"), lifetime=20))
            await asyncio.to_thread(good.start)
            await asyncio.to_thread(bad.start)
            await asyncio.to_thread(good.wait_registered, 10.0)
            contacts = reg.lookup("1001")
            assert len(contacts) == 1 and contacts[0].source is not None
            assert contacts[0].uri.port == good.sip_port and changes == ["1001"]
            # the wrong password never gets a binding; baresip reports the failure
            await wait_until(lambda: bad.reg_status().get(bad.aor) == "ERR", 10)
            assert reg.lookup("1002") == [] and "1002" not in changes
        finally:
            await asyncio.to_thread(peers.close)
            await ua.close()

    run(main())


def test_gateway_client_registers_to_sipp_uas_with_401_and_calls_through_it(tmp_path: Path) -> None:
    peers = PeerGroup(tmp_path)

    async def main():
        t = Transport(HOST, 0)
        await t.start()
        ua = UserAgent(t, domain=HOST, timers=TIMERS)
        try:
            registrar = peers.add(Sipp(tmp_path, "uas_auth_register", name="registrar", calls=1,
                                       timeout=20, keys={"realm": "pbx", "user": "earshot",
                                                         "password": "gw-pass", "expires": "300"}))
            await asyncio.to_thread(registrar.start)
            states: list[str] = []
            gw = GatewayRegistration(ua, registrar=f"{HOST}:{registrar.port}", username="earshot",
                                     password="gw-pass", expires=300,
                                     on_state=lambda s, g: states.append(s))
            gw.start()
            await gw.wait_state("registered", 10)
            assert gw.granted == 300 and states == ["trying", "registered"]
            assert gw.last_response is not None and gw.last_response.cseq[0] == 2  # challenged once
            r = await asyncio.to_thread(registrar.wait)
            assert r.ok and r.successful == 1, r.output
            await gw.stop(unregister=False)

            # a call through the "PBX": a SIPp UAS that answers
            uas = peers.add(Sipp(tmp_path, "uas", name="pbx-uas", calls=1, timeout=20))
            await asyncio.to_thread(uas.start)
            offer = sdp.make_offer(HOST, 40010).encode()
            call = await ua.call(f"sip:5551234@{HOST}:{uas.port}", offer, from_user="earshot",
                                 auth=("earshot", "gw-pass"))
            answer = await call.wait("answer", 10)
            assert answer.status == 200 and call.remote_sdp
            await call.hangup()
            r2 = await asyncio.to_thread(uas.wait)
            assert r2.ok and r2.successful == 1, r2.output
            assert len(ua.calls) == 0 and len(ua.dialogs) == 0
        finally:
            await ua.close()

    try:
        run(main())
    finally:
        peers.close()


def test_gateway_client_registers_to_kamailio_and_calls_both_ways_through_it(tmp_path: Path) -> None:
    """kamailio challenges REGISTER (401); Earshot registers as "earshot", calls a registered baresip
    through the proxy (Record-Route → our route set carries the BYE), and takes a call routed to it."""
    from tests.peers.kamailio import Kamailio
    peers = PeerGroup(tmp_path)

    async def main():
        kam = peers.add(Kamailio(tmp_path, users={"earshot": "gw-pass", "bob": "bobpw"}, lifetime=60))
        await asyncio.to_thread(kam.start)
        t = Transport(HOST, 0)
        await t.start()
        ua = UserAgent(t, domain=HOST, timers=TIMERS)
        answering(ua)
        try:
            gw = GatewayRegistration(ua, registrar=kam.addr, username="earshot", password="gw-pass",
                                     expires=120)
            gw.start()
            await gw.wait_state("registered", 10)
            assert gw.last_response.cseq[0] == 2                     # answered one 401
            locations = await asyncio.to_thread(kam.dump_locations)
            assert any(f":{t.port}" in c for c in locations.get("earshot", [])), locations
            bob = peers.add(Baresip(tmp_path, "bob", Account("bob", registrar=kam.addr, password="bobpw",
                                                             answermode="auto"), lifetime=30))
            await asyncio.to_thread(bob.start)
            await asyncio.to_thread(bob.wait_registered, 10.0)

            out = await ua.call(f"sip:bob@{kam.addr}", sdp.make_offer(HOST, 40020).encode(),
                                from_user="earshot")
            ok = await out.wait("answer", 10)
            assert ok.status == 200 and out.dialog is not None
            assert out.dialog.route_set and out.dialog.route_set[0].uri.port == kam.port  # via kamailio
            await asyncio.to_thread(bob.await_event, "CALL_ESTABLISHED", 10)
            bye = await out.hangup()
            assert bye is not None and bye.status == 200
            await asyncio.to_thread(bob.await_event, "CALL_CLOSED", 10)

            # and the other way: bob dials earshot at the proxy, kamailio looks us up
            incoming: asyncio.Queue = asyncio.Queue()

            def take(call: IncomingCall) -> None:
                answer, _ = sdp.negotiate(sdp.parse(call.remote_sdp), HOST, 40030)
                call.answer(answer.encode())
                incoming.put_nowait(call)
            ua.on_invite = take
            await asyncio.to_thread(bob.dial, f"sip:earshot@{kam.addr}")
            call = await asyncio.wait_for(incoming.get(), 10)
            await call.wait("ack", 10)
            await call.hangup()
            await asyncio.to_thread(bob.await_event, "CALL_CLOSED", 10)
            await gw.stop()
            assert gw.state == "unregistered"
            assert len(ua.calls) == 0 and len(ua.dialogs) == 0
        finally:
            await ua.close()

    try:
        run(main())
    finally:
        peers.close()
