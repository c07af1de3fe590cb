"""sip.ua between two of our own UAs over loopback (and raw sockets for hostile or odd peers):
call flows, DTMF via INFO, re-INVITE, CANCEL, reject, INVITE challenge, OPTIONS, 481, 2xx
retransmission until ACK, RFC 4475 §3.3 answers, and empty tables afterwards."""
from __future__ import annotations

import asyncio
from pathlib import Path

from firmware.sip.auth import DigestServer
from firmware.sip.message import Response, parse
from firmware.sip.transaction import Timers
from firmware.sip.transport import Transport
from firmware.sip.ua import IncomingCall, UserAgent
from tests.asynctest import run, wait_until

HOST = "127.0.0.1"
FAST = Timers(t1=0.02, t2=0.08, t4=0.1)
SDP_A = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
SDP_B = SDP_A.replace(b"40000", b"40002")
SDP_C = SDP_A.replace(b"40000", b"40004")
RFC4475 = Path(__file__).resolve().parents[4] / "shared" / "data" / "rfc4475"


async def pair(**bkw) -> tuple[UserAgent, UserAgent, asyncio.Queue]:
    ta, tb = Transport(HOST, 0), Transport(HOST, 0)
    await ta.start()
    await tb.start()
    a = UserAgent(ta, domain="a.test", timers=FAST)
    b = UserAgent(tb, domain="b.test", timers=FAST, **bkw)
    incoming: asyncio.Queue[IncomingCall] = asyncio.Queue()
    b.on_invite = incoming.put_nowait
    return a, b, incoming


async def drained(*uas: UserAgent) -> None:
    await wait_until(lambda: all(len(u.layer) == 0 and len(u.dialogs) == 0 and not u.calls for u in uas))
    for u in uas:
        await u.close()


def uri(ua: UserAgent, user: str = "bob") -> str:
    return f"sip:{user}@{HOST}:{ua.transport.port}"


def test_call_ring_answer_ack_dtmf_both_ways_reinvite_and_bye() -> None:
    async def main():
        a, b, incoming = await pair()
        out = await a.call(uri(b), SDP_A, from_user="alice")
        inc = await incoming.get()
        assert inc.remote_sdp == SDP_A and inc.from_.uri.user == "alice"
        inc.ringing()
        assert (await out.wait("provisional")).status == 180
        inc.answer(SDP_B)
        ok = await out.wait("answer")
        assert ok.status == 200 and out.remote_sdp == SDP_B
        await inc.wait("ack")
        assert inc.state == out.state == "confirmed"
        await out.send_dtmf("5#")
        assert [await inc.wait("dtmf"), await inc.wait("dtmf")] == [("5", 160), ("#", 160)]
        await inc.send_dtmf("*", duration=250)
        assert await out.wait("dtmf") == ("*", 250)
        inc.reinvite_handler = lambda offer: SDP_B.replace(b"40002", b"40006")
        resp = await out.reinvite(SDP_C)
        assert resp.status == 200 and out.remote_sdp.endswith(b"40006 RTP/AVP 0\r\n")
        assert (await inc.wait("reinvite")).body == SDP_C and inc.remote_sdp == SDP_C
        await inc.wait("ack")                                  # the re-INVITE's ACK
        assert (await out.request("OPTIONS")).status == 200     # in-dialog OPTIONS and NOTIFY
        assert (await inc.request("NOTIFY", headers={"Event": "dialog"})).status == 200
        assert (await out.wait("notify")).headers.get("Event") == "dialog"
        await out.hangup()
        await inc.wait("bye")
        assert await inc.ended == "remote bye" and await out.ended == "local bye"
        await drained(a, b)
    run(main())


def test_reject_reports_fail_and_the_client_transaction_acks() -> None:
    async def main():
        a, b, incoming = await pair()
        out = await a.call(uri(b), SDP_A)
        inc = await incoming.get()
        inc.reject(486)
        fail = await out.wait("fail")
        assert fail.status == 486 and out.state == "ended"
        await drained(a, b)
    run(main())


