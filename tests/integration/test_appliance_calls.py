"""`./build.sh run` as a whole, with real phones: two baresip phones registered to the running
appliance call each other, and a supervisor's phone dials 88<ext> and hears that call."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.peers import PeerGroup
from tests.peers.appliance import Appliance, loopback_config
from tests.peers.audio import has_tone, read_wav
from tests.peers.baresip import Account, Baresip

pytestmark = pytest.mark.peers


def test_two_phones_call_through_the_running_appliance(tmp_path: Path) -> None:
    app = Appliance(tmp_path, config=loopback_config("1001", "1002", "1000", rtp_pairs=40,
                                                     user_keys={"1000": "may_eavesdrop = true"}))
    peers = PeerGroup(tmp_path)
    try:
        app.wait_notify("READY=1")
        app.wait_log("softphones: register")
        reg = f"127.0.0.1:{app.sip_port}"
        a = peers.add(Baresip(tmp_path, "a", Account("1001", registrar=reg, password="pw-1001"), source=1000))
        b = peers.add(Baresip(tmp_path, "b", Account("1002", registrar=reg, password="pw-1002", answermode="auto"),
                              source=440))
        for p in (a, b):
            p.start()
        for p in (a, b):
            p.wait_registered(10)
        s = peers.add(Baresip(tmp_path, "s", Account("1000", registrar=reg, password="pw-1000"), source=2000))
        s.start()
        s.wait_registered(10)
        a.dial(f"sip:1002@{reg}")
        a.await_event("CALL_ESTABLISHED", 10)
        b.await_event("CALL_ESTABLISHED", 10)
        s.dial(f"sip:881001@{reg}")          # the seed's spymap extension: 1001's call by caller id
        s.await_event("CALL_ESTABLISHED", 10)
        app.wait_log("started in mode 0")     # the eavesdrop session is up
        # a reload in the middle of the calls: a new user applies now, a panel change waits for a
        # restart (and says so), and no call is dropped
        app.config_path.write_text(app.config_path.read_text() + '[[users]]\nid = "1003"\npassword = "pw-1003"\n'
                                   '[panel]\nspy = "user/1000"\n')
        app.proc.send_signal(signal.SIGHUP)
        app.wait_notify("RELOADING=1")
        app.wait_notify("READY=1")
        app.wait_log("reload: panel changed; that takes a restart")
        time.sleep(2)                         # two seconds of audio to analyse, not synchronisation
        assert not [e for p in (a, b, s) for e in p.events("CALL_CLOSED")]
        s.hangup()
        s.await_event("CALL_CLOSED", 10)
        a.hangup()
        b.await_event("CALL_CLOSED", 10)
        rate, pcm = read_wav(a.recordings()[-1].heard)
        assert has_tone(pcm, rate, 440) and not has_tone(pcm, rate, 1000)
        rate, pcm = read_wav(b.recordings()[-1].heard)
        assert has_tone(pcm, rate, 1000) and not has_tone(pcm, rate, 440)
        # listen mode: the supervisor hears both parties and neither party hears the supervisor
        rate, pcm = read_wav(s.recordings()[-1].heard)
        assert has_tone(pcm, rate, 1000) and has_tone(pcm, rate, 440) and not has_tone(pcm, rate, 2000)
        for phone in (a, b):
            rate, pcm = read_wav(phone.recordings()[-1].heard)
            assert not has_tone(pcm, rate, 2000)
        app.wait_log("hangup NORMAL_CLEARING")
    finally:
        peers.close()
        code, log = app.stop()
    assert code == 0, log
