"""Eavesdrop end to end with real phones: baresip A (1001, 440 Hz) calls B (1002, 1000 Hz) through
Earshot; supervisor S (1003, 2000 Hz, may_eavesdrop) dials the seed's extensions and steers the
session with RFC 4733 digits. Every phone records what it heard; each mode's window is checked
spectrally (who hears which tone)."""
from __future__ import annotations

import asyncio
from functools import partial
import secrets
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from firmware.audit import read as read_audit
from firmware.config import Config, EavesdropConfig, LogConfig, SipConfig, User
from firmware.media.engine import MediaEngine
from firmware.media.tap import TapHub
from firmware.sip.auth import DigestServer
from firmware.sip.registrar import Registrar
from firmware.sip.transaction import Timers
from firmware.sip.transport import Transport
from firmware.sip.ua import UserAgent
from firmware.switch import Dialplan, Switch
from firmware.switch import events as ev
from firmware.switch.eavesdrop_app import register
from firmware.switch.wiring import attach
from tests.peers import PeerGroup
from tests.peers.audio import has_tone, read_wav
from tests.peers.baresip import Account, Baresip
from tests.peers.ports import rtp_range
from tests import asynctest

pytestmark = pytest.mark.peers
HOST = "127.0.0.1"
TIMERS = Timers(t1=0.2, t2=1.6, t4=1.0)
TONES = {"1001": 440, "1002": 1000, "1003": 2000, "1004": 700, "1005": 1400}
USERS = (User("1001", "pw1001", "Agent 1001", "sales"), User("1002", "pw1002", "Agent 1002", "sales"),
         User("1003", "pw1003", "Supervisor", "", True),
         User("1004", "pw1004", "Agent 1004", "support"), User("1005", "pw1005", "Agent 1005", "support"))
IDLE_TONE = 920
MODE_S = 3.0            # how long each mode is held
SEED_QUEUE_DTMF = """<include><context name="default">
  <extension name="global" continue="true"><condition>
    <action application="db" data="insert/spymap/${caller_id_number}/${uuid}"/></condition></extension>
  <extension name="whisper_to_caller"><condition field="destination_number" expression="^87(.*)$">
    <action application="answer"/>
    <action application="set" data="eavesdrop_enable_dtmf=true"/>
    <action application="queue_dtmf" data="w2@500"/>
    <action application="eavesdrop" data="${db(select/spymap/$1)}"/></condition></extension>
  <extension name="local"><condition field="destination_number" expression="^(10\\d\\d)$">
    <action application="set" data="hangup_after_bridge=true"/>
    <action application="bridge" data="user/$1"/></condition></extension>
</context></include>"""


run = partial(asynctest.run, timeout=120.0)


