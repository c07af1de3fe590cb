"""firmware.switch.sofia: SIP calls as channels, in-process over loopback. Earshot's stack and two
"phones" (Earshot's own UserAgent each, with a bare UDP socket for RTP) in one event loop, so the
tests can look at the signalling, the packets and the switch's internals at once."""
from __future__ import annotations

import asyncio
import os
from functools import partial
from types import SimpleNamespace

from firmware.config import Config, SipConfig
from firmware.media.engine import MediaEngine
from firmware.media.leg import RtpLeg
from firmware.media.rfc4733 import TelephoneEvent
from firmware.media.rtp import RtpPacket
from firmware.sip import sdp
from firmware.sip.auth import DigestServer
from firmware.sip.transaction import Timers
from firmware.sip.transport import Transport
from firmware.sip.ua import IncomingCall, UserAgent
from firmware.switch import Dialplan, HangupCause, Switch
from firmware.switch import events as ev
from firmware.switch.sofia_endpoint import SofiaEndpoint
from firmware.switch.wiring import attach
from tests.unit.media import Phone, until
from tests import asynctest

HOST = "127.0.0.1"
PORTS = "31300-31319"
TIMERS = Timers(t1=0.1, t2=0.8, t4=0.5)
PLAN = """<include><context name="default">
  <extension name="global" continue="true"><condition>
    <action application="db" data="insert/spymap/${caller_id_number}/${uuid}"/></condition></extension>
  <extension name="tone"><condition field="destination_number" expression="^9197$">
    <action application="answer"/>
    <action application="playback" data="tone_stream://%(1000,0,1000);loops=-1"/></condition></extension>
  <extension name="bridge"><condition field="destination_number" expression="^b(\\d+)$">
    <action application="set" data="hangup_after_bridge=true"/>
    <action application="bridge" data="sofia/internal/b@127.0.0.1:$1"/></condition></extension>
  <extension name="short"><condition field="destination_number" expression="^n(\\d+)$">
    <action application="set" data="call_timeout=1"/>
    <action application="bridge" data="sofia/internal/b@127.0.0.1:$1"/></condition></extension>
</context></include>"""


run = partial(asynctest.run, timeout=30.0)


class Rig:
    """Earshot's B2BUA in-process (UA, switch, media engine) with phones made of our own UA and
    a loopback RTP socket; other test files start it with their own dialplan, users and ports."""

    async def start(self, users=(), plan: str = PLAN, ports: str = PORTS, *, digest: bool = False,
                    **sip_keys) -> "Rig":
        """``digest``: INVITEs are challenged for the users' passwords (else loopback is trusted)."""
        self.t = Transport(HOST, 0)
        await self.t.start()
        config = Config(sip=SipConfig(listen=f"{HOST}:0", rtp_ports=ports, **sip_keys), users=tuple(users))
        auth = DigestServer(HOST, b"rig-secret-0123456789", config.password_for, algorithms=("MD5",)) \
            if digest else None
        self.ua = UserAgent(self.t, domain=HOST, timers=TIMERS, trusted_hosts=set() if digest else {HOST},
                            digest_server=auth)
        self.switch = Switch(config, dialplan=Dialplan.parse(plan))
        self.engine = MediaEngine(ports, HOST)
        await self.engine.start()
        self.profile = attach(self.switch, SimpleNamespace(ua=self.ua, registrar=None), self.engine)
        self.events: list[ev.Event] = []
        self.switch.events.subscribe("all", self.events.append)
        self.phones: list = []
        return self

    async def phone(self) -> SimpleNamespace:
        t = Transport(HOST, 0)
        await t.start()
        p = SimpleNamespace(t=t, ua=UserAgent(t, domain=HOST, timers=TIMERS), rtp=Phone(),
                            calls=asyncio.Queue())
        p.ua.on_invite = p.calls.put_nowait
        self.phones.append(p)
        return p

    def offer(self, p, codecs=("PCMU",), direction="sendrecv", version=1) -> sdp.SessionDescription:
        return sdp.make_offer(HOST, p.rtp.addr[1], codecs=codecs, direction=direction, session_id=7,
                              version=version)

    async def dial(self, p, dest: str, body: bytes | None = None):
        return await p.ua.call(f"sip:{dest}@{HOST}:{self.t.port}",
                               self.offer(p).encode() if body is None else body, from_user="1001")

    async def answered(self, p, dest: str = "9197", **call_kw) -> None:
        """A call that must be answered (200), hung up by the phone, and leave nothing behind."""
        out = await (p.ua.call(f"sip:{dest}@{HOST}:{self.t.port}", self.offer(p).encode(), **call_kw)
                     if call_kw else self.dial(p, dest))
        assert (await out.wait("answer", 5)).status == 200
        await out.hangup()
        await self.idle()

    def named(self, name: str) -> list[ev.Event]:
        return [e for e in self.events if e.name == name]

    async def idle(self) -> None:
        await until(lambda: len(self.switch) == 0 and self.engine.legs == 0, 5)
        await self.engine.wait_idle()
        assert self.engine.ports.available == self.engine.ports.capacity

    async def close(self) -> None:
        await self.switch.close()
        await self.engine.stop()
        await self.ua.close()
        for p in self.phones:
            await p.ua.close()
            p.rtp.close()


