"""SRTP per leg through the B2BUA, in-process over loopback (test_sofia.py's rig): an SRTP phone
and a plain phone hear each other, ``sip_secure_media=true`` requires SRTP on the outgoing leg,
and a peer that cannot meet the policy fails the call with a clear cause."""
from __future__ import annotations

import asyncio

from firmware.config import User
from firmware.media.rtp import RtpPacket
from firmware.media.srtp import SrtpContext
from firmware.sip import sdes, sdp
from firmware.sip.ua import IncomingCall
from tests.unit.media import until
from tests.unit.switch.test_sofia import HOST, remote_rtp_port, run
from tests.unit.switch.test_sofia import Rig as SofiaRig

PORTS = "31320-31339"
PLAN = """<include><context name="default">
  <extension name="bridge"><condition field="destination_number" expression="^b(\\d+)$">
    <action application="set" data="hangup_after_bridge=true"/>
    <action application="bridge" data="sofia/internal/b@127.0.0.1:$1"/></condition></extension>
  <extension name="secure"><condition field="destination_number" expression="^s(\\d+)$">
    <action application="set" data="hangup_after_bridge=true"/>
    <action application="bridge" data="{sip_secure_media=true}sofia/internal/b@127.0.0.1:$1"/>
  </condition></extension>
</context></include>"""


class Rig(SofiaRig):
    async def start(self, users=()) -> "Rig":
        return await super().start(users, plan=PLAN, ports=PORTS)


def context(n: sdp.Negotiated) -> SrtpContext:
    """A phone's own SRTP context from its side of the negotiation."""
    assert n.secure
    return SrtpContext(n.crypto_local.suite, n.crypto_local.key, n.crypto_remote.key)


def pkt(seq: int, fill: int, ssrc: int) -> bytes:
    return RtpPacket(0, seq, seq * 160, ssrc, bytes([fill]) * 160).build()


def test_srtp_phone_and_plain_phone_hear_each_other_and_forgeries_are_dropped() -> None:
    async def main():
        rig = await Rig().start()
        try:
            a, b = await rig.phone(), await rig.phone()
            offer = sdp.make_offer(HOST, a.rtp.addr[1], codecs=("PCMU",), srtp="require")
            out = await a.ua.call(f"sip:b{b.t.port}@{HOST}:{rig.t.port}", offer.encode(), from_user="1001")
            inc: IncomingCall = await asyncio.wait_for(b.calls.get(), 5)
            plain_offer = sdp.parse(inc.remote_sdp)
            assert plain_offer.media[0].proto == "RTP/AVP"      # leg B: policy off, no keys offered
            assert not any(n == "crypto" for n, _ in plain_offer.media[0].attributes)
            answer, _ = sdp.negotiate(plain_offer, HOST, b.rtp.addr[1])
            inc.answer(answer.encode())
            resp = await out.wait("answer", 5)
            assert sdp.parse(resp.body).media[0].proto == "RTP/SAVP"
            phone_a = context(sdp.parse_answer(offer, sdp.parse(resp.body)))
            a_leg, b_leg = rig.switch.channels()
            assert a_leg.endpoint.media.secure and not b_leg.endpoint.media.secure
            assert a_leg.get_variable("sip_secure_media_confirmed") == "true"
            await until(lambda: a_leg.endpoint.media.relay is not None)
            # A (SRTP) -> B (plain): decrypted, rewritten for leg B
            port_a = remote_rtp_port(resp.body)
            for k in range(3):
                a.rtp.send(phone_a.protect(pkt(k, 0x11, 0xA)), port_a)
            got = [RtpPacket.parse(p) for p in await b.rtp.recv_n(3)]
            assert {p.payload for p in got} == {bytes([0x11]) * 160}
            # B (plain) -> A (SRTP): encrypted with the key Earshot answered A with
            b.rtp.send(pkt(1, 0x22, 0xB), remote_rtp_port(inc.remote_sdp))
            wire = await a.rtp.recv()
            assert bytes([0x22]) * 160 not in wire
            assert RtpPacket.parse(phone_a.unprotect(wire)).payload == bytes([0x22]) * 160
            # a forged packet and one under someone else's key: dropped, counted, not relayed
            forged = bytearray(phone_a.protect(pkt(50, 0x33, 0xA)))
            forged[30] ^= 1
            a.rtp.send(bytes(forged), port_a)
            suite = phone_a.suite
            stranger = SrtpContext(suite, sdes.new_crypto(1, suite).key, sdes.new_crypto(1, suite).key)
            a.rtp.send(stranger.protect(pkt(51, 0x44, 0xA)), port_a)
            await until(lambda: a_leg.endpoint.media.stats["srtp"]["auth_failures"] == 2)
            assert a_leg.endpoint.media.stats["srtp"]["unprotected"] == 3
            try:
                extra = await b.rtp.recv(0.3)
            except asyncio.TimeoutError:
                extra = None
            assert extra is None
            await out.hangup()
            await rig.idle()
        finally:
            await rig.close()
    run(main())


