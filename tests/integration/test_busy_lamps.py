"""Busy lamps for supervisors' desk phones: a SIPp BLF subscriber (SUBSCRIBE Event: dialog, as a
Yealink/Polycom/Snom BLF key sends it) watches agent 1001 on the running appliance while a real
customer phone calls 1001: it is told `confirmed` while they talk and idle after; un-SUBSCRIBE
ends it with a terminated NOTIFY. A subscriber who may not watch gets 403, an unknown agent 404."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers import PeerGroup
from tests.peers.appliance import Appliance, loopback_config
from tests.peers.baresip import Account, Baresip
from tests.peers.sipp import Sipp

pytestmark = pytest.mark.peers


def config() -> str:
    return loopback_config("1001", "1004", "1003", user_keys={"1001": 'caller_id_name = "Agent 1001"',
                                                             "1003": "may_eavesdrop = true"})


def test_a_blf_subscriber_sees_the_agent_talk_and_hang_up(tmp_path: Path) -> None:
    app = Appliance(tmp_path, config=config())
    peers = PeerGroup(tmp_path)
    try:
        app.wait_notify("READY=1")
        reg = f"127.0.0.1:{app.sip_port}"
        blf = peers.add(Sipp(tmp_path, "uac_blf_dialog", remote=reg, service="1001", auth=("1003", "pw-1003"),
                             auth_uri=f"1001@{reg}",
                             keys={"watcher": "1003"}, timeout=30, recv_timeout=20))
        blf.start()
        app.wait_log("BLF: 1003 watches agent 1001 for 600 s")
        c = peers.add(Baresip(tmp_path, "c", Account("1004", registrar=reg, password="pw-1004"), source=700))
        a1 = peers.add(Baresip(tmp_path, "a1", Account("1001", registrar=reg, password="pw-1001",
                                                          answermode="auto"), source=440))
        for p in (c, a1):
            p.start()
            p.wait_registered(10)
        c.dial(f"sip:1001@{reg}")
        a1.await_event("CALL_ESTABLISHED", 10)
        c.hangup()
        a1.await_event("CALL_CLOSED", 10)
        result = blf.wait()
        assert result.ok, result.output + result.errors
    finally:
        peers.close()
        rc, log = app.stop()
    assert rc == 0 and "Traceback" not in log


def test_subscriptions_the_subscriber_may_not_have_are_refused(tmp_path: Path) -> None:
    """Agent 1004 may watch itself but not 1001 (403); nobody may watch a non-agent (404)."""
    app = Appliance(tmp_path, config=config())
    try:
        app.wait_notify("READY=1")
        reg = f"127.0.0.1:{app.sip_port}"
        for watcher, agent, status in (("1004", "1001", 403), ("1003", "9999", 404)):
            sipp = Sipp(tmp_path, "uac_blf_dialog", name=f"blf-{watcher}-{agent}", remote=reg, service=agent,
                        auth=(watcher, f"pw-{watcher}"), auth_uri=f"{agent}@{reg}", keys={"watcher": watcher},
                        timeout=10)
            result = sipp.run()
            assert not result.ok
            assert f"SIP/2.0 {status} " in (sipp.msg_path.read_text()), status
        log = app.log()
        assert "BLF: 1004 may not watch agent 1001 (403)" in log
        assert "BLF: 1003 subscribed to '9999', which is no agent here" in log
    finally:
        rc, log = app.stop()
    assert rc == 0 and "Traceback" not in log
