"""The B2BUA with real peers on 127.0.0.1: baresip phones and SIPp call each other through
Earshot's switch (built in-process: transport, UA, registrar, switch, media engine), and every
call leaves nothing behind (channel table empty, RTP ports back in the allocator).

Each phone plays its own tone; the recordings are checked spectrally (tests.peers.audio)."""
from __future__ import annotations

import asyncio
from functools import partial
import secrets
from pathlib import Path
from types import SimpleNamespace

import pytest

from firmware.config import Config, Gateway, SipConfig, User
from firmware.media.engine import MediaEngine
from firmware.sip.auth import DigestServer
from firmware.sip.registrar import Registrar
from firmware.sip.transaction import Timers
from firmware.sip.transport import Transport
from firmware.sip.ua import UserAgent
from firmware.switch import Dialplan, HangupCause, Switch
from firmware.switch import events as ev
from firmware.switch.wiring import attach
from tests.peers import PeerGroup
from tests.peers.audio import has_tone, read_wav
from tests.peers.baresip import Account, Baresip
from tests.peers.ports import rtp_range
from tests.peers.sipp import Sipp
from tests import asynctest

pytestmark = pytest.mark.peers
HOST = "127.0.0.1"
TIMERS = Timers(t1=0.2, t2=1.6, t4=1.0)
USERS = (User("1001", "pw1001", "Agent 1001", "sales"), User("1002", "pw1002", "Agent 1002", "sales"),
         User("1003", "pw1003", "Agent 1003"))
TONE_A, TONE_B = 1000, 440


run = partial(asynctest.run, timeout=90.0)