def test_cancel_before_answer_gives_487_and_cancelled_event() -> None:
    async def main():
        a, b, incoming = await pair()
        out = await a.call(uri(b), SDP_A)
        inc = await incoming.get()
        inc.ringing()
        await out.wait("provisional")
        await out.hangup()                                     # CANCEL
        assert (await inc.wait("cancelled")).method == "CANCEL"
        assert (await out.wait("fail")).status == 487
        await drained(a, b)
    run(main())


def test_cancel_requested_before_any_provisional_waits_for_one() -> None:
    async def main():
        a, b, incoming = await pair()
        out = await a.call(uri(b), SDP_A)
        await out.cancel()                                     # only the 100 Trying has come, if anything
        inc = await incoming.get()
        inc.ringing()                                          # now the CANCEL may go (§9.1)
        await inc.wait("cancelled")
        assert (await out.wait("fail")).status == 487
        await drained(a, b)
    run(main())


def test_invite_challenged_with_407_and_answered_with_credentials() -> None:
    async def main():
        server = DigestServer("b.test", b"k" * 32, {"alice": "pw"}.get)
        a, b, incoming = await pair(digest_server=server)
        denied = await a.call(uri(b), SDP_A)
        assert (await denied.wait("fail")).status == 407
        out = await a.call(uri(b), SDP_A, from_user="alice", auth=("alice", "pw"))
        inc = await incoming.get()
        assert inc.auth_user == "alice"
        inc.answer(SDP_B)
        await out.wait("answer")
        await inc.wait("ack")
        await inc.hangup()
        await out.wait("bye")
        await drained(a, b)
    run(main())


def test_trusted_source_is_not_challenged() -> None:
    async def main():
        server = DigestServer("b.test", b"k" * 32, {}.get)
        a, b, incoming = await pair(digest_server=server, trusted_hosts={HOST})
        out = await a.call(uri(b), SDP_A)
        inc = await incoming.get()
        assert inc.auth_user is None
        inc.reject(603)
        assert (await out.wait("fail")).status == 603
        await drained(a, b)
    run(main())


def test_options_register_and_unknown_methods_out_of_dialog() -> None:
    async def main():
        a, b, _ = await pair()
        from firmware.sip.message import Headers, Request
        from firmware.sip.uri import SipUri

        def req(method: str) -> Request:
            h = Headers()
            h.set("Max-Forwards", "70")
            h.set("From", "<sip:alice@a.test>;tag=o1")
            h.set("To", f"<{uri(b)}>")
            h.set("Call-ID", f"{method}-x@a")
            h.set("CSeq", f"1 {method}")
            return Request(method, SipUri.parse(uri(b)), h, b"")
        ok = await a.send_request(req("OPTIONS"))
        assert ok.status == 200 and "INVITE" in ok.headers.get("Allow")
        assert (await a.send_request(req("REGISTER"))).status == 405   # b has no registrar
        assert (await a.send_request(req("SUBSCRIBE"))).status == 405
        assert (await a.send_request(req("FROBNICATE"))).status == 501
        assert (await a.send_request(req("BYE"))).status == 481          # no such dialog
        await drained(a, b)
    run(main())


class Raw(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data, addr) -> None:
        self.got.put_nowait(parse(data))


async def raw_peer():
    loop = asyncio.get_running_loop()
    tr, proto = await loop.create_datagram_endpoint(Raw, local_addr=(HOST, 0))
    return tr, proto, tr.get_extra_info("sockname")[1]


def raw_invite(port: int, lport: int, branch: str = "z9hG4bKri1", to_tag: str = "", method: str = "INVITE",
               cseq: int = 1, body: bytes = SDP_A) -> bytes:
    tt = f";tag={to_tag}" if to_tag else ""
    ct = "Content-Type: application/sdp\r\n" if body else ""
    return (f"{method} sip:bob@{HOST}:{lport} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{port};branch={branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:raw@{HOST}>;tag=rw\r\nTo: <sip:bob@{HOST}>{tt}\r\n"
            f"Call-ID: raw-1@{HOST}\r\nCSeq: {cseq} {method}\r\nContact: <sip:raw@{HOST}:{port}>\r\n"
            f"{ct}Content-Length: {len(body)}\r\n\r\n").encode() + body