async def until(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def blocking(fn, *args):
    return await asyncio.to_thread(fn, *args)


class Stack:
    """Earshot in-process (transport, UA, registrar, switch, media engine, eavesdrop) on loopback."""

    async def start(self, tmp: Path, eavesdrop: EavesdropConfig = EavesdropConfig(),
                    dialplan: str | None = None) -> Stack:
        lo, _ = rtp_range(60)
        self.audit_file = tmp / "audit.sqlite"
        self.cfg = Config(sip=SipConfig(listen=f"{HOST}:0", domain=HOST, rtp_ports=f"{lo}-{lo + 59}"),
                          users=USERS, eavesdrop=eavesdrop, log=LogConfig(audit_file=str(self.audit_file)))
        self.transport = Transport(HOST, 0)
        await self.transport.start()
        auth = DigestServer(HOST, secrets.token_bytes(32), self.cfg.password_for, algorithms=("MD5",))
        self.registrar = Registrar(HOST, auth, min_expires=10)
        self.ua = UserAgent(self.transport, domain=HOST, digest_server=auth, registrar=self.registrar,
                            timers=TIMERS)
        self.switch = Switch(self.cfg, dialplan=Dialplan.parse(dialplan) if dialplan else None)
        self.engine = MediaEngine(self.cfg.sip.rtp_ports, HOST)
        await self.engine.start()
        attach(self.switch, SimpleNamespace(ua=self.ua, registrar=self.registrar), self.engine)
        self.eavesdrop = register(self.switch, TapHub(self.engine.clock))
        self.events: list[ev.Event] = []
        self.switch.events.subscribe("all", self.events.append)
        return self

    def uri(self, ext: str) -> str:
        return f"sip:{ext}@{HOST}:{self.transport.port}"

    def phone(self, peers: PeerGroup, tmp: Path, user: str, codecs=("pcmu",)) -> Baresip:
        acc = Account(user, registrar=f"{HOST}:{self.transport.port}", password=self.cfg.password_for(user),
                      answermode="auto", codecs=codecs)
        return peers.add(Baresip(tmp, f"p{user}", acc, source=TONES[user], lifetime=60))

    def custom(self, subclass: str) -> list[ev.Event]:
        return [e for e in self.events if e.subclass == subclass]

    async def close(self) -> None:
        await self.switch.close()
        await self.engine.stop()
        await self.ua.close()


async def phones(stack: Stack, peers: PeerGroup, tmp: Path, users, codecs=None) -> dict[str, Baresip]:
    out = {u: stack.phone(peers, tmp, u, (codecs or {}).get(u, ("pcmu",))) for u in users}
    for p in out.values():
        await blocking(p.start)
    for p in out.values():
        await blocking(p.wait_registered, 10.0)
    return out


async def call(stack: Stack, caller: Baresip, callee: Baresip, ext: str) -> dict[str, float]:
    """Place a call; the monotonic time each phone's call (and recording) started."""
    await blocking(caller.dial, stack.uri(ext))
    await blocking(caller.await_event, "CALL_ESTABLISHED", 10)
    t_caller = time.monotonic()
    await blocking(callee.await_event, "CALL_ESTABLISHED", 10)
    return {caller.name: t_caller, callee.name: time.monotonic()}


def window(phone: Baresip, start: float, t0: float, t1: float, index: int = -1) -> tuple[int, np.ndarray]:
    """The part of ``phone``'s recording between monotonic times t0 and t1 (its call began at start)."""
    rate, pcm = read_wav(phone.recordings()[index].heard)
    return rate, pcm[int((t0 - start) * rate):int((t1 - start) * rate)]


def tones_in(phone: Baresip, start: float, t0: float, t1: float, candidates, index: int = -1) -> set[int]:
    rate, pcm = window(phone, start, t0, t1, index)
    assert len(pcm) > rate // 2, f"{phone.name}: recording too short for {t0 - start:.1f}-{t1 - start:.1f} s"
    return {hz for hz in candidates if has_tone(pcm, rate, hz)}


def test_listen_whisper_three_way_and_star_with_a_pcma_spy(tmp_path: Path) -> None:
    """881001 (the seed's spymap): mode 0, then 2, 1, 3, 0 by S's digits; * ends the session and the
    dialplan (S's call ends, A and B talk on). S speaks PCMA, the call PCMU."""
    peers = PeerGroup(tmp_path)
    windows: list[tuple[int, float]] = []

    async def main():
        stack = await Stack().start(tmp_path)
        try:
            ph = await phones(stack, peers, tmp_path, ("1001", "1002", "1003"), {"1003": ("pcma",)})
            a, b, s = ph["1001"], ph["1002"], ph["1003"]
            starts = await call(stack, a, b, "1002")
            await until(lambda: any(e.name == ev.CHANNEL_BRIDGE for e in stack.events))
            await blocking(s.dial, stack.uri("881001"))
            await blocking(s.await_event, "CALL_ESTABLISHED", 10)
            starts[s.name] = time.monotonic()
            await until(lambda: stack.custom("eavesdrop::start"))
            spy_uuid = stack.custom("eavesdrop::start")[0]["Eavesdrop-Spy-UUID"]
            assert stack.switch.get(spy_uuid).endpoint.media.codec == "PCMA"
            windows.append((0, time.monotonic()))
            await asyncio.sleep(MODE_S)
            for n, digit in enumerate("2130", 1):
                await blocking(s.send_dtmf, digit)
                await until(lambda: len(stack.custom("eavesdrop::mode")) == n, 5)
                windows.append((int(digit), time.monotonic()))
                assert stack.eavesdrop.modes() == {spy_uuid: int(digit)}
                await asyncio.sleep(MODE_S)
            await blocking(s.send_dtmf, "*")
            await blocking(s.await_event, "CALL_CLOSED", 10)       # the app returned, the dialplan ended
            stop = stack.custom("eavesdrop::stop")[0]
            assert stop["Eavesdrop-Reason"] == "next" and stop["Eavesdrop-Target-UUID"] == \
                stack.switch.db.api("select/spymap/1001")
            await asyncio.sleep(1.0)
            assert len(stack.switch) == 2                             # A and B still talk
            await blocking(a.hangup)
            await blocking(b.await_event, "CALL_CLOSED", 10)
            return stack, starts, ph
        finally:
            await blocking(peers.close)
            await stack.close()

    stack, starts, ph = run(main())
    a, b, s = ph["1001"], ph["1002"], ph["1003"]
    freqs = (440, 1000, 2000)
    for mode, t in windows:
        lo, hi = t + 0.6, t + MODE_S - 0.4
        assert tones_in(s, starts[s.name], lo, hi, freqs) == {440, 1000}, f"spy, mode {mode}"
        assert tones_in(a, starts[a.name], lo, hi, freqs) == ({1000, 2000} if mode in (2, 3) else {1000}), \
            f"A (target), mode {mode}"
        assert tones_in(b, starts[b.name], lo, hi, freqs) == ({440, 2000} if mode in (1, 3) else {440}), \
            f"B (peer), mode {mode}"
    # the confirmation tone of mode 2 (820 Hz) reached the spy right after the digit, not A or B
    t2 = dict(windows)[2]
    assert tones_in(s, starts[s.name], t2 - 0.2, t2 + 0.5, (820,)) == {820}
    assert tones_in(a, starts[a.name], t2 - 0.2, t2 + 0.5, (820,)) == set()
    audit = [r["event"] for r in read_audit(stack.audit_file)]
    assert audit == ["start", "mode", "mode", "mode", "mode", "stop"]


def test_all_with_a_group_star_moves_on_and_idle_after_the_target_hangs_up(tmp_path: Path) -> None:
    """779 with require_group=support over a sales call and a support call: S hears only the support
    call; * starts the next visit; the support call ends mid-whisper and S stays, hearing indicate_idle."""
    peers = PeerGroup(tmp_path)
    cfg = EavesdropConfig(require_group="support", indicate_idle=f"tone_stream://%(250,0,{IDLE_TONE})",
                          whisper_bleg=True)

    async def main():
        stack = await Stack().start(tmp_path, cfg)
        try:
            ph = await phones(stack, peers, tmp_path, ("1001", "1002", "1004", "1005", "1003"))
            starts = await call(stack, ph["1001"], ph["1002"], "1002")
            starts.update(await call(stack, ph["1004"], ph["1005"], "1005"))
            await until(lambda: sum(e.name == ev.CHANNEL_BRIDGE for e in stack.events) == 2)
            s = ph["1003"]
            await blocking(s.dial, stack.uri("779"))
            await blocking(s.await_event, "CALL_ESTABLISHED", 10)
            starts[s.name] = time.monotonic()
            await until(lambda: stack.custom("eavesdrop::start"))
            first = time.monotonic()
            await asyncio.sleep(MODE_S)
            await blocking(s.send_dtmf, "*")
            await until(lambda: len(stack.custom("eavesdrop::start")) == 2, 5)
            await asyncio.sleep(1.0)
            await blocking(ph["1004"].hangup)                          # the target hangs up mid-whisper
            await until(lambda: len(stack.custom("eavesdrop::stop")) == 2, 5)
            await asyncio.sleep(1.5)
            assert stack.switch.get(stack.custom("eavesdrop::start")[0]["Eavesdrop-Spy-UUID"]).up
            starts_ev = stack.custom("eavesdrop::start")
            await blocking(s.hangup)
            await blocking(ph["1001"].hangup)
            return ph, starts, first, starts_ev

        finally:
            await blocking(peers.close)
            await stack.close()

    ph, starts, first, starts_ev = run(main())
    targets = {e["Eavesdrop-Target-Caller-ID-Number"] for e in starts_ev}
    assert targets == {"1004"} and [e["Eavesdrop-Mode"] for e in starts_ev] == ["2", "2"]
    s = ph["1003"]
    assert tones_in(s, starts[s.name], first + 0.5, first + MODE_S - 0.3, (440, 1000, 700, 1400)) == {700, 1400}
    # whisper_bleg: the support caller (the target) hears S, its peer does not
    assert 2000 in tones_in(ph["1004"], starts[ph["1004"].name], first + 0.5, first + MODE_S - 0.3, (2000,))
    assert tones_in(ph["1005"], starts[ph["1005"].name], first + 0.5, first + MODE_S - 0.3, (2000,)) == set()
    # after the hang-up S receives only the idle tone (a phone records received frames only, so
    # the recording's tail is what was played last)
    rate, pcm = read_wav(s.recordings()[-1].heard)
    tail = pcm[-int(0.1 * rate):]           # (baresip keeps its last ~100 ms in the jitter buffer)
    assert {hz for hz in (IDLE_TONE, 700, 1400) if has_tone(tail, rate, hz)} == {IDLE_TONE}


def test_seed_queue_dtmf_w2_starts_whispering_to_the_caller(tmp_path: Path) -> None:
    peers = PeerGroup(tmp_path)

    async def main():
        stack = await Stack().start(tmp_path, dialplan=SEED_QUEUE_DTMF)
        try:
            ph = await phones(stack, peers, tmp_path, ("1001", "1002", "1003"))
            starts = await call(stack, ph["1001"], ph["1002"], "1002")
            await until(lambda: any(e.name == ev.CHANNEL_BRIDGE for e in stack.events))
            await blocking(ph["1003"].dial, stack.uri("871001"))
            await until(lambda: stack.custom("eavesdrop::mode"), 5)
            t = time.monotonic()
            await asyncio.sleep(MODE_S)
            await blocking(ph["1003"].hangup)                          # the spy leaves: the call goes on
            await asyncio.sleep(1.0)
            assert len(stack.switch) == 2
            stop = stack.custom("eavesdrop::stop")[0]
            await blocking(ph["1001"].hangup)
            return ph, starts, t, stop

        finally:
            await blocking(peers.close)
            await stack.close()

    ph, starts, t, stop = run(main())
    assert stop["Eavesdrop-Reason"] == "spy-hangup" and stop["Eavesdrop-Mode"] == "2"
    a, b = ph["1001"], ph["1002"]
    assert tones_in(a, starts[a.name], t + 0.5, t + MODE_S - 0.3, (1000, 2000)) == {1000, 2000}
    assert tones_in(b, starts[b.name], t + 0.5, t + MODE_S - 0.3, (440, 2000)) == {440}
    # after the spy hung up, A and B still hear each other
    assert tones_in(a, starts[a.name], t + MODE_S + 0.3, t + MODE_S + 0.9, (1000,)) == {1000}


def test_a_received_call_is_found_by_the_agents_id_and_whispers_reach_the_agent(tmp_path: Path) -> None:
    """The call centre's common case: customer C (1004) calls agent A1 (1001). 881001 finds A1's call
    although A1 did not place it, and its target is A1's leg: 2 reaches only A1, 1 only C. Then 779
    (group sales: A1's) targets A1's leg too, and 2 again reaches A1 and never the customer.
    Before, 881001 found nothing and 779 whispered "to the agent" into the customer's ear."""
    peers = PeerGroup(tmp_path)
    windows: list[tuple[str, int, float]] = []

    async def main():
        stack = await Stack().start(tmp_path, EavesdropConfig(require_group="sales"))
        try:
            ph = await phones(stack, peers, tmp_path, ("1004", "1001", "1003"))
            c, a1, s = ph["1004"], ph["1001"], ph["1003"]
            starts = await call(stack, c, a1, "1001")
            await until(lambda: any(e.name == ev.CHANNEL_BRIDGE for e in stack.events))
            agent_leg = stack.switch.db.api("select/spymap/1001")
            assert stack.switch.get(agent_leg).direction == "outbound"     # the leg to A1's phone
            for ext in ("881001", "779"):
                n0 = len(stack.custom("eavesdrop::start"))
                await blocking(s.dial, stack.uri(ext))
                await blocking(s.await_event, "CALL_ESTABLISHED", 10)
                starts.setdefault(s.name, [])
                starts[s.name].append(time.monotonic())
                await until(lambda: len(stack.custom("eavesdrop::start")) == n0 + 1)
                assert stack.custom("eavesdrop::start")[-1]["Eavesdrop-Target-UUID"] == agent_leg, ext
                modes = stack.custom("eavesdrop::mode")
                for digit in ("2", "1") if ext == "881001" else ("2",):
                    m0 = len(modes)
                    await blocking(s.send_dtmf, digit)
                    await until(lambda: len(stack.custom("eavesdrop::mode")) == m0 + 1, 5)
                    windows.append((ext, int(digit), time.monotonic()))
                    await asyncio.sleep(MODE_S)
                await blocking(s.hangup)
                await blocking(s.await_event, "CALL_CLOSED", 10)
                await until(lambda: len(stack.custom("eavesdrop::stop")) == n0 + 1, 5)
                await asyncio.sleep(1.1)                       # baresip names recordings by the second
            await blocking(c.hangup)
            await blocking(a1.await_event, "CALL_CLOSED", 10)
            assert stack.switch.db.api("select/spymap/1001") == ""    # no stale entry after the call
            return starts, ph
        finally:
            await blocking(peers.close)
            await stack.close()

    starts, ph = run(main())
    c, a1, s = ph["1004"], ph["1001"], ph["1003"]
    spy_call = {"881001": 0, "779": 1}
    for ext, mode, t in windows:
        lo, hi = t + 0.6, t + MODE_S - 0.4
        where = f"{ext}, mode {mode}"
        assert tones_in(s, starts[s.name][spy_call[ext]], lo, hi, (700, 440), spy_call[ext] - 2) == {700, 440}, where
        heard_by_agent = 2000 in tones_in(a1, starts[a1.name], lo, hi, (2000,))
        heard_by_customer = 2000 in tones_in(c, starts[c.name], lo, hi, (2000,))
        assert (heard_by_agent, heard_by_customer) == ((True, False) if mode == 2 else (False, True)), where


def test_userspy_follows_an_agent_over_two_calls_without_redialling(tmp_path: Path) -> None:
    """S dials 891001 (follow agent 1001) before 1001 has a call and stays on the line: customer
    1004 calls 1001 (S hears both, whispers to 1001), that call ends, then 1001 calls 1002 and S
    is on it by itself, still whispering to the agent. The audit has the two attachments."""
    peers = PeerGroup(tmp_path)
    heard: list[tuple[str, float, set[int]]] = []

    async def main():
        stack = await Stack().start(tmp_path)
        try:
            ph = await phones(stack, peers, tmp_path, ("1004", "1001", "1002", "1003"))
            c, a1, b, s = ph["1004"], ph["1001"], ph["1002"], ph["1003"]
            await blocking(s.dial, stack.uri("891001"))
            await blocking(s.await_event, "CALL_ESTABLISHED", 10)
            s_start = time.monotonic()
            starts = await call(stack, c, a1, "1001")
            await until(lambda: len(stack.custom("eavesdrop::start")) == 1)
            await blocking(s.send_dtmf, "2")
            await until(lambda: len(stack.custom("eavesdrop::mode")) == 1, 5)
            t1 = time.monotonic()
            await asyncio.sleep(MODE_S)
            await blocking(c.hangup)
            await blocking(a1.await_event, "CALL_CLOSED", 10)
            await until(lambda: len(stack.custom("eavesdrop::stop")) == 1, 5)
            await asyncio.sleep(1.1)                       # baresip names recordings by the second
            starts.update(await call(stack, a1, b, "1002"))
            await until(lambda: len(stack.custom("eavesdrop::start")) == 2, 10)
            t2 = time.monotonic()
            await asyncio.sleep(MODE_S)
            assert s.events("CALL_CLOSED") == []           # the supervisor never redialled
            await blocking(s.hangup)
            await blocking(a1.hangup)
            await blocking(b.await_event, "CALL_CLOSED", 10)
            return stack, ph, starts, s_start, t1, t2
        finally:
            await blocking(peers.close)
            await stack.close()

    stack, ph, starts, s_start, t1, t2 = run(main())
    c, a1, b, s = ph["1004"], ph["1001"], ph["1002"], ph["1003"]
    assert tones_in(s, s_start, t1 + 0.6, t1 + MODE_S - 0.4, (700, 440, 1000)) == {700, 440}
    assert tones_in(s, s_start, t2 + 0.6, t2 + MODE_S - 0.4, (700, 440, 1000)) == {440, 1000}
    # whisper to the agent on both calls: A1 hears S, the far parties do not
    assert 2000 in tones_in(a1, starts[a1.name], t2 + 0.6, t2 + MODE_S - 0.4, (2000,), -1)
    assert tones_in(b, starts[b.name], t2 + 0.6, t2 + MODE_S - 0.4, (2000,)) == set()
    assert tones_in(c, starts[c.name], t1 + 0.6, t1 + MODE_S - 0.4, (2000,)) == set()
    audit = [r for r in read_audit(stack.audit_file) if r["event"] == "start"]
    assert [(r["agent"], r["far_party"]) for r in audit] == [("1001", "1004"), ("1001", "1002")]
    assert [e["Eavesdrop-Mode"] for e in stack.custom("eavesdrop::start")] == ["0", "2"]