def test_secure_media_requires_srtp_on_the_outgoing_leg_or_fails_the_call() -> None:
    async def main():
        rig = await Rig().start()
        try:
            a, b = await rig.phone(), await rig.phone()
            # a plain caller; the dialplan bridges with {sip_secure_media=true}: B must do SRTP
            offer = sdp.make_offer(HOST, a.rtp.addr[1], codecs=("PCMU",))
            out = await a.ua.call(f"sip:s{b.t.port}@{HOST}:{rig.t.port}", offer.encode(), from_user="1001")
            inc: IncomingCall = await asyncio.wait_for(b.calls.get(), 5)
            secure_offer = sdp.parse(inc.remote_sdp)
            assert secure_offer.media[0].proto == "RTP/SAVP"
            answer, mine = sdp.negotiate(secure_offer, HOST, b.rtp.addr[1], srtp="offer")
            inc.answer(answer.encode())
            resp = await out.wait("answer", 5)
            assert sdp.parse(resp.body).media[0].proto == "RTP/AVP"
            a_leg, b_leg = rig.switch.channels()
            assert b_leg.endpoint.media.secure and not a_leg.endpoint.media.secure
            await until(lambda: b_leg.endpoint.media.relay is not None)
            phone_b = context(mine)
            a.rtp.send(pkt(1, 0x55, 0xA), remote_rtp_port(resp.body))
            assert RtpPacket.parse(phone_b.unprotect(await b.rtp.recv())).payload == bytes([0x55]) * 160
            await out.hangup()
            await rig.idle()
            # the same with a callee that cannot do SRTP: it refuses RTP/SAVP, the call fails
            out = await a.ua.call(f"sip:s{b.t.port}@{HOST}:{rig.t.port}", offer.encode(), from_user="1001")
            inc = await asyncio.wait_for(b.calls.get(), 5)
            try:
                sdp.negotiate(sdp.parse(inc.remote_sdp), HOST, b.rtp.addr[1])
            except sdp.NoCommonCodec as exc:
                assert "SRTP is off here" in str(exc)
                inc.reject(488, "Not Acceptable Here")
            fail = await out.wait("fail", 5)
            assert fail.status == 488
            await rig.idle()
        finally:
            await rig.close()
    run(main())


def test_user_policy_off_refuses_savp_and_require_refuses_plain_with_488() -> None:
    async def main():
        rig = await Rig().start(users=(User("1001", "pw1", srtp="off"), User("1002", "pw2", srtp="require")))
        try:
            a = await rig.phone()
            for user, srtp in (("1001", "require"), ("1002", "off")):
                offer = sdp.make_offer(HOST, a.rtp.addr[1], codecs=("PCMU",), srtp=srtp)
                out = await a.ua.call(f"sip:b9@{HOST}:{rig.t.port}", offer.encode(), from_user=user)
                assert (await out.wait("fail", 5)).status == 488
            await rig.idle()
        finally:
            await rig.close()
    run(main())
