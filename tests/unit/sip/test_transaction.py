"""sip.transaction over loopback UDP against a raw socket peer, with a small T1 so timers run fast.
Every test awaits events (datagrams, futures); none asserts on timing."""
from __future__ import annotations

import asyncio

from firmware.sip.message import Headers, Request, make_response, parse
from firmware.sip.transaction import Timers, TransactionLayer, server_key
from firmware.sip.transport import Target, Transport
from firmware.sip.uri import SipUri
from tests.asynctest import run, wait_until

HOST = "127.0.0.1"
FAST = Timers(t1=0.02, t2=0.08, t4=0.1)


class Peer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data, addr) -> None:
        self.got.put_nowait(parse(data))


async def setup():
    t = Transport(HOST, 0)
    await t.start()
    layer = TransactionLayer(t, FAST)
    loop = asyncio.get_running_loop()
    tr, peer = await loop.create_datagram_endpoint(Peer, local_addr=(HOST, 0))
    port = tr.get_extra_info("sockname")[1]
    return t, layer, tr, peer, port


def request(t: Transport, method: str, port: int, cseq: int = 1) -> Request:
    h = Headers()
    h.add("Via", str(t.via("udp", t.new_branch())))
    h.set("Max-Forwards", "70")
    h.set("From", "<sip:a@x>;tag=ft")
    h.set("To", f"<sip:b@{HOST}:{port}>")
    h.set("Call-ID", f"{method.lower()}-call@x")
    h.set("CSeq", f"{cseq} {method}")
    return Request(method, SipUri.parse(f"sip:b@{HOST}:{port}"), h, b"")


def raw_request(method: str, lport: int, port: int, branch: str = "z9hG4bKraw1", cseq_method: str | None = None,
                to_tag: str = "", call_id: str = "srv@x") -> bytes:
    tt = f";tag={to_tag}" if to_tag else ""
    return (f"{method} sip:b@{HOST}:{lport} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{port};branch={branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=ft\r\nTo: <sip:b@x>{tt}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: 7 {cseq_method or method}\r\nContent-Length: 0\r\n\r\n").encode()


def test_non_invite_client_retransmits_then_times_out_with_local_408() -> None:
    async def main():
        t, layer, tr, peer, port = await setup()
        got = []
        txn = layer.send_request(request(t, "OPTIONS", port), Target("udp", HOST, port), lambda r, x: got.append(r))
        final = await txn.final
        assert final.status == 408 and txn.timed_out and [r.status for r in got] == [408]
        # the first send + every timer E retransmission reach the peer (the last may still be in flight)
        await wait_until(lambda: peer.got.qsize() == layer.stats.client_retransmissions + 1)
        assert layer.stats.client_retransmissions >= 4
        await wait_until(lambda: len(layer) == 0)
        tr.close()
        await t.close()
    run(main())


def test_non_invite_client_final_delivered_once_and_retransmission_absorbed() -> None:
    async def main():
        t, layer, tr, peer, port = await setup()
        got = []
        txn = layer.send_request(request(t, "OPTIONS", port), Target("udp", HOST, port), lambda r, x: got.append(r))
        req = await peer.got.get()
        ok = make_response(req, 200, "OK", to_tag="tt").encode()
        tr.sendto(ok, (HOST, t.port))
        tr.sendto(ok, (HOST, t.port))
        assert (await txn.final).status == 200
        await wait_until(lambda: len(layer) == 0)   # timer K
        assert [r.status for r in got] == [200]
        tr.close()
        await t.close()
    run(main())


def test_invite_client_acks_non_2xx_itself_and_again_for_a_retransmission() -> None:
    async def main():
        t, layer, tr, peer, port = await setup()
        got = []
        inv = request(t, "INVITE", port)
        txn = layer.send_request(inv, Target("udp", HOST, port), lambda r, x: got.append(r.status))
        req = await peer.got.get()
        tr.sendto(make_response(req, 180, "Ringing", to_tag="tt").encode(), (HOST, t.port))
        busy = make_response(req, 486, "Busy Here", to_tag="tt").encode()
        tr.sendto(busy, (HOST, t.port))
        assert (await txn.final).status == 486
        while True:
            ack = await peer.got.get()
            if ack.method == "ACK":
                break
        assert ack.vias[0].branch == inv.vias[0].branch and ack.to.tag == "tt"
        assert ack.cseq == (1, "ACK") and str(ack.uri) == str(inv.uri)
        tr.sendto(busy, (HOST, t.port))
        again = await peer.got.get()
        assert again.method == "ACK"
        assert got == [180, 486]
        await wait_until(lambda: len(layer) == 0)   # timer D
        tr.close()
        await t.close()
    run(main())


def test_invite_client_passes_2xx_retransmissions_to_the_tu() -> None:
    async def main():
        t, layer, tr, peer, port = await setup()
        got = []
        txn = layer.send_request(request(t, "INVITE", port), Target("udp", HOST, port), lambda r, x: got.append(r.status))
        req = await peer.got.get()
        ok = make_response(req, 200, "OK", to_tag="tt").encode()
        tr.sendto(ok, (HOST, t.port))
        tr.sendto(ok, (HOST, t.port))
        await wait_until(lambda: len(got) == 2)
        assert got == [200, 200] and txn.state == "accepted"
        await wait_until(lambda: len(layer) == 0)   # timer M
        tr.close()
        await t.close()
    run(main())


