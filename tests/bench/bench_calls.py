"""Concurrent bridged calls one core sustains: SIPp UAC → Earshot (B2BUA, media anchored) → SIPp UAS.

Earshot runs in its own process (pinned to CPU 0 when there are two; SIPp gets CPU 1): transport,
UA, switch, media engine and the dialplan ``bridge sofia/internal/service@<UAS>``. Each SIPp UAC
call plays a generated PCMU pcap (20 ms packets of a 1 kHz tone, PLAY_S seconds) into the A-leg;
the relay passes it to the B-leg and on to the UAS, which echoes it (``-rtp_echo``) back through
the relay to the UAC. Concurrency steps up (calls set up at CPS per second); at each level the
Earshot process's CPU time is taken over a window once every call is up and streaming ("up"
below the level: set-up lagged and the window includes some set-up work), and the level is
*clean* when every call completed, every packet the UAC sent reached the A-leg and every one of
those came back to the B-leg from the echo (no loss anywhere on the path through Earshot). Beside it: the plain blocking-socket relay
loop of bench_rtp at the same packet rate, measured in the same run.
"""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import struct
import tempfile
import threading
import time
from pathlib import Path

from cython_mixer import g711
from cython_mixer.tone import ToneGenerator

HOST = "127.0.0.1"
PLAY_S = 6.0                    # pcap length; every call lasts PLAY_S + 0.5 s
PACKETS = int(PLAY_S * 50)
CPS = 50                        # call set-up rate
WINDOW_S = 2.0                  # CPU is measured over this once every call is up and streaming


# --- the generated pcap and UAC scenario ---------------------------------------------------------

