"""sip.transport over real loopback sockets: Via stamping, response routing, TCP framing and reuse,
idle close, hostile input (400 / drop, logged once), per-source flood limit, close()."""
from __future__ import annotations

import asyncio
import logging
import socket

from firmware.sip.message import Request, Response, Via, make_response
from firmware.sip.transport import Target, Transport, bad_request_answer, response_target
from tests.asynctest import run, wait_until

HOST = "127.0.0.1"


def options(port: int, branch: str = "z9hG4bKabc1", via_host: str = "10.9.9.9", rport: bool = True,
            call_id: str = "c1@x", transport: str = "UDP") -> bytes:
    rp = ";rport" if rport else ""
    return (f"OPTIONS sip:earshot@{HOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {via_host}:5099;branch={branch}{rp}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:earshot@x>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


class Inbox:
    def __init__(self) -> None:
        self.items: list[tuple[Request | Response, Target]] = []
        self.event = asyncio.Event()

    def __call__(self, msg, source) -> None:
        self.items.append((msg, source))
        self.event.set()

    async def get(self, n: int = 1):
        await wait_until(lambda: len(self.items) >= n)
        return self.items[n - 1]


class UdpPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data, addr) -> None:
        self.got.put_nowait(data)


async def udp_peer():
    loop = asyncio.get_running_loop()
    tr, proto = await loop.create_datagram_endpoint(UdpPeer, local_addr=(HOST, 0))
    return tr, proto, tr.get_extra_info("sockname")[1]


async def started(**kw) -> Transport:
    t = Transport(HOST, 0, **kw)
    await t.start()
    return t


def test_udp_and_tcp_share_the_bound_port() -> None:
    async def main():
        t = await started()
        assert t.port > 0
        r, w = await asyncio.open_connection(HOST, t.port)  # TCP listener on the same port
        w.close()
        await t.close()
    run(main())


def test_received_and_rport_stamped_and_response_routed_to_source() -> None:
    async def main():
        t = await started()
        inbox = Inbox()
        t.on_message = inbox
        tr, peer, pport = await udp_peer()
        tr.sendto(options(t.port), (HOST, t.port))
        req, src = await inbox.get()
        assert isinstance(req, Request) and src == Target("udp", HOST, pport)
        top = req.vias[0]
        assert top.received == HOST and top.params["rport"] == str(pport)
        resp = make_response(req, 200, "OK", to_tag="x")
        assert t.send_response(resp, src) == Target("udp", HOST, pport)
        data = await peer.got.get()
        assert data.startswith(b"SIP/2.0 200") and f"rport={pport}".encode() in data
        tr.close()
        await t.close()
    run(main())


def test_response_target_rules_rfc3261_18_2_2_and_rfc3581() -> None:
    src = Target("udp", "203.0.113.5", 40000)
    assert response_target(Via.parse("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKx;received=203.0.113.5;rport=40000"),
                           src) == Target("udp", "203.0.113.5", 40000)
    assert response_target(Via.parse("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKx;received=203.0.113.5"),
                           src) == Target("udp", "203.0.113.5", 5070)
    assert response_target(Via.parse("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx"), None) == Target("udp", "10.0.0.1", 5060)
    assert response_target(Via.parse("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKx;maddr=10.0.0.9"),
                           None) == Target("udp", "10.0.0.9", 5070)
    assert response_target(Via.parse("SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bKx"), None).transport == "tcp"


def test_no_received_when_via_host_is_the_source_and_no_rport() -> None:
    async def main():
        t = await started()
        inbox = Inbox()
        t.on_message = inbox
        tr, peer, pport = await udp_peer()
        tr.sendto(options(t.port, via_host=HOST, rport=False), (HOST, t.port))
        req, _ = await inbox.get()
        assert req.vias[0].received is None
        tr.close()
        await t.close()
    run(main())


def test_tcp_framing_two_messages_in_one_write_and_one_split() -> None:
    async def main():
        t = await started()
        inbox = Inbox()
        t.on_message = inbox
        r, w = await asyncio.open_connection(HOST, t.port)
        a = options(t.port, call_id="a@x", transport="TCP")
        b = options(t.port, call_id="b@x", branch="z9hG4bKb", transport="TCP")
        c = options(t.port, call_id="c@x", branch="z9hG4bKc", transport="TCP")
        w.write(a + b + c[:30])
        await w.drain()
        await inbox.get(2)
        w.write(c[30:])
        await w.drain()
        req, src = await inbox.get(3)
        assert [m.call_id for m, _ in inbox.items] == ["a@x", "b@x", "c@x"]
        assert src.transport == "tcp" and t.connections == 1
        # the response goes back on the same connection
        t.send_response(make_response(req, 200, "OK", to_tag="y"), src)
        line = await r.readline()
        assert line.startswith(b"SIP/2.0 200")
        w.close()
        await wait_until(lambda: t.connections == 0)
        await t.close()
    run(main())


def test_tcp_oversized_message_closes_connection_without_delivery() -> None:
    async def main():
        t = await started(max_tcp_message=2000)
        inbox = Inbox()
        t.on_message = inbox
        r, w = await asyncio.open_connection(HOST, t.port)
        big = options(t.port, transport="TCP").replace(b"Content-Length: 0", b"Content-Length: 5000")
        w.write(big + b"x" * 5000)
        await w.drain()
        rest = await r.read()  # a 513 on the same connection, then EOF: the transport dropped it
        assert rest.startswith(b"SIP/2.0 513 Message Too Large")
        assert inbox.items == []
        await wait_until(lambda: t.connections == 0)
        w.close()
        await t.close()
    run(main())