def answer_for(call: IncomingCall, p) -> bytes:
    answer, _ = sdp.negotiate(sdp.parse(call.remote_sdp), HOST, p.rtp.addr[1])
    return answer.encode()


def remote_rtp_port(body: bytes) -> int:
    return sdp.parse(body).media[0].port


def test_bridge_rings_answers_relays_passes_hold_and_info_dtmf_and_bye_clears_all() -> None:
    async def main():
        rig = await Rig().start()
        try:
            a, b = await rig.phone(), await rig.phone()
            out = await rig.dial(a, f"b{b.t.port}")
            inc: IncomingCall = await asyncio.wait_for(b.calls.get(), 5)
            assert inc.from_.uri.user == "1001"
            inc.ringing()
            assert (await out.wait("provisional", 5)).status == 180
            inc.answer(answer_for(inc, b))
            assert (await out.wait("answer", 5)).status == 200
            a_leg, b_leg = rig.switch.channels()
            assert rig.switch.db.api("select/spymap/1001") == a_leg.uuid
            # RTP from phone A reaches phone B through the relay, and back
            await until(lambda: len(rig.named(ev.CHANNEL_BRIDGE)) == 1)
            a.rtp.send(RtpPacket(0, 1, 0, 0xA, bytes(160)).build(), remote_rtp_port(out.remote_sdp))
            assert RtpPacket.parse(await b.rtp.recv()).ssrc == b_leg.endpoint.media.stream.ssrc
            b.rtp.send(RtpPacket(0, 1, 0, 0xB, bytes(160)).build(), remote_rtp_port(inc.remote_sdp))
            assert RtpPacket.parse(await a.rtp.recv()).ssrc == a_leg.endpoint.media.stream.ssrc
            # hold from A: answered recvonly, passed to B as sendonly; unhold passes sendrecv
            for version, (direction, answered) in enumerate((("sendonly", "recvonly"), ("sendrecv", "sendrecv")), 2):
                resp = await out.reinvite(rig.offer(a, direction=direction, version=version).encode())
                assert resp.status == 200
                assert sdp.parse(resp.body).media_direction(sdp.parse(resp.body).media[0]) == answered
                req = await inc.wait("reinvite", 5)
                passed = sdp.parse(req.body)
                assert passed.media_direction(passed.media[0]) == direction
            # INFO from A: a DTMF event on the A channel, RFC 4733 towards B
            await out.send_dtmf("7", 100)
            await until(lambda: any(e.uuid == a_leg.uuid for e in rig.named(ev.DTMF)))
            dtmf = [e for e in rig.named(ev.DTMF) if e.uuid == a_leg.uuid][0]
            assert dtmf.headers["DTMF-Digit"] == "7" and dtmf.headers["DTMF-Source"] == "ENDPOINT"
            events = []
            while not events:
                p = RtpPacket.parse(await b.rtp.recv())
                if p.pt == 101:
                    events.append(TelephoneEvent.parse(p.payload).event)
            assert events == [7]
            # B hangs up: A gets the BYE, both channels go, every port comes back
            await inc.hangup()
            await out.wait("bye", 5)
            await rig.idle()
            assert a_leg.hangup_cause is b_leg.hangup_cause is HangupCause.NORMAL_CLEARING
        finally:
            await rig.close()

    run(main())