async def until(cond, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def blocking(fn, *args):
    return await asyncio.to_thread(fn, *args)


class Stack:
    """Earshot in-process: everything app.py will wire, on free loopback ports."""

    async def start(self, *, gateways=(), dialplan: str | None = None, trusted=()) -> Stack:
        lo, _ = rtp_range(40)
        self.rtp_ports = f"{lo}-{lo + 39}"
        self.cfg = Config(sip=SipConfig(listen=f"{HOST}:0", domain=HOST, rtp_ports=self.rtp_ports),
                          users=USERS, gateways=tuple(gateways))
        self.transport = Transport(HOST, 0)
        await self.transport.start()
        auth = DigestServer(HOST, secrets.token_bytes(32), self.cfg.password_for, algorithms=("MD5",))
        self.registrar = Registrar(HOST, auth, min_expires=10)
        self.ua = UserAgent(self.transport, domain=HOST, digest_server=auth, registrar=self.registrar,
                            timers=TIMERS, trusted_hosts=set(trusted))
        self.switch = Switch(self.cfg, dialplan=Dialplan.parse(dialplan) if dialplan else None)
        self.engine = MediaEngine(self.rtp_ports, HOST)
        await self.engine.start()
        self.profile = attach(self.switch, SimpleNamespace(ua=self.ua, registrar=self.registrar), self.engine)
        self.events: list[ev.Event] = []
        self.switch.events.subscribe("all", self.events.append)
        return self

    @property
    def port(self) -> int:
        return self.transport.port

    def uri(self, user: str) -> str:
        return f"sip:{user}@{HOST}:{self.port}"

    def phone(self, peers: PeerGroup, tmp: Path, user: str, source, codecs=("pcmu",), answer="auto",
              lifetime: float = 40) -> Baresip:
        pw = self.cfg.password_for(user)
        return peers.add(Baresip(tmp, f"p{user}", Account(user, registrar=f"{HOST}:{self.port}", password=pw,
                                                          answermode=answer, codecs=codecs),
                                 source=source, lifetime=lifetime))

    def named(self, name: str, uuid: str | None = None) -> list[ev.Event]:
        return [e for e in self.events if e.name == name and (uuid is None or e.uuid == uuid)]

    async def idle(self, timeout: float = 10.0) -> None:
        """Every channel gone and every RTP port back."""
        await until(lambda: len(self.switch) == 0 and self.engine.legs == 0, timeout)
        await self.engine.wait_idle()
        assert self.engine.ports.available == self.engine.ports.capacity

    async def close(self) -> None:
        await self.switch.close()
        await self.engine.stop()
        await self.ua.close()


async def two_phones(stack: Stack, peers: PeerGroup, tmp: Path, codecs_a=("pcmu",), codecs_b=("pcmu",),
                     answer_b="auto") -> tuple[Baresip, Baresip]:
    a = stack.phone(peers, tmp, "1001", TONE_A, codecs_a)
    b = stack.phone(peers, tmp, "1002", TONE_B, codecs_b, answer=answer_b)
    for p in (a, b):
        await blocking(p.start)
    for p in (a, b):
        await blocking(p.wait_registered, 10.0)
    return a, b


def heard(phone: Baresip) -> tuple[int, object]:
    rec = phone.recordings()[-1]
    return read_wav(rec.heard)


def test_two_phones_hear_each_other_dtmf_and_hangup_frees_everything(tmp_path: Path) -> None:
    peers = PeerGroup(tmp_path)

    async def main():
        stack = await Stack().start()
        try:
            a, b = await two_phones(stack, peers, tmp_path)
            await blocking(a.dial, stack.uri("1002"))
            await blocking(a.await_event, "CALL_ESTABLISHED", 10)
            await blocking(b.await_event, "CALL_ESTABLISHED", 10)
            await until(lambda: len(stack.named(ev.CHANNEL_BRIDGE)) == 1)
            a_leg, b_leg = stack.switch.channels()
            assert a_leg.name.startswith("sofia/internal/1001@") and a_leg.direction == "inbound"
            assert b_leg.direction == "outbound" and b_leg.get_variable("caller_id_number") == "1001"
            # the seed's global extension filled the spymap with the A-leg's uuid
            assert stack.switch.db.api("select/spymap/1001") == a_leg.uuid
            await asyncio.sleep(2.0)
            await blocking(a.send_dtmf, "159#")
            got = [(await blocking(b.await_event, "CALL_DTMF_START", 10))["param"] for _ in range(4)]
            assert got == list("159#")
            await until(lambda: len(stack.named(ev.DTMF, a_leg.uuid)) == 4)
            assert [e.headers["DTMF-Digit"] for e in stack.named(ev.DTMF, a_leg.uuid)] == list("159#")
            assert {e.headers["DTMF-Source"] for e in stack.named(ev.DTMF, a_leg.uuid)} == {"RTP"}
            await asyncio.sleep(0.5)
            await blocking(b.hangup)                      # the callee hangs up
            await blocking(a.await_event, "CALL_CLOSED", 10)
            await stack.idle()
            assert a_leg.hangup_cause is HangupCause.NORMAL_CLEARING
            assert b_leg.hangup_cause is HangupCause.NORMAL_CLEARING
            rate, pcm_a = await blocking(heard, a)
            assert has_tone(pcm_a, rate, TONE_B) and not has_tone(pcm_a, rate, TONE_A)
            rate, pcm_b = await blocking(heard, b)
            assert has_tone(pcm_b, rate, TONE_A) and not has_tone(pcm_b, rate, TONE_B)
        finally:
            await blocking(peers.close)
            await stack.close()

    run(main())


def test_echo_and_tone_test_extensions(tmp_path: Path) -> None:
    peers = PeerGroup(tmp_path)

    async def main():
        stack = await Stack().start()
        try:
            a = stack.phone(peers, tmp_path, "1001", TONE_B)
            await blocking(a.start)
            await blocking(a.wait_registered, 10.0)
            for n, (ext, hears, not_hears) in enumerate((("9196", TONE_B, TONE_A), ("9197", TONE_A, TONE_B))):
                await blocking(a.dial, stack.uri(ext))
                await blocking(a.await_event, "CALL_ESTABLISHED", 10)
                await asyncio.sleep(2.0)
                await blocking(a.hangup)
                await blocking(a.await_event, "CALL_CLOSED", 10)
                await stack.idle()
                recs = await blocking(a.recordings)
                assert len(recs) == n + 1
                rate, pcm = read_wav(recs[-1].heard)
                assert has_tone(pcm, rate, hears) and not has_tone(pcm, rate, not_hears), ext
                await asyncio.sleep(1.1)      # baresip names recordings by the second
        finally:
            await blocking(peers.close)
            await stack.close()

    run(main())


def test_busy_no_answer_and_cancel(tmp_path: Path) -> None:
    """486 from the callee → 486 to the caller (USER_BUSY); call_timeout → 480 (NO_ANSWER) and a
    CANCEL to the callee; the caller hanging up while it rings → CANCEL (ORIGINATOR_CANCEL)."""
    peers = PeerGroup(tmp_path)
    plan = """<include><context name="default">
      <extension name="short"><condition field="destination_number" expression="^(1002)$">
        <action application="set" data="call_timeout=2"/>
        <action application="bridge" data="user/$1"/></condition></extension>
      <extension name="long"><condition field="destination_number" expression="^7(1002)$">
        <action application="bridge" data="user/$1"/></condition></extension>
    </context></include>"""

    async def main():
        stack = await Stack().start(dialplan=plan)
        try:
            a, b = await two_phones(stack, peers, tmp_path, answer_b="manual")

            async def attempt(ext: str) -> tuple:
                n = len(stack.named(ev.CHANNEL_HANGUP_COMPLETE))
                await blocking(a.dial, stack.uri(ext))
                await blocking(b.await_event, "CALL_INCOMING", 10)
                return n

            async def causes(n: int) -> dict[str, str]:
                await until(lambda: len(stack.named(ev.CHANNEL_HANGUP_COMPLETE)) >= n + 2)
                await stack.idle()
                done = stack.named(ev.CHANNEL_HANGUP_COMPLETE)[n:]
                return {e.headers["Call-Direction"]: e.headers["Hangup-Cause"] for e in done}

            # busy: the callee rejects
            n = await attempt("71002")
            await blocking(b.hangup)
            closed = await blocking(a.await_event, "CALL_CLOSED", 10)
            assert "486" in closed.get("param", ""), closed
            assert await causes(n) == {"inbound": "USER_BUSY", "outbound": "USER_BUSY"}

            # no answer within call_timeout
            n = await attempt("1002")
            closed = await blocking(a.await_event, "CALL_CLOSED", 10)
            assert "480" in closed.get("param", ""), closed
            await blocking(b.await_event, "CALL_CLOSED", 10)
            assert await causes(n) == {"inbound": "NO_ANSWER", "outbound": "NO_ANSWER"}

            # the caller gives up while it rings
            n = await attempt("71002")
            await blocking(a.hangup)
            await blocking(b.await_event, "CALL_CLOSED", 10)
            assert await causes(n) == {"inbound": "ORIGINATOR_CANCEL", "outbound": "ORIGINATOR_CANCEL"}
        finally:
            await blocking(peers.close)
            await stack.close()

    run(main())


def test_pcmu_phone_calls_pcma_phone_through_a_transcoding_relay(tmp_path: Path) -> None:
    peers = PeerGroup(tmp_path)

    async def main():
        stack = await Stack().start()
        try:
            a, b = await two_phones(stack, peers, tmp_path, codecs_a=("pcmu",), codecs_b=("pcma",))
            await blocking(a.dial, stack.uri("1002"))
            await blocking(b.await_event, "CALL_ESTABLISHED", 10)
            await until(lambda: len(stack.named(ev.CHANNEL_BRIDGE)) == 1)
            a_leg, b_leg = stack.switch.channels()
            la, lb = a_leg.endpoint.media, b_leg.endpoint.media
            assert (la.codec, lb.codec) == ("PCMU", "PCMA") and la.relay is lb.relay and la.relay.transcoding
            # a stranger's RTP aimed at the A-leg's port is dropped, not relayed
            import socket
            stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                for k in range(5):
                    stranger.sendto(bytes([0x80, 0, 0, k]) + bytes(8) + bytes(160), (HOST, la.local_port))
            finally:
                stranger.close()
            await until(lambda: la.stats["rx_dropped_source"] >= 5)
            await asyncio.sleep(2.0)
            await blocking(a.hangup)                       # the caller hangs up this time
            await blocking(b.await_event, "CALL_CLOSED", 10)
            await stack.idle()
            rate, pcm_a = await blocking(heard, a)
            assert has_tone(pcm_a, rate, TONE_B) and not has_tone(pcm_a, rate, TONE_A)
            rate, pcm_b = await blocking(heard, b)
            assert has_tone(pcm_b, rate, TONE_A) and not has_tone(pcm_b, rate, TONE_B)
        finally:
            await blocking(peers.close)
            await stack.close()

    run(main())


def test_call_out_through_a_gateway_to_a_sipp_uas(tmp_path: Path) -> None:
    """1001 dials 1234; the dialplan bridges sofia/gateway/pbx/1234; the "PBX" (SIPp UAS) answers
    and echoes the RTP, so the phone hears its own tone through both relays."""
    peers = PeerGroup(tmp_path)
    plan = """<include><context name="default">
      <extension name="out"><condition field="destination_number" expression="^(\\d{4})$">
        <action application="set" data="hangup_after_bridge=true"/>
        <action application="bridge" data="sofia/gateway/pbx/$1"/></condition></extension>
    </context></include>"""

    async def main():
        uas = peers.add(Sipp(tmp_path, "uas_answer", name="pbx", calls=1, timeout=30, rtp_echo=True))
        await blocking(uas.start)
        stack = await Stack().start(dialplan=plan, gateways=(Gateway("pbx", uas.addr, register=False),),
                                    trusted={HOST})
        try:
            # trusted_hosts also covers the phone here (all on 127.0.0.1): the INVITE is not challenged
            a = stack.phone(peers, tmp_path, "1001", TONE_B)
            await blocking(a.start)
            await blocking(a.wait_registered, 10.0)
            await blocking(a.dial, stack.uri("1234"))
            await blocking(a.await_event, "CALL_ESTABLISHED", 10)
            await until(lambda: len(stack.named(ev.CHANNEL_BRIDGE)) == 1)
            b_leg = stack.switch.channels()[1]
            assert b_leg.name == "sofia/gateway/pbx/1234"
            await asyncio.sleep(2.0)
            await blocking(a.hangup)
            r = await blocking(uas.wait)
            assert r.ok and r.successful == 1, r.output
            await stack.idle()
            rate, pcm = await blocking(heard, a)
            assert has_tone(pcm, rate, TONE_B)
        finally:
            await blocking(peers.close)
            await stack.close()

    run(main())