def test_2xx_is_retransmitted_until_the_ack_and_in_dialog_bye_for_unknown_dialog_gets_481() -> None:
    async def main():
        a, b, incoming = await pair()
        tr, raw, port = await raw_peer()
        tr.sendto(raw_invite(port, b.transport.port), (HOST, b.transport.port))
        assert (await raw.got.get()).status == 100
        inc = await incoming.get()
        inc.answer(SDP_B)
        ok1, ok2 = await raw.got.get(), await raw.got.get()  # the UA core retransmits the 2xx
        assert ok1.status == ok2.status == 200 and ok1.to.tag == inc.dialog.local_tag
        tr.sendto(raw_invite(port, b.transport.port, branch="z9hG4bKack", to_tag=ok1.to.tag, method="ACK",
                             body=b""), (HOST, b.transport.port))
        await inc.wait("ack")
        sent = b.stats_2xx_retransmissions
        tr.sendto(raw_invite(port, b.transport.port, branch="z9hG4bKbye2", to_tag="nope", method="BYE",
                             cseq=2, body=b""), (HOST, b.transport.port))
        while (resp := await raw.got.get()).status == 200:
            pass                                              # a 2xx that was already in flight
        assert resp.status == 481 and b.stats_2xx_retransmissions == sent
        tr.sendto(raw_invite(port, b.transport.port, branch="z9hG4bKbye", to_tag=ok1.to.tag, method="BYE",
                             cseq=3, body=b""), (HOST, b.transport.port))
        assert (await raw.got.get()).status == 200
        await inc.wait("bye")
        tr.close()
        await drained(b)
        await a.close()
    run(main())


def test_missing_ack_ends_the_call_with_bye() -> None:
    async def main():
        a, b, incoming = await pair()
        tr, raw, port = await raw_peer()
        tr.sendto(raw_invite(port, b.transport.port), (HOST, b.transport.port))
        inc = await incoming.get()
        inc.answer(SDP_B)
        while (msg := await raw.got.get()).__class__ is Response:
            pass                                              # 100, then 2xx retransmissions
        assert msg.method == "BYE" and await inc.ended == "local bye"
        tr.close()
        await a.close()
        await b.close()
    run(main())


def test_incoming_cseq_going_backwards_gets_500() -> None:
    async def main():
        a, b, incoming = await pair()
        tr, raw, port = await raw_peer()
        tr.sendto(raw_invite(port, b.transport.port, cseq=10), (HOST, b.transport.port))
        inc = await incoming.get()
        inc.answer(SDP_B)
        while (ok := await raw.got.get()).status != 200:
            pass
        tag = ok.to.tag
        tr.sendto(raw_invite(port, b.transport.port, branch="z9hG4bKa", to_tag=tag, method="ACK", cseq=10,
                             body=b""), (HOST, b.transport.port))
        await inc.wait("ack")
        tr.sendto(raw_invite(port, b.transport.port, branch="z9hG4bKi", to_tag=tag, method="INFO", cseq=5,
                             body=b""), (HOST, b.transport.port))
        while (resp := await raw.got.get()).status == 200 and resp.cseq[1] == "INVITE":
            pass
        assert resp.status == 500 and resp.cseq == (5, "INFO")
        tr.close()
        await a.close()
        await b.close()
    run(main())


