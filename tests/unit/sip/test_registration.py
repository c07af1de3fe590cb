"""sip.registration (gateway client) against our own registrar over loopback: digest answer,
refresh before expiry, back-off on failure, 423 handling, unregister, state callbacks."""
from __future__ import annotations

import asyncio

import pytest

from firmware.sip.auth import DigestServer
from firmware.sip.registrar import Registrar
from firmware.sip.registration import GatewayRegistration
from firmware.sip.transaction import Timers
from firmware.sip.transport import Transport
from firmware.sip.ua import UserAgent
from tests.asynctest import run, wait_until

HOST = "127.0.0.1"
FAST = Timers(t1=0.02, t2=0.08, t4=0.1)


async def upstream(min_expires: int = 1) -> tuple[UserAgent, Registrar]:
    t = Transport(HOST, 0)
    await t.start()
    auth = DigestServer("pbx.test", b"s" * 32, {"earshot": "gw-pass"}.get)
    reg = Registrar("pbx.test", auth, min_expires=min_expires, default_expires=max(60, min_expires),
                    max_expires=3600)
    return UserAgent(t, domain="pbx.test", registrar=reg, timers=FAST), reg


async def client() -> UserAgent:
    t = Transport(HOST, 0)
    await t.start()
    return UserAgent(t, domain="earshot.test", timers=FAST)


def test_registers_with_digest_refreshes_and_unregisters() -> None:
    async def main():
        pbx, reg = await upstream()
        me = await client()
        states = []
        seen = asyncio.Queue()
        reg.on_change = lambda user, contacts: seen.put_nowait(len(contacts))
        gw = GatewayRegistration(me, registrar=f"{HOST}:{pbx.transport.port}", username="earshot",
                                 password="gw-pass", expires=2, on_state=lambda s, g: states.append(s))
        gw.start()
        await gw.wait_state("registered", 5)
        assert await seen.get() == 1 and gw.granted == 2
        [c] = reg.lookup("earshot")
        assert c.uri.port == me.transport.port
        first_cseq = gw.last_response.cseq[0]
        assert await seen.get() == 1             # the refresh, before the 2 s binding expired
        await wait_until(lambda: gw.last_response.cseq[0] > first_cseq)
        assert len(reg.lookup("earshot")) == 1 and gw.state == "registered"
        await gw.stop()
        assert await seen.get() == 0 and reg.lookup("earshot") == []
        assert states == ["trying", "registered", "unregistered"]
        await me.close()
        await pbx.close()
    run(main())


def test_wrong_password_fails_and_retries_with_backoff() -> None:
    async def main():
        pbx, reg = await upstream()
        me = await client()
        states = []
        gw = GatewayRegistration(me, registrar=f"{HOST}:{pbx.transport.port}", username="earshot",
                                 password="wrong", retry_base=0.05, retry_max=0.2,
                                 on_state=lambda s, g: states.append(s))
        gw.start()
        await gw.wait_state("failed", 5)
        await gw.wait_state("trying", 5)         # retried after the back-off
        await gw.wait_state("failed", 5)
        assert gw.failures >= 2 and reg.lookup("earshot") == []
        assert gw.last_response is not None and gw.last_response.status in (401, 403)
        await gw.stop()
        assert states[:4] == ["trying", "failed", "trying", "failed"] and states[-1] == "unregistered"
        await me.close()
        await pbx.close()
    run(main())


def test_backoff_doubles_up_to_the_cap() -> None:
    async def main():
        me = await client()
        gw = GatewayRegistration(me, registrar="sip:192.0.2.1", username="u", password="p",
                                 retry_base=2, retry_max=30)
        delays = []
        for n in range(1, 7):
            gw.failures = n
            delays.append(gw.retry_delay())
        assert delays == [2, 4, 8, 16, 30, 30]
        assert gw.refresh_delay(3600) == 3570 and gw.refresh_delay(60) == 30
        await me.close()
    run(main())


def test_interval_too_brief_raises_expiry_to_min_expires() -> None:
    async def main():
        pbx, reg = await upstream(min_expires=120)
        me = await client()
        gw = GatewayRegistration(me, registrar=f"{HOST}:{pbx.transport.port}", username="earshot",
                                 password="gw-pass", expires=30)
        gw.start()
        await gw.wait_state("registered", 5)
        assert gw.granted == 120 and reg.lookup("earshot")[0].expires == 120
        await gw.stop()
        await me.close()
        await pbx.close()
    run(main())


def test_unreachable_registrar_times_out_to_failed() -> None:
    async def main():
        me = await client()
        probe = Transport(HOST, 0)
        await probe.start()
        dead = probe.port
        await probe.close()
        gw = GatewayRegistration(me, registrar=f"{HOST}:{dead}", username="u", password="p", retry_base=5)
        gw.start()
        await gw.wait_state("failed", 5)          # timer F (64*T1) gave a local 408
        assert gw.last_response.status == 408
        await gw.stop()
        await me.close()
    run(main())


def test_bad_arguments_raise_value_error() -> None:
    async def main():
        me = await client()
        with pytest.raises(ValueError):
            GatewayRegistration(me, registrar="sip:h", username="u", password="p", expires=0)
        with pytest.raises(ValueError):
            GatewayRegistration(me, registrar="sip:h", username="u", password="p", retry_base=10, retry_max=1)
        await me.close()
    run(main())
