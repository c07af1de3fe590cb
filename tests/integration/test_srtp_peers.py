"""SRTP with real phones through the running appliance: baresip 1.0.0 with its srtp module.
An SRTP phone (RTP/SAVP, srtp-mand) calls a plain phone and each hears the other; an SRTP
supervisor (best-effort srtp) listens via 881001 and hears both; the audit log says which legs
were encrypted; a phone whose user requires SRTP but offers plain RTP is refused."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from firmware import audit
from tests.peers import PeerGroup
from tests.peers.appliance import Appliance
from tests.peers.audio import has_tone, read_wav
from tests.peers.baresip import Account, Baresip
from tests.peers.ports import rtp_range

pytestmark = pytest.mark.peers


def test_srtp_phone_plain_phone_and_srtp_spy_through_the_appliance(tmp_path: Path) -> None:
    lo, hi = rtp_range(40)
    app = Appliance(tmp_path, config=f"""
[sip]
listen = "127.0.0.1:0"
domain = "127.0.0.1"
rtp_ports = "{lo}-{hi}"
[[users]]
id = "1001"
password = "pw-1001"
srtp = "require"
[[users]]
id = "1002"
password = "pw-1002"
[[users]]
id = "1000"
password = "pw-1000"
may_eavesdrop = true
srtp = "offer"
[[users]]
id = "1003"
password = "pw-1003"
srtp = "require"
[control]
listen = "127.0.0.1:0"
password = "pw"
""")
    peers = PeerGroup(tmp_path)
    try:
        app.wait_notify("READY=1")
        reg = f"127.0.0.1:{app.sip_port}"
        a = peers.add(Baresip(tmp_path, "a", Account("1001", registrar=reg, password="pw-1001",
                                                     mediaenc="srtp-mand"), source=1000))
        b = peers.add(Baresip(tmp_path, "b", Account("1002", registrar=reg, password="pw-1002",
                                                     answermode="auto"), source=440))
        s = peers.add(Baresip(tmp_path, "s", Account("1000", registrar=reg, password="pw-1000",
                                                     mediaenc="srtp"), source=2000))
        c = peers.add(Baresip(tmp_path, "c", Account("1003", registrar=reg, password="pw-1003"), source=700))
        for p in (a, b, s, c):
            p.start()
        for p in (a, b, s, c):
            p.wait_registered(10)
        # a user that requires SRTP offering plain RTP: refused with 488, nothing else affected
        c.dial(f"sip:1002@{reg}")
        closed = c.await_event("CALL_CLOSED", 10)
        assert "488" in str(closed)
        a.dial(f"sip:1002@{reg}")
        a.await_event("CALL_ESTABLISHED", 10)
        b.await_event("CALL_ESTABLISHED", 10)
        app.wait_log("(PCMU, SRTP ")               # 1001's leg was answered with SRTP
        s.dial(f"sip:881001@{reg}")
        s.await_event("CALL_ESTABLISHED", 10)
        app.wait_log("started in mode 0")
        time.sleep(2)                              # two seconds of audio to analyse
        s.hangup()
        s.await_event("CALL_CLOSED", 10)
        a.hangup()
        b.await_event("CALL_CLOSED", 10)
        rate, pcm = read_wav(a.recordings()[-1].heard)
        assert has_tone(pcm, rate, 440) and not has_tone(pcm, rate, 1000)
        rate, pcm = read_wav(b.recordings()[-1].heard)
        assert has_tone(pcm, rate, 1000) and not has_tone(pcm, rate, 440)
        rate, pcm = read_wav(s.recordings()[-1].heard)
        assert has_tone(pcm, rate, 1000) and has_tone(pcm, rate, 440) and not has_tone(pcm, rate, 2000)
        app.wait_log("hangup NORMAL_CLEARING")
        records = list(audit.read(tmp_path / "state" / "audit.sqlite"))
        start = [r for r in records if r["event"] == "start"][-1]
        assert (start["target_secure"], start["peer_secure"], start["spy_secure"]) == (True, False, True)
    finally:
        peers.close()
        code, log = app.stop()
    assert code == 0, log