def test_invite_server_sends_100_absorbs_retransmission_and_retransmits_final_until_ack() -> None:
    async def main():
        t, layer, tr, peer, port = await setup()
        seen = []
        layer.on_request = lambda req, stxn, src: seen.append((req, stxn))
        tr.sendto(raw_request("INVITE", t.port, port), (HOST, t.port))
        trying = await peer.got.get()
        assert trying.status == 100
        tr.sendto(raw_request("INVITE", t.port, port), (HOST, t.port))
        again = await peer.got.get()
        assert again.status == 100 and len(seen) == 1    # retransmission absorbed, last provisional resent
        req, stxn = seen[0]
        acked = asyncio.Event()
        stxn.on_terminated = lambda s: acked.set()
        stxn.respond(make_response(req, 486, "Busy Here", to_tag="s1"))
        first = await peer.got.get()
        second = await peer.got.get()                    # timer G retransmission
        assert first.status == second.status == 486
        tr.sendto(raw_request("ACK", t.port, port, to_tag="s1", cseq_method="ACK"), (HOST, t.port))
        await acked.wait()                               # confirmed, then timer I
        assert len(seen) == 1 and len(layer) == 0        # the ACK never reached the TU
        tr.close()
        await t.close()
    run(main())


def test_invite_server_timer_h_reports_missing_ack() -> None:
    async def main():
        t, layer, tr, peer, port = await setup()
        seen = []
        layer.on_request = lambda req, stxn, src: seen.append((req, stxn))
        tr.sendto(raw_request("INVITE", t.port, port), (HOST, t.port))
        await wait_until(lambda: seen)
        req, stxn = seen[0]
        timed_out = asyncio.Event()
        stxn.on_ack_timeout = lambda s: timed_out.set()
        stxn.respond(make_response(req, 603, "Decline", to_tag="s1"))
        await timed_out.wait()
        assert len(layer) == 0
        tr.close()
        await t.close()
    run(main())


def test_non_invite_server_resends_last_response_on_retransmission() -> None:
    async def main():
        t, layer, tr, peer, port = await setup()
        seen = []
        layer.on_request = lambda req, stxn, src: seen.append((req, stxn))
        raw = raw_request("OPTIONS", t.port, port)
        tr.sendto(raw, (HOST, t.port))
        await wait_until(lambda: seen)
        req, stxn = seen[0]
        stxn.respond(make_response(req, 200, "OK", to_tag="s"))
        assert (await peer.got.get()).status == 200
        tr.sendto(raw, (HOST, t.port))
        assert (await peer.got.get()).status == 200
        assert len(seen) == 1
        await wait_until(lambda: len(layer) == 0)   # timer J
        tr.close()
        await t.close()
    run(main())


def test_cancel_finds_its_invite_server_transaction() -> None:
    async def main():
        t, layer, tr, peer, port = await setup()
        seen = []
        layer.on_request = lambda req, stxn, src: seen.append((req, stxn))
        tr.sendto(raw_request("INVITE", t.port, port, branch="z9hG4bKinv"), (HOST, t.port))
        tr.sendto(raw_request("CANCEL", t.port, port, branch="z9hG4bKinv"), (HOST, t.port))
        tr.sendto(raw_request("CANCEL", t.port, port, branch="z9hG4bKother", call_id="o@x"), (HOST, t.port))
        await wait_until(lambda: len(seen) == 3)
        assert layer.find_invite(seen[1][0]) is seen[0][1]
        assert layer.find_invite(seen[2][0]) is None
        layer.close()
        assert len(layer) == 0
        tr.close()
        await t.close()
    run(main())


def test_rfc2543_branch_matches_retransmissions_by_fallback_key() -> None:
    # RFC 4475 §3.2.1 badbranch.dat: "branch=z9hG4bK" alone is not an RFC 3261 transaction id
    async def main():
        t, layer, tr, peer, port = await setup()
        seen = []
        layer.on_request = lambda req, stxn, src: seen.append((req, stxn))
        raw = raw_request("OPTIONS", t.port, port, branch="z9hG4bK")
        other = raw_request("OPTIONS", t.port, port, branch="z9hG4bK", call_id="other@x")
        tr.sendto(raw, (HOST, t.port))
        tr.sendto(raw, (HOST, t.port))
        tr.sendto(other, (HOST, t.port))
        await wait_until(lambda: len(seen) == 2)
        assert [r.call_id for r, _ in seen] == ["srv@x", "other@x"]
        assert server_key(seen[0][0])[0] == "2543"
        layer.close()
        tr.close()
        await t.close()
    run(main())


def test_validate_hook_answers_statelessly_without_a_transaction() -> None:
    async def main():
        t, layer, tr, peer, port = await setup()
        seen = []
        layer.on_request = lambda req, stxn, src: seen.append(req)
        layer.validate = lambda req: make_response(req, 420, "Bad Extension")
        tr.sendto(raw_request("OPTIONS", t.port, port), (HOST, t.port))
        assert (await peer.got.get()).status == 420
        assert seen == [] and len(layer) == 0
        tr.close()
        await t.close()
    run(main())


def test_transport_error_fails_the_client_transaction_with_503() -> None:
    async def main():
        t = Transport(HOST, 0)
        await t.start()
        layer = TransactionLayer(t, FAST)
        # a TCP target nobody listens on
        probe = Transport(HOST, 0)
        await probe.start()
        dead = probe.port
        await probe.close()
        txn = layer.send_request(request(t, "OPTIONS", dead), Target("tcp", HOST, dead))
        assert (await txn.final).status == 503
        assert len(layer) == 0
        await t.close()
    run(main())
