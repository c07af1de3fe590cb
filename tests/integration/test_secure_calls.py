"""Secure calls with real phones through the running appliance (issue 9, proof with real peers).

1. Two baresip phones register and call over SIP/TLS with srtp-mand: each hears the other's tone,
   while a tshark capture of the loopback shows no plaintext SIP on the TLS port (nor on the UDP
   SIP port) and RTP payloads that, decoded as µ-law or A-law, hold neither tone.
2. A plain (no SRTP) supervisor spies on an SRTP call via 881001 and hears both parties clean;
   the audit log records the call as encrypted and the spy's leg as not.
3. SRTP packets under a wrong key and raw garbage, sprayed at every RTP port of the appliance
   during an SRTP call, are dropped: neither phone hears the injected tone and both still hear
   each other. (The drop counters themselves are not visible outside the process; the in-process
   SRTP tests assert them.)
"""
from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pylibsrtp
import pytest

from cython_mixer import g711
from firmware import audit
from firmware.sip import tls
from tests.peers import PeerError, PeerGroup, end_process, require
from tests.peers.appliance import Appliance
from tests.peers.audio import has_tone, read_wav
from tests.peers.baresip import Account, Baresip
from tests.peers.ports import free_port, rtp_range

pytestmark = pytest.mark.peers
HOST = "127.0.0.1"
TONE_A, TONE_B, TONE_SPY, TONE_FORGED = 1000, 440, 2000, 2500
SIP_PLAINTEXT = (b"INVITE sip:", b"REGISTER sip:", b"BYE sip:", b"ACK sip:", b"SIP/2.0 ",
                 b"Via: SIP/2.0", b"CSeq:", b"a=crypto:", b"m=audio")


@dataclass
class SecureSetup:
    app: Appliance
    peers: PeerGroup
    tls_port: int
    rtp: tuple[int, int]
    cert: Path

    def phone(self, tmp_path: Path, name: str, user: str, tone: int, *, mediaenc: str | None,
              answermode: str = "manual", transport: str = "tls") -> Baresip:
        reg = f"{HOST}:{self.tls_port if transport == 'tls' else self.app.sip_port}"
        return self.peers.add(Baresip(
            tmp_path, name, Account(user, registrar=reg, password=f"pw-{user}", transport=transport,
                                    mediaenc=mediaenc, answermode=answermode),
            source=tone, lifetime=30, tls_cafile=self.cert))

    def close(self) -> None:
        try:
            self.peers.close()
        finally:
            code, log = self.app.stop()
        assert code == 0, log


def _start(tmp_path: Path, srtp: dict[str, str]) -> SecureSetup:
    """The appliance with a self-signed TLS listener and users 1000 (may eavesdrop), 1001, 1002."""
    lo, hi = rtp_range(40)
    tls_port = free_port(1, udp=False)
    users = "".join(f'[[users]]\nid = "{u}"\npassword = "pw-{u}"\nsrtp = "{srtp.get(u, "off")}"\n'
                    + ("may_eavesdrop = true\n" if u == "1000" else "") for u in ("1000", "1001", "1002"))
    app = Appliance(tmp_path, config=f"""
[sip]
listen = "{HOST}:0"
tls_listen = "{HOST}:{tls_port}"
domain = "{HOST}"
rtp_ports = "{lo}-{hi}"
{users}
[control]
listen = "{HOST}:0"
password = "pw"
""")
    try:
        app.wait_notify("READY=1")
        app.wait_log(f"SIP over TLS listening on {HOST}:{tls_port}")
    except BaseException:
        app.stop()
        raise
    return SecureSetup(app, PeerGroup(tmp_path), tls_port, (lo, hi), app.state_dir / tls.CERT_NAME)


def _call(caller: Baresip, callee: Baresip, setup: SecureSetup) -> None:
    # baresip appends the account's ;transport=tls itself (twice if the URI has it already)
    caller.dial(f"sip:{callee.accounts[0].user}@{HOST}:{setup.tls_port}")
    caller.await_event("CALL_ESTABLISHED", 10)
    callee.await_event("CALL_ESTABLISHED", 10)


def _hangup(caller: Baresip, callee: Baresip) -> None:
    caller.hangup()
    caller.await_event("CALL_CLOSED", 10)
    callee.await_event("CALL_CLOSED", 10)