def write_pcap(path: Path) -> None:
    """PACKETS RTP packets, PT 0, 20 ms apart, as Ethernet/IPv4/UDP frames (SIPp reads only the
    UDP payload and the timestamps)."""
    gen = ToneGenerator("tone_stream://%(1000,0,1000);loops=-1")
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for k in range(PACKETS):
        rtp = struct.pack("!BBHII", 0x80, 0x80 if k == 0 else 0, k, 160 * k, 0x5EED) + \
            g711.encode("PCMU", gen.read(160))
        udp = struct.pack("!HHHH", 6000, 6000, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), k & 0xFFFF, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])) + udp
        frame = bytes(12) + b"\x08\x00" + ip
        usec = k * 20000
        out.append(struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac_pcmu_pcap">
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[local_ip_type] [local_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
    ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]></send>
  <nop><action><exec play_pcap_audio="PCAP"/></action></nop>
  <pause milliseconds="PAUSE"/>
  <send retrans="500"><![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]></send>
  <recv response="200" crlf="true"/>
</scenario>
"""


# --- Earshot in its own process ------------------------------------------------------------------

def _pin(cpu: int, pid: int = 0) -> None:
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(pid, {cpu})


def earshot(conn, uas: str, rtp_ports: str) -> None:
    """The B2BUA; answers 'port', 'bridged', 'stats' (per-direction packet counts of the legs that
    ended since the last 'stats') and 'stop' over ``conn``."""
    _pin(0)
    from types import SimpleNamespace

    from firmware.config import Config, SipConfig
    from firmware.media.engine import MediaEngine
    from firmware.sip.transport import Transport
    from firmware.sip.ua import UserAgent
    from firmware.switch import Dialplan, Switch
    from firmware.switch import events as ev
    from firmware.switch.wiring import attach

    plan = f"""<include><context name="default"><extension name="out"><condition>
      <action application="set" data="hangup_after_bridge=true"/>
      <action application="bridge" data="sofia/internal/service@{uas}"/>
    </condition></extension></context></include>"""

    async def main() -> None:
        t = Transport(HOST, 0)
        await t.start()
        ua = UserAgent(t, domain=HOST, trusted_hosts={HOST})
        sw = Switch(Config(sip=SipConfig(listen=f"{HOST}:0", rtp_ports=rtp_ports)), dialplan=Dialplan.parse(plan))
        engine = MediaEngine(rtp_ports, HOST)
        await engine.start()
        attach(sw, SimpleNamespace(ua=ua, registrar=None), engine)
        counts = {"a_rx": 0, "b_rx": 0, "dropped": 0, "calls": 0}

        def ended(e: ev.Event) -> None:
            ch = sw.get(e.uuid)
            media = getattr(getattr(ch, "endpoint", None), "media", None)
            if media is None:
                return
            s = media.stats
            counts["a_rx" if ch.direction == "inbound" else "b_rx"] += s["rx_packets"]
            counts["dropped"] += s["rx_dropped_source"]
            counts["calls"] += ch.direction == "inbound"
        sw.events.subscribe(ev.CHANNEL_HANGUP, ended)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def control() -> None:
            while True:
                cmd = conn.recv()
                if cmd == "port":
                    conn.send(t.port)
                elif cmd == "bridged":
                    conn.send(sum(1 for c in sw.channels() if c.other_leg is not None) // 2)
                elif cmd == "stats":
                    conn.send(dict(counts, legs=engine.legs, clock_skipped=engine.clock.skipped))
                    counts.update(a_rx=0, b_rx=0, dropped=0, calls=0)
                elif cmd == "stop":
                    loop.call_soon_threadsafe(stop.set)
                    return
        threading.Thread(target=control, daemon=True).start()
        await stop.wait()
        await sw.close()
        await engine.stop()
        await ua.close()

    asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def level(work: Path, conn, pid: int, port: int, calls: int, uac_xml: Path) -> dict:
    from tests.peers.sipp import Sipp
    uac = Sipp(work, uac_xml, remote=f"{HOST}:{port}", name=f"uac{calls}", calls=calls, rate=CPS,
               limit=calls, timeout=PLAY_S + 20, trace_msg=False)
    start = time.monotonic()
    uac.start()
    _pin(1, uac._proc.pid)
    deadline = start + calls / CPS + 3.0
    while True:
        conn.send("bridged")
        up = conn.recv()
        if up >= calls or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    t0, c0 = time.monotonic(), cpu_seconds(pid)
    time.sleep(WINDOW_S)
    t1, c1 = time.monotonic(), cpu_seconds(pid)
    result = uac.wait()
    time.sleep(0.3)
    conn.send("stats")
    stats = conn.recv()
    cpu = (c1 - c0) / (t1 - t0)
    expected = PACKETS * calls
    # clean: every call completed and no packet was lost; "up" only says whether the CPU window
    # saw every call streaming (on a loaded machine set-up can lag, then it includes set-up work)
    clean = (result.ok and stats["calls"] == calls and stats["a_rx"] == expected
             and stats["b_rx"] == stats["a_rx"])
    return {"calls": calls, "up": up, "ok": result.successful, "cpu": cpu, "per_call": cpu / max(up, 1),
            "a_rx": stats["a_rx"], "b_rx": stats["b_rx"], "expected": expected, "clean": clean,
            "elapsed": time.monotonic() - start}


def main(quick: bool = False) -> None:
    from tests.bench.bench_rtp import measure, plain_relay
    from tests.peers.ports import rtp_range
    from tests.peers.sipp import Sipp
    steps = [5, 15] if quick else [10, 40, 80, 120, 160]
    with tempfile.TemporaryDirectory(prefix="bench_calls-") as tmp:
        work = Path(tmp)
        pcap = work / "pcmu_1k.pcap"
        write_pcap(pcap)
        uac_xml = work / "uac_pcmu_pcap.xml"
        uac_xml.write_text(UAC.replace("PCAP", str(pcap)).replace("PAUSE", str(int(PLAY_S * 1000) + 500)))
        uas = Sipp(work, "uas_answer", name="uas", calls=sum(steps), limit=max(steps) + 10,
                   timeout=120, rtp_echo=True, trace_msg=False, recv_timeout=None)
        uas.start()
        _pin(1, uas._proc.pid)
        lo, hi = rtp_range(4 * max(steps) + 8)
        ctx = mp.get_context("fork")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=earshot, args=(child, uas.addr, f"{lo}-{hi}"), daemon=True)
        proc.start()
        try:
            parent.send("port")
            port = parent.recv()
            print(f"SIPp UAC (PCMU pcap, {PLAY_S:g} s of 20 ms packets) → Earshot → SIPp UAS (-rtp_echo); "
                  f"Earshot pinned to CPU 0; CPU over {WINDOW_S:g} s with every call streaming; set-up {CPS} calls/s")
            print(f"{'calls':>5} {'up':>4} {'ok':>4} {'CPU %core':>9} {'%/call':>7} {'A rx':>7} {'B rx':>7} "
                  f"{'expected':>8}  clean")
            results = []
            for n in steps:
                r = level(work, parent, proc.pid, port, n, uac_xml)
                results.append(r)
                print(f"{n:>5} {r['up']:>4} {r['ok']:>4} {100 * r['cpu']:>9.1f} {100 * r['per_call']:>7.2f} "
                      f"{r['a_rx']:>7} {r['b_rx']:>7} {r['expected']:>8}  {'yes' if r['clean'] else 'NO'}",
                      flush=True)
                if not r["clean"]:
                    break
            parent.send("stop")
        finally:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
            uas.stop()
        clean = [r for r in results if r["clean"]]
        best = clean[-1] if clean else None
        rate = 100 * (best["calls"] if best else steps[0])      # packets/s through Earshot, both ways
        base = measure("plain", plain_relay, (), rate, 1.0)
        plain_cpu = base["us_per_packet"] * rate / 1e6
        if best:
            print(f"highest clean level: {best['calls']} concurrent bridged calls at "
                  f"{100 * best['cpu']:.1f}% of one core ({100 * best['per_call']:.2f}% per call); "
                  f"≈ {int(1 / best['per_call'])} calls would fill the core at this cost")
        else:
            print("no clean level")
        print(f"plain blocking-socket relay loop at the same {rate} packets/s: {base['us_per_packet']:.2f} µs/packet "
              f"= {100 * plain_cpu:.1f}% of one core"
              + (f"; Earshot (signalling, relay, clock) costs {best['cpu'] / max(plain_cpu, 1e-9):.1f}× that"
                 if best else ""))