def test_outgoing_tcp_connection_is_reused_and_closed_when_idle() -> None:
    async def main():
        accepted: list[asyncio.StreamReader] = []
        got = Inbox()

        async def serve(reader, writer):
            accepted.append(reader)
            while data := await reader.read(65536):
                got(data, None)
            writer.close()
        server = await asyncio.start_server(serve, HOST, 0)
        sport = server.sockets[0].getsockname()[1]
        t = await started(idle_timeout=0.2)
        target = Target("tcp", HOST, sport)
        one, two = options(sport, transport="TCP"), options(sport, transport="TCP", call_id="2@x")
        t.send(one, target)
        t.send(two, target)
        await wait_until(lambda: sum(len(d) for d, _ in got.items) >= len(one) + len(two))
        assert len(accepted) == 1 and t.connections == 1
        await wait_until(lambda: t.connections == 0)  # idle close
        assert t.stats.tcp_closed_idle == 1
        await t.close()
        server.close()
        await server.wait_closed()
    run(main())


def test_malformed_request_with_readable_via_gets_400_and_garbage_is_dropped() -> None:
    async def main():
        t = await started()
        inbox = Inbox()
        t.on_message = inbox
        tr, peer, pport = await udp_peer()
        bad = (f"INVITE sip:x@{HOST} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{pport};branch=z9hG4bKbad;rport\r\n"
               "From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: bad@x\r\nCSeq: 1 INVITE\r\n"
               "Content-Length: -5\r\n\r\n").encode()
        tr.sendto(bad, (HOST, t.port))
        data = await peer.got.get()
        assert data.startswith(b"SIP/2.0 400")
        assert b"Call-ID: bad@x" in data and b"z9hG4bKbad" in data and b"CSeq: 1 INVITE" in data
        tr.sendto(b"\x00\xff garbage \r\n\r\n", (HOST, t.port))
        tr.sendto(b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n", (HOST, t.port))
        tr.sendto(options(t.port), (HOST, t.port))   # still served afterwards
        await inbox.get()
        assert peer.got.empty()                        # no answer to the garbage
        assert t.stats.malformed == 3 and t.stats.answered_400 == 1
        tr.close()
        await t.close()
    run(main())


def test_bad_request_answer_never_answers_ack_or_responses() -> None:
    ack = (b"ACK sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n"
           b"To: <sip:b@x>\r\nCall-ID: 1\r\nCSeq: 1 ACK\r\n\r\n")
    assert bad_request_answer(ack, 400, "Bad") is None
    assert bad_request_answer(b"SIP/2.0 200 OK\r\n\r\n", 400, "Bad") is None
    no_callid = ack.replace(b"ACK", b"INFO").replace(b"Call-ID: 1\r\n", b"")
    assert bad_request_answer(no_callid, 400, "Bad") is None


def test_malformed_input_is_logged_once_per_source(caplog) -> None:
    async def main():
        t = await started()
        tr, peer, pport = await udp_peer()
        for _ in range(5):
            tr.sendto(b"junk junk junk\r\n\r\n", (HOST, t.port))
        await wait_until(lambda: t.stats.malformed == 5)
        tr.close()
        await t.close()
    with caplog.at_level(logging.WARNING, logger="earshot.sip.transport"):
        run(main())
    assert len([r for r in caplog.records if "malformed" in r.getMessage()]) == 1


def test_flood_from_one_source_does_not_starve_another() -> None:
    async def main():
        t = await started(flood_rate=1.0, flood_burst=20.0)
        inbox = Inbox()
        t.on_message = inbox
        flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flooder.bind(("127.0.0.2", 0))  # another loopback address = another source host
        for i in range(300):
            flooder.sendto(options(t.port, branch=f"z9hG4bKf{i}", call_id=f"f{i}"), (HOST, t.port))
            if i % 20 == 19:  # let the loop drain the socket so the kernel buffer never overflows
                await wait_until(lambda: t.stats.flood_dropped + len(inbox.items) >= i + 1)
        tr, peer, pport = await udp_peer()
        tr.sendto(options(t.port, call_id="victim@x"), (HOST, t.port))
        await wait_until(lambda: any(m.call_id == "victim@x" for m, _ in inbox.items))
        from_flooder = [s for _, s in inbox.items if s.host == "127.0.0.2"]
        assert len(from_flooder) <= 40 and t.stats.flood_dropped >= 260
        flooder.close()
        tr.close()
        await t.close()
    run(main())


def test_close_releases_every_socket() -> None:
    async def main():
        t = await started()
        port = t.port
        r, w = await asyncio.open_connection(HOST, port)
        await wait_until(lambda: t.connections == 1)
        await t.close()
        assert t.connections == 0
        assert await r.read() == b""
        w.close()
        # the port can be bound again, UDP and TCP
        again = Transport(HOST, port)
        await again.start()
        await again.close()
    run(main())


def test_udp_receive_size_is_bounded_below_asyncio_default() -> None:
    async def main():
        t = await started()
        assert t._udp is not None and t._udp.max_size <= 65536  # type: ignore[attr-defined]
        await t.close()
    run(main())
