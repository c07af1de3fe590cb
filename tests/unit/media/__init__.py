"""Captured RTP for the media tests.

Packets copied byte for byte from the pcap files SIPp ships (Debian ``sip-tester``,
/usr/share/sip-tester/): a PCMA stream with 30 ms packets (g711a.pcap) and two RFC 2833/4733
key presses (dtmf_2833_1.pcap, dtmf_2833_pound.pcap; payload type 101, the end packet sent three
times with the same sequence number).
"""

#: g711a.pcap, first packet (marker set, a run of A-law silence) and packet 201 (speech).
G711A_FIRST = bytes.fromhex(
    "8088e6fd000000f0dee0ee8fd5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5"
    "d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5"
    "d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5"
    "d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5"
    "d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5"
    "d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5")
G711A_SPEECH = bytes.fromhex(
    "8008e7c50000bc70dee0ee8f4a724a4a7a724a5a4a4a4a5a4ad54a5ad5d5d5c5d55ac5f55ad5d5c5d5d5d55a"
    "d5d5d5c5c55ad55ad55a5a4a5ad5d5d55a4a5a4a4a4a4a4a4a4a4a5a4a4a4a4ad55a72d5d55ad5d5d5d5c5d5"
    "d5c5c5c55ad5d5f5d55a5ad5c5d54a5ad55a4ad5d54a4a5a4a4a4a5a4a5ad5d54ad55a4a5a5a4a5a4a5a4a4a"
    "5a5ad5d5d5d5d5d55a4ad55a4ad5c55a5ad55ad55a4a5a4a725a4a724a4a4a725a5a5a724a5a4a4a4a4a4a4a"
    "5a4a5a5a5a5a5a5a5ad55a5ad5d55a4ad5d5d55ad55ad54a4a5ad5c55a5a4ad55a5a5ad54a5a5a5a5ad5d55a"
    "4ad55a4a4ad54a5a4a5a4a4a7a4a5a5a7a724a4a4a5ad55a5a5a5a725a5ad54a")

#: dtmf_2833_1.pcap: the digit "1", all ten packets in capture order.
DTMF_1 = [bytes.fromhex(h) for h in (
    "80e51f30000033e00e05384e010a0000",
    "80651f31000033e00e05384e010a0140",
    "80651f32000033e00e05384e010a0280",
    "80651f33000033e00e05384e010a03c0",
    "80651f34000033e00e05384e010a0500",
    "80651f35000033e00e05384e010a0640",
    "80651f36000033e00e05384e010a0780",
    "80651f37000033e00e05384e018a08c0",
    "80651f37000033e00e05384e018a08c0",
    "80651f37000033e00e05384e018a08c0",
)]

#: dtmf_2833_pound.pcap: the digit "#".
DTMF_POUND = [bytes.fromhex(h) for h in (
    "80e520f4000169e00e05384e0b0a0000",
    "806520f5000169e00e05384e0b0a0140",
    "806520f6000169e00e05384e0b0a0280",
    "806520f7000169e00e05384e0b0a03c0",
    "806520f8000169e00e05384e0b0a0500",
    "806520f9000169e00e05384e0b0a0640",
    "806520fa000169e00e05384e0b0a0780",
    "806520fb000169e00e05384e0b8a08c0",
    "806520fb000169e00e05384e0b8a08c0",
    "806520fb000169e00e05384e0b8a08c0",
)]


# --- loopback helpers for the stream and relay tests ------------------------------------------

import asyncio  # noqa: E402
import socket  # noqa: E402
from collections.abc import Callable  # noqa: E402


class Phone:
    """The test's own UDP socket on 127.0.0.1, standing in for a phone's RTP endpoint."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.addr: tuple[str, int] = self.sock.getsockname()

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, ("127.0.0.1", port))

    async def recv(self, timeout: float = 3.0) -> bytes:
        data, _ = await asyncio.wait_for(asyncio.get_running_loop().sock_recvfrom(self.sock, 4096),
                                         timeout)
        return data

    async def recv_n(self, n: int, timeout: float = 3.0) -> list[bytes]:
        return [await self.recv(timeout) for _ in range(n)]

    async def drain(self, settle: float = 0.15) -> list[bytes]:
        """Everything that arrives until the line has been quiet for ``settle`` seconds."""
        out = []
        while True:
            try:
                out.append(await self.recv(settle))
            except asyncio.TimeoutError:
                return out

    def close(self) -> None:
        self.sock.close()


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Wait (yielding to the loop) until ``condition()`` holds; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)