def test_busy_maps_486_both_ways_and_cancel_reaches_the_callee() -> None:
    async def main():
        rig = await Rig().start()
        try:
            a, b = await rig.phone(), await rig.phone()
            out = await rig.dial(a, f"b{b.t.port}")
            inc = await asyncio.wait_for(b.calls.get(), 5)
            inc.reject(486, "Busy Here")
            assert (await out.wait("fail", 5)).status == 486
            await rig.idle()
            causes = {e.headers["Call-Direction"]: e.headers["Hangup-Cause"] for e in rig.named(ev.CHANNEL_HANGUP)}
            assert causes == {"inbound": "USER_BUSY", "outbound": "USER_BUSY"}

            out = await rig.dial(a, f"b{b.t.port}")
            inc = await asyncio.wait_for(b.calls.get(), 5)
            inc.ringing()
            await out.wait("provisional", 5)
            await out.hangup()                              # CANCEL
            assert (await out.wait("fail", 5)).status == 487
            await inc.wait("cancelled", 5)
            await rig.idle()
            assert rig.named(ev.CHANNEL_HANGUP)[-1].headers["Hangup-Cause"] == "ORIGINATOR_CANCEL"
        finally:
            await rig.close()

    run(main())


def test_no_answer_within_call_timeout_gives_480_and_cancels_the_callee() -> None:
    async def main():
        rig = await Rig().start()
        try:
            a, b = await rig.phone(), await rig.phone()
            out = await rig.dial(a, f"n{b.t.port}")
            inc = await asyncio.wait_for(b.calls.get(), 5)
            inc.ringing()
            assert (await out.wait("fail", 5)).status == 480
            await inc.wait("cancelled", 5)
            await rig.idle()
            assert {e.headers["Hangup-Cause"] for e in rig.named(ev.CHANNEL_HANGUP)} == {"NO_ANSWER"}
        finally:
            await rig.close()

    run(main())


def test_tone_extension_sends_1khz() -> None:
    async def main():
        rig = await Rig().start()
        try:
            a = await rig.phone()
            out = await rig.dial(a, "9197")
            await out.wait("answer", 5)
            packets = [RtpPacket.parse(await a.rtp.recv()) for _ in range(5)]
            assert {p.pt for p in packets} == {0} and len({p.seq for p in packets}) == 5
            assert any(p.payload != packets[0].payload[:1] * 160 for p in packets)   # not silence
            await out.hangup()
            await rig.idle()
        finally:
            await rig.close()

    run(main())


