"""CPU per relayed RTP packet: Earshot's bridged-call relay beside a plain blocking-socket loop.

Each relay runs in its own process (pinned to CPU 0 when there are two) and relays one
direction of a call: datagrams arrive on one port and leave from another towards a sink. The
load generator (this process, CPU 1) sends 172-byte PCMU packets (12-byte header, 160 bytes of
payload) paced in 1 ms ticks, as N one-way 20 ms streams would, and counts what reaches the sink.
The relay's CPU time (user + system, ``time.process_time`` in the relay process) over the
measured window is divided by the packets it relayed. Variants, all measured in this run:

- plain: ``recvfrom`` + ``sendto`` in a blocking loop (the floor for a Python relay);
- earshot relay, pass-through (asyncio, ``transport.max_size`` fixed; SSRC/seq/ts rewritten);
- the same, transcoding PCMU -> PCMA;
- the same pass-through with asyncio's default ``max_size`` (what the fix is worth);
- earshot relay on uvloop, if uvloop is installed.

See shared/reference/dsp-and-performance.md §4.2 for the same measurement of bare relays.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import socket
import struct
import threading
import time
from collections.abc import Callable

PACKET_HEADER = struct.Struct("!BBHII")
PAYLOAD = bytes((i * 37) & 0xFF for i in range(160))


# --- relay processes -----------------------------------------------------------------------------

def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {cpu})


def _control(conn, stop: Callable[[], None], count: Callable[[], int]) -> None:
    """Control thread of a relay process: 'start' marks the window, 'stop' reports and stops.
    It blocks in recv, so it costs no CPU inside the window."""
    assert conn.recv() == "start"
    t0, n0 = time.process_time(), count()
    assert conn.recv() == "stop"
    conn.send((time.process_time() - t0, count() - n0))
    stop()


def plain_relay(conn, sink: tuple[str, int]) -> None:
    _pin(0)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relayed = [0]
    stopping = [False]

    def stop() -> None:
        stopping[0] = True
        rx.sendto(b"", rx.getsockname())            # wake the blocking recv

    threading.Thread(target=_control, args=(conn, stop, lambda: relayed[0]), daemon=True).start()
    conn.send(rx.getsockname()[1])
    recvfrom, sendto = rx.recvfrom, tx.sendto
    n = 0
    while True:
        data, _ = recvfrom(2048)
        if stopping[0]:
            break
        sendto(data, sink)
        n += 1
        relayed[0] = n


def earshot_relay(conn, sink: tuple[str, int], codec_out: str, use_uvloop: bool,
                  fix_max_size: bool) -> None:
    _pin(0)
    import asyncio

    from firmware.media import stream as stream_mod
    from firmware.media.ports import PortAllocator
    from firmware.media.relay import Relay
    from firmware.media.stream import RtpStream

    if not fix_max_size:
        stream_mod.tune_transport = lambda transport: None
    if use_uvloop:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ports = PortAllocator(47000, 47999)
        a = await RtpStream.open(ports, "127.0.0.1", codec="PCMU", latch=True)
        b = await RtpStream.open(ports, "127.0.0.1", codec=codec_out)
        b.set_remote(*sink)
        a._transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        relay = Relay(a, b)
        done = asyncio.Event()
        count = lambda: relay.stats["a_to_b"]["relayed"]   # noqa: E731 - read from the control thread
        threading.Thread(target=_control, daemon=True,
                         args=(conn, lambda: loop.call_soon_threadsafe(done.set), count)).start()
        conn.send(a.local_port)
        await done.wait()
        relay.close()
        a.close()
        b.close()

    asyncio.run(main())


# --- load generator ------------------------------------------------------------------------------

class Sink:
    """Counts datagrams arriving from the relay, in a thread of the generator process."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.settimeout(0.2)
        self.addr = self.sock.getsockname()
        self.count = 0
        self._run = True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        recv = self.sock.recv
        while self._run:
            try:
                recv(2048)
                self.count += 1
            except TimeoutError:
                pass

    def close(self) -> None:
        self._run = False
        self._thread.join()
        self.sock.close()


def send_paced(tx: socket.socket, port: int, rate: int, seconds: float) -> int:
    """``rate`` packets/s for ``seconds``, in 1 ms ticks; returns the number sent."""
    dest = ("127.0.0.1", port)
    per_tick = rate / 1000
    start = time.perf_counter()
    sent, seq, ts, tick, owed = 0, 0, 0, 0, 0.0
    while tick < seconds * 1000:
        owed += per_tick
        while owed >= 1:
            tx.sendto(PACKET_HEADER.pack(0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, 0x5EED) + PAYLOAD, dest)
            seq += 1
            ts += 160
            sent += 1
            owed -= 1
        tick += 1
        delay = start + tick / 1000 - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    return sent


def measure(name: str, target, args: tuple, rate: int, seconds: float) -> dict:
    ctx = mp.get_context("fork")
    sink = Sink()
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, sink.addr, *args), daemon=True)
    proc.start()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # one source: the relay latches to it
    try:
        port = parent.recv()
        send_paced(tx, port, rate, 0.3)              # warm-up, not measured
        time.sleep(0.1)
        before = sink.count
        parent.send("start")
        sent = send_paced(tx, port, rate, seconds)
        time.sleep(0.1)                              # let the tail drain
        parent.send("stop")
        cpu, relayed = parent.recv()
        received = sink.count - before
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
        sink.close()
        tx.close()
    return {"name": name, "sent": sent, "relayed": relayed, "received": received,
            "us_per_packet": cpu / max(relayed, 1) * 1e6}


def main(quick: bool = False) -> None:
    rate, seconds = (5000, 1.0) if quick else (20000, 3.0)
    try:
        import uvloop  # noqa: F401
        have_uvloop = True
    except ImportError:
        have_uvloop = False
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"load: {rate} packets/s ({rate // 50} one-way 20 ms streams) of 172 bytes on 127.0.0.1, "
          f"{seconds:g} s per variant, 1 ms ticks; {cpus} CPUs"
          + ("; relay pinned to CPU 0" if cpus and cpus >= 2 else ""))
    variants: list[tuple[str, object, tuple]] = [
        ("plain blocking-socket loop", plain_relay, ()),
        ("earshot relay, pass-through", earshot_relay, ("PCMU", False, True)),
        ("earshot relay, PCMU->PCMA", earshot_relay, ("PCMA", False, True)),
        ("earshot relay, default max_size", earshot_relay, ("PCMU", False, False)),
    ]
    if have_uvloop:
        variants.append(("earshot relay on uvloop", earshot_relay, ("PCMU", True, True)))
    results = [measure(name, target, args, rate, seconds) for name, target, args in variants]
    base = results[0]["us_per_packet"]
    print(f"{'relay':34} {'sent':>7} {'relayed':>8} {'lost':>6} {'CPU µs/packet':>14} {'× plain':>8}")
    for r in results:
        lost = r["sent"] - r["received"]
        print(f"{r['name']:34} {r['sent']:>7} {r['relayed']:>8} {lost:>6} "
              f"{r['us_per_packet']:>14.2f} {r['us_per_packet'] / base:>8.2f}")
    ours = results[1]["us_per_packet"]
    print(f"earshot pass-through: {ours:.2f} µs/packet = {ours / base:.2f}× the plain loop; "
          f"≈ {int(1e6 / ours / 50 / 2)} bridged calls (2 directions × 50 packets/s) per core "
          f"at this cost")
    if not have_uvloop:
        print("uvloop is not installed: its variant was not measured (pip install uvloop)")
