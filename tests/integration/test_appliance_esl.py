"""The seed's event-socket recipe against the running appliance, with real phones and a real ESL
client (genesis): A (1001) talks to B (1002); an integrator's script originates a spy call to the
supervisor's phone with ``&eavesdrop(<A's uuid>)``, then switches it to whisper with
``uuid_recv_dtmf``. What each phone heard is checked spectrally."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from genesis import Inbound

from tests.peers import PeerGroup
from tests.peers.appliance import Appliance
from tests.peers.audio import has_tone, read_wav
from tests.peers.baresip import Account, Baresip
from tests.peers.ports import rtp_range

pytestmark = pytest.mark.peers


def test_originate_with_eavesdrop_then_whisper_by_uuid_recv_dtmf(tmp_path: Path) -> None:
    lo, hi = rtp_range(40)
    app = Appliance(tmp_path, config=f"""
[sip]
listen = "127.0.0.1:0"
domain = "127.0.0.1"
rtp_ports = "{lo}-{hi}"
[control]
listen = "127.0.0.1:0"
password = "esl-pw"
[[users]]
id = "1001"
password = "pw-1001"
[[users]]
id = "1002"
password = "pw-1002"
[[users]]
id = "1000"
password = "pw-1000"
may_eavesdrop = true
""")
    peers = PeerGroup(tmp_path)
    try:
        app.wait_notify("READY=1")
        reg = f"127.0.0.1:{app.sip_port}"
        a = peers.add(Baresip(tmp_path, "a", Account("1001", registrar=reg, password="pw-1001"), source=1000))
        b = peers.add(Baresip(tmp_path, "b", Account("1002", registrar=reg, password="pw-1002",
                                                     answermode="auto"), source=440))
        s = peers.add(Baresip(tmp_path, "s", Account("1000", registrar=reg, password="pw-1000",
                                                     answermode="auto"), source=2000))
        for p in (a, b, s):
            p.start()
        for p in (a, b, s):
            p.wait_registered(10)
        a.dial(f"sip:1002@{reg}")
        a.await_event("CALL_ESTABLISHED", 10)

        async def script() -> tuple[str, str]:
            async with Inbound("127.0.0.1", app.control_port, "esl-pw") as esl:
                channels = json.loads((await esl.send("api show channels as json")).body)
                target = next(r["uuid"] for r in channels["rows"]
                              if r["cid_num"] == "1001" and r["direction"] == "inbound")
                reply = (await esl.send(f"api originate user/1000 &eavesdrop({target})")).body
                assert reply.startswith("+OK "), reply
                spy = reply.split()[1]
                await asyncio.to_thread(s.await_event, "CALL_ESTABLISHED", 10)
                await asyncio.to_thread(app.wait_log, "started in mode 0")
                await asyncio.sleep(1.5)          # listen-only audio to analyse
                dtmf = (await esl.send(f"api uuid_recv_dtmf {spy} 2")).body
                assert dtmf.startswith("+OK"), dtmf
                await asyncio.to_thread(app.wait_log, "mode 2")
                await asyncio.sleep(1.5)          # whisper-to-target audio to analyse
                eavesdrops = (await esl.send("api show eavesdrops")).body
                return target, eavesdrops

        target, eavesdrops = asyncio.run(asyncio.wait_for(script(), 60))
        assert target in eavesdrops
        s.hangup()
        s.await_event("CALL_CLOSED", 10)
        a.hangup()
        b.await_event("CALL_CLOSED", 10)
        rate, heard = read_wav(s.recordings()[-1].heard)
        assert has_tone(heard, rate, 1000) and has_tone(heard, rate, 440) and not has_tone(heard, rate, 2000)
        rate, heard = read_wav(a.recordings()[-1].heard)   # the target: whispered to in mode 2
        assert has_tone(heard, rate, 2000) and has_tone(heard, rate, 440)
        rate, heard = read_wav(b.recordings()[-1].heard)   # the peer never hears the supervisor
        assert has_tone(heard, rate, 1000) and not has_tone(heard, rate, 2000)
    finally:
        peers.close()
        code, log = app.stop()
    assert code == 0, log
    assert "esl-pw" not in log