def test_bad_offers_are_refused_and_leave_nothing_behind() -> None:
    async def main():
        rig = await Rig().start()
        try:
            a = await rig.phone()
            good = rig.offer(a).encode()
            cases = ((b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\nthis is not sdp\r\n", 488, "line 3: expected"),
                     (good.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 127.0.0.1;x=y"), 488,
                      "c= address '127.0.0.1;x=y' is neither an IP4 address nor a host name"),
                     (good.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 pbx.example.com"), 488,
                      "c= names host 'pbx.example.com'"),
                     (rig.offer(a, codecs=("G729",)).encode(), 488, "no acceptable audio stream"),
                     (b"", 488, None))
            for body, status, why in cases:
                out = await rig.dial(a, "9197", body)
                resp = await out.wait("fail", 5)
                assert resp.status == status, body
                if why:
                    assert why in resp.headers.get("Warning"), resp.headers.get("Warning")
            await rig.idle()
            assert rig.named(ev.CHANNEL_CREATE) == []
        finally:
            await rig.close()

    run(main())


def test_more_malformed_addresses_than_ports_leak_nothing() -> None:
    """52 such INVITEs emptied a 50-pair range before: each leaked its leg."""
    async def main():
        rig = await Rig().start(ports="31300-31309")          # 5 pairs
        try:
            a = await rig.phone()
            bad = rig.offer(a).encode().replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 127.0.0.1;x=y")
            for _ in range(12):
                assert (await (await rig.dial(a, "9197", bad)).wait("fail", 5)).status == 488
            await rig.idle()
            await rig.answered(a)
        finally:
            await rig.close()

    run(main())


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_failure_at_any_step_of_call_setup_frees_everything_and_answers(monkeypatch) -> None:
    """An unexpected exception at each step of an incoming call's setup: the INVITE gets a 500,
    and ports, sockets (file descriptors) and channels return to their counts; then a valid call
    is answered."""
    def boom(*_a, **_k):
        raise RuntimeError("injected")

    async def main():
        rig = await Rig().start()
        steps = {
            "srtp policy": (rig.profile, "srtp_policy"),
            "negotiate": (sdp, "negotiate"),
            "apply the answer to the leg": (RtpLeg, "apply"),
            "new channel": (rig.switch, "new_channel"),
            "bind the SIP call": (SofiaEndpoint, "bind"),
            "start the dialplan": (rig.switch, "start"),
        }
        try:
            a = await rig.phone()
            await rig.answered(a)                            # warm-up: what a call opens lazily
            fds = open_fds()
            created, completed = len(rig.named(ev.CHANNEL_CREATE)), len(rig.named(ev.CHANNEL_HANGUP_COMPLETE))
            for step, (owner, attr) in steps.items():
                monkeypatch.setattr(owner, attr, boom)
                out = await rig.dial(a, "9197")
                resp = await out.wait("fail", 5)
                monkeypatch.undo()
                assert resp.status == 500 and "call setup failed" in resp.headers.get("Warning"), step
                await rig.idle()
                assert (len(rig.switch), rig.engine.legs, open_fds()) == (0, 0, fds), step
            # the two channels made before their failure (bind, start) were torn down, with their events
            assert len(rig.named(ev.CHANNEL_CREATE)) - created == 2
            assert len(rig.named(ev.CHANNEL_HANGUP_COMPLETE)) - completed == 2
            await rig.answered(a)
        finally:
            await rig.close()

    run(main())


def test_unreachable_user_and_gateway_fail_cleanly() -> None:
    async def main():
        rig = await Rig().start()
        try:
            ch = rig.switch.new_channel(SimpleNamespace(name="null", media=None, answer=None), name="x")
            from firmware.switch import OriginateError
            try:
                await rig.switch.originate_leg("sofia/internal/nobody@256.1.1.1", a_leg=None, timeout_ms=500)
            except OriginateError as exc:
                assert exc.cause in (HangupCause.INVALID_URL, HangupCause.NETWORK_OUT_OF_ORDER)
            else:
                raise AssertionError("an impossible address was called")
            ch.remote_hangup()
            await rig.idle()
        finally:
            await rig.close()

    run(main())


def test_early_media_from_the_callee_reaches_the_caller_before_the_answer() -> None:
    async def main():
        rig = await Rig().start()
        try:
            a, b = await rig.phone(), await rig.phone()
            out = await rig.dial(a, f"b{b.t.port}")
            inc = await asyncio.wait_for(b.calls.get(), 5)
            inc.progress(answer_for(inc, b))                  # 183 with SDP: ringback from the far end
            early = await out.wait("provisional", 5)
            assert early.status == 183 and early.body        # passed on as early media
            a_leg = rig.switch.channels()[0]
            assert a_leg.state.value == "EARLY"
            b.rtp.send(RtpPacket(0, 1, 0, 0xB, bytes(160)).build(), remote_rtp_port(inc.remote_sdp))
            assert RtpPacket.parse(await a.rtp.recv()).ssrc == a_leg.endpoint.media.stream.ssrc
            inc.answer(inc.local_sdp)
            await out.wait("answer", 5)
            await out.hangup()
            await inc.wait("bye", 5)
            await rig.idle()
        finally:
            await rig.close()

    run(main())