def _heard(phone: Baresip) -> tuple[int, np.ndarray]:
    return read_wav(phone.recordings()[-1].heard)


# ----- capture --------------------------------------------------------------------------------

class Capture:
    """tshark on lo (as root), bounded by `-a duration:` and stopped early with SIGINT."""

    def __init__(self, path: Path, bpf: str, seconds: int) -> None:
        exe = require("tshark", "tshark")
        self.path = path
        self._err = open(path.with_suffix(".log"), "w+")
        self.proc = subprocess.Popen([exe, "-i", "lo", "-F", "pcap", "-w", str(path), "-f", bpf,
                                      "-a", f"duration:{seconds}", "-q"],
                                     stdin=subprocess.DEVNULL, stdout=self._err, stderr=self._err)
        deadline = time.monotonic() + 10
        while "Capturing on" not in self._log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                end_process(self.proc)
                raise PeerError(f"tshark did not start capturing:\n{self._log()}")
            time.sleep(0.05)

    def _log(self) -> str:
        self._err.flush()
        self._err.seek(0)
        return self._err.read()

    def stop(self) -> list[tuple[str, int, int, bytes]]:
        """End the capture; (proto 'tcp'|'udp', sport, dport, payload) of every IPv4 packet."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            end_process(self.proc)
        self._err.close()
        return list(_read_pcap(self.path))


def _read_pcap(path: Path):
    raw = path.read_bytes()
    magic = raw[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
              b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}.get(magic)
    assert endian is not None, f"{path}: not a pcap file ({magic!r})"
    linktype = struct.unpack(endian + "I", raw[20:24])[0]
    link_len = {1: 14, 113: 16}.get(linktype)          # Ethernet (lo) or Linux cooked
    assert link_len is not None, f"unexpected pcap link type {linktype}"
    off = 24
    while off + 16 <= len(raw):
        incl = struct.unpack(endian + "I", raw[off + 8:off + 12])[0]
        frame = raw[off + 16:off + 16 + incl]
        off += 16 + incl
        ip = frame[link_len:]
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        ihl, proto = (ip[0] & 0x0F) * 4, ip[9]
        total = struct.unpack("!H", ip[2:4])[0]
        l4 = ip[ihl:total]
        if proto == 17 and len(l4) >= 8:
            sport, dport = struct.unpack("!HH", l4[:4])
            yield "udp", sport, dport, l4[8:]
        elif proto == 6 and len(l4) >= 20:
            sport, dport = struct.unpack("!HH", l4[:4])
            yield "tcp", sport, dport, l4[(l4[12] >> 4) * 4:]


def _in(port: int, rng: tuple[int, int]) -> bool:
    return rng[0] <= port <= rng[1]


def _rtp_flows(packets, ours: tuple[int, int], phones: list[tuple[int, int]]) -> dict[tuple[int, int], list[bytes]]:
    """(sport, dport) -> the 160-byte G.711-sized payloads of RTP packets (not RTCP) between the
    appliance's RTP range and a phone's, in sequence-number order."""
    flows: dict[tuple[int, int], list[tuple[int, bytes]]] = {}
    for proto, sport, dport, data in packets:
        if proto != "udp" or len(data) < 12 + 160 or data[0] >> 6 != 2 or 72 <= (data[1] & 0x7F) <= 76:
            continue
        if not ((_in(sport, ours) and any(_in(dport, p) for p in phones))
                or (_in(dport, ours) and any(_in(sport, p) for p in phones))):
            continue
        hdr = 12 + 4 * (data[0] & 0x0F)
        seq = struct.unpack("!H", data[2:4])[0]
        flows.setdefault((sport, dport), []).append((seq, data[hdr:hdr + 160]))
    return {k: [p for _, p in sorted(v)] for k, v in flows.items()}


def _decoded_as_g711(payloads: list[bytes]) -> list[np.ndarray]:
    """The payloads read as µ-law and as A-law PCM (what a wire-tapper would play)."""
    codes = b"".join(payloads)
    return [np.frombuffer(g711.ulaw_decode(codes), np.int16),
            np.frombuffer(g711.alaw_decode(codes), np.int16)]


def _plain_rtp(pcm: np.ndarray, ssrc: int, seq0: int = 0) -> list[bytes]:
    codes = g711.ulaw_encode(pcm.astype(np.int16))
    return [struct.pack("!BBHII", 0x80, 0, (seq0 + i) & 0xFFFF, 160 * i, ssrc) + codes[160 * i:160 * (i + 1)]
            for i in range(len(codes) // 160)]


def _tone(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(8000 * seconds)) / 8000
    return np.round(np.sin(2 * np.pi * freq * t) * 12000).astype(np.int16)


# ----- tests ----------------------------------------------------------------------------------

def test_encrypted_call_over_tls_and_srtp_leaks_no_sip_and_no_audio(tmp_path: Path) -> None:
    # the analysis below finds a tone in plain RTP, so its silence on the real capture means something
    control = _rtp_flows([("udp", 40000, 50000, p) for p in _plain_rtp(_tone(TONE_A, 2), 1)],
                         (40000, 40001), [(50000, 50001)])
    assert has_tone(_decoded_as_g711(control[(40000, 50000)])[0], 8000, TONE_A)

    s = _start(tmp_path, {"1001": "require", "1002": "require"})
    try:
        a = s.phone(tmp_path, "a", "1001", TONE_A, mediaenc="srtp-mand")
        b = s.phone(tmp_path, "b", "1002", TONE_B, mediaenc="srtp-mand", answermode="auto")
        for p in (a, b):
            p.start()
        for p in (a, b):
            p.wait_registered(10)
        phone_sip = [p.sip_port + i for p in (a, b) for i in (0, 1)]
        bpf = (f"tcp port {s.tls_port} or udp port {s.app.sip_port} or "
               + " or ".join(f"port {x}" for x in phone_sip)
               + f" or udp portrange {s.rtp[0]}-{s.rtp[1]}")
        cap = Capture(tmp_path / "call.pcap", bpf, 20)
        try:
            _call(a, b, s)
            s.app.wait_log("(PCMU, SRTP ")
            time.sleep(2.5)                         # audio to analyse
            _hangup(a, b)
        finally:
            packets = cap.stop()
        rate, pcm = _heard(a)
        assert has_tone(pcm, rate, TONE_B) and not has_tone(pcm, rate, TONE_A)
        rate, pcm = _heard(b)
        assert has_tone(pcm, rate, TONE_A) and not has_tone(pcm, rate, TONE_B)

        # SIP: the INVITE/200/ACK/BYE went over the TLS port as TLS records, never as plaintext
        tls_bytes = b"".join(d for proto, sp, dp, d in packets
                             if proto == "tcp" and s.tls_port in (sp, dp))
        assert len(tls_bytes) > 2000, f"only {len(tls_bytes)} bytes on the TLS port: no call captured?"
        assert b"\x17\x03\x03" in tls_bytes        # TLS 1.2+ application-data records
        sip_bytes = tls_bytes + b"".join(d for proto, sp, dp, d in packets
                                         if proto == "udp" and {sp, dp} & {s.app.sip_port, *phone_sip})
        leaks = [m for m in SIP_PLAINTEXT if m in sip_bytes]
        assert not leaks, f"plaintext SIP on the wire: {leaks}"

        # RTP: four directions of SRTP between the phones and the appliance, no tone in any
        flows = _rtp_flows(packets, s.rtp, [a.rtp_ports, b.rtp_ports])
        busy = {k: len(v) for k, v in flows.items() if len(v) >= 50}
        assert len(busy) == 4, f"expected 4 RTP directions of >= 50 packets, got {busy}"
        for key, payloads in flows.items():
            for pcm in _decoded_as_g711(payloads):
                heard = [f for f in (TONE_A, TONE_B) if has_tone(pcm, 8000, f)]
                assert not heard, f"flow {key} carries the {heard} Hz tone in the clear"
    finally:
        s.close()


def test_plain_spy_hears_an_srtp_call_clean_and_the_audit_says_so(tmp_path: Path) -> None:
    s = _start(tmp_path, {"1001": "require", "1002": "require", "1000": "off"})
    try:
        a = s.phone(tmp_path, "a", "1001", TONE_A, mediaenc="srtp-mand")
        b = s.phone(tmp_path, "b", "1002", TONE_B, mediaenc="srtp-mand", answermode="auto")
        spy = s.phone(tmp_path, "spy", "1000", TONE_SPY, mediaenc=None, transport="udp")
        for p in (a, b, spy):
            p.start()
        for p in (a, b, spy):
            p.wait_registered(10)
        _call(a, b, s)
        spy.dial(f"sip:881001@{HOST}:{s.app.sip_port}")
        spy.await_event("CALL_ESTABLISHED", 10)
        s.app.wait_log("started in mode 0")
        time.sleep(2)                               # two seconds of audio to analyse
        spy.hangup()
        spy.await_event("CALL_CLOSED", 10)
        _hangup(a, b)
        rate, pcm = _heard(spy)
        assert has_tone(pcm, rate, TONE_A) and has_tone(pcm, rate, TONE_B)
        assert not has_tone(pcm, rate, TONE_SPY)
        rate, pcm = _heard(a)
        assert has_tone(pcm, rate, TONE_B) and not has_tone(pcm, rate, TONE_SPY)
        rate, pcm = _heard(b)
        assert has_tone(pcm, rate, TONE_A) and not has_tone(pcm, rate, TONE_SPY)
        s.app.wait_log("hangup NORMAL_CLEARING")
        records = list(audit.read(s.app.state_dir / "audit.sqlite"))
        start = [r for r in records if r["event"] == "start"][-1]
        assert (start["target_secure"], start["peer_secure"], start["spy_secure"]) == (True, True, False)
    finally:
        s.close()


def _spray(ports: range, stop: threading.Event, sent: list[int]) -> None:
    """SRTP of a 3 kHz tone under a key nobody negotiated, plus raw garbage, to every port."""
    key = os.urandom(30)
    tx = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
    rtp = _plain_rtp(_tone(TONE_FORGED, 4), 0x5EC0BAD, 1000)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        i = 0
        while not stop.is_set() and i < len(rtp):
            forged = tx.protect(rtp[i])
            tampered = rtp[i] + os.urandom(10)      # a plain packet with a made-up tag
            for port in ports:
                for pkt in (forged, tampered, os.urandom(172)):
                    sock.sendto(pkt, (HOST, port))
                    sent[0] += 1
            i += 1
            stop.wait(0.02)
    finally:
        sock.close()


def test_wrong_key_and_tampered_srtp_are_dropped_not_played(tmp_path: Path) -> None:
    s = _start(tmp_path, {"1001": "require", "1002": "require"})
    try:
        a = s.phone(tmp_path, "a", "1001", TONE_A, mediaenc="srtp-mand")
        b = s.phone(tmp_path, "b", "1002", TONE_B, mediaenc="srtp-mand", answermode="auto")
        for p in (a, b):
            p.start()
        for p in (a, b):
            p.wait_registered(10)
        _call(a, b, s)
        s.app.wait_log("(PCMU, SRTP ")
        stop, sent = threading.Event(), [0]
        sprayer = threading.Thread(target=_spray, args=(range(s.rtp[0], s.rtp[1] + 1, 2), stop, sent))
        sprayer.start()
        try:
            time.sleep(2.5)
        finally:
            stop.set()
            sprayer.join(5)
        assert sent[0] > 1000, f"only {sent[0]} forged packets sent"
        time.sleep(0.5)                             # clean audio after the attack, too
        _hangup(a, b)
        for phone, own, other in ((a, TONE_A, TONE_B), (b, TONE_B, TONE_A)):
            rate, pcm = _heard(phone)
            assert has_tone(pcm, rate, other), f"{phone.name} lost the other party"
            assert not has_tone(pcm, rate, TONE_FORGED, min_db_above_floor=10), \
                f"{phone.name} played forged SRTP"
            assert not has_tone(pcm, rate, own)
        assert s.app.proc.poll() is None
        # each leg says, when it closes, how many SRTP packets it refused
        s.app.wait_log("SRTP dropped")
        drops = re.findall(r"SRTP dropped (\d+) packets \(auth failures (\d+)", s.app.log())
        assert sum(int(total) for total, _ in drops) >= 20 and any(int(auth) > 0 for _, auth in drops), drops
    finally:
        s.close()