def test_rfc4475_section_3_3_requests_get_the_named_answers() -> None:
    cases = {"unkscm.dat": 416, "novelsc.dat": 416, "bext01.dat": 420, "invut.dat": 415,
             "sdp01.dat": 406, "multi01.dat": 400, "mcl01.dat": 400, "insuf.dat": 400}

    async def main():
        a, b, incoming = await pair()
        tr, raw, port = await raw_peer()
        for name, status in cases.items():
            data = (RFC4475 / name).read_bytes()
            tr.sendto(data, (HOST, b.transport.port))
            # answers go to the message's Via (documentation addresses), so read them off the wire:
            # a request from our raw peer with the same body gets routed to it via rport
            msg = parse(data)
            vias = msg.headers.getall("Via")
            msg.headers.remove("Via")
            msg.headers.add("Via", f"SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{name[:-4]};rport", first=True)
            for v in vias[1:]:
                msg.headers.add("Via", v)
            tr.sendto(msg.encode() if name not in ("mcl01.dat",) else data.replace(
                vias[0].encode(), f"SIP/2.0/UDP {HOST}:{port};branch=z9hG4bKmcl;rport".encode(), 1),
                (HOST, b.transport.port))
            resp = await raw.got.get()
            assert resp.status == status, (name, resp.status, resp.reason)
        assert incoming.empty() and len(b.layer) == 0      # refused statelessly, no transaction
        tr.close()
        await a.close()
        await b.close()
    run(main())


def test_broadcast_via_response_is_dropped() -> None:
    async def main():
        a, b, _ = await pair()
        tr, raw, port = await raw_peer()
        got = []
        b.layer.on_stray_response = lambda resp, src: got.append(resp)
        tr.sendto((RFC4475 / "bcast.dat").read_bytes(), (HOST, b.transport.port))
        tr.sendto(raw_invite(port, b.transport.port, method="OPTIONS", body=b""), (HOST, b.transport.port))
        assert (await raw.got.get()).status == 200           # processed after the bcast response
        assert got == []
        tr.close()
        await a.close()
        await b.close()
    run(main())


def test_hostile_datagrams_do_not_disturb_a_call() -> None:
    async def main():
        a, b, incoming = await pair()
        out = await a.call(uri(b), SDP_A)
        inc = await incoming.get()
        tr, raw, port = await raw_peer()
        for junk in (b"\x00" * 100, b"INVITE sip:x SIP/2.0\r\n\r\n", b"A" * 70000, b"SIP/2.0 999999 X\r\n\r\n"):
            tr.sendto(junk[:65000], (HOST, b.transport.port))
        inc.answer(SDP_B)
        await out.wait("answer")
        await out.hangup()
        await inc.wait("bye")
        assert b.transport.stats.malformed >= 3
        tr.close()
        await drained(a, b)
    run(main())


def test_rfc4475_valid_messages_are_served_without_errors(caplog) -> None:
    """The torture messages a parser must accept reach the UA core and raise nothing there;
    the RFC 2543-style INVITE (inv2543) and the escaped-URI INVITE (esc01) become calls."""
    valid = ["wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri",
             "transports", "mpart01", "badbranch", "unksm2", "zeromf", "cparam01", "cparam02",
             "regescrt", "inv2543", "regaut01"]

    async def main():
        a, b, incoming = await pair()
        tr, raw, port = await raw_peer()
        for name in valid:
            before = b.transport.stats.received
            tr.sendto((RFC4475 / f"{name}.dat").read_bytes(), (HOST, b.transport.port))
            await wait_until(lambda: b.transport.stats.received > before)
        calls = []
        while not incoming.empty():
            call = incoming.get_nowait()
            calls.append(call.invite.call_id)
            call.reject(486)
        assert b.transport.stats.malformed == 0
        assert any("inv2543" in c for c in calls) and len(calls) >= 2
        tr.close()
        await a.close()
        await b.close()
    with caplog.at_level("ERROR"):
        run(main())
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


def test_an_invite_handler_that_fails_answers_500_sync_or_async() -> None:
    """A bug in the layer above must not leave the caller retransmitting its INVITE for 32 s."""
    async def failing_later(call: IncomingCall) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("injected")

    def failing_now(call: IncomingCall) -> None:
        raise RuntimeError("injected")

    async def main():
        a, b, _ = await pair()
        for handler in (failing_now, failing_later):
            b.on_invite = handler
            out = await a.call(uri(b), SDP_A)
            assert (await out.wait("fail", 5)).status == 500, handler.__name__
        await drained(a, b)
    run(main())
