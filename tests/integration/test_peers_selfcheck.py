"""The peer harness proves itself against the real tools: baresip, SIPp and kamailio on loopback,
and the audio helpers on synthetic signals."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.peers import PeerGroup, PeerMissing, require
from tests.peers.audio import (dominant_frequencies, has_tone, level_dbfs, read_wav,
                               write_tone_wav)
from tests.peers.baresip import Account, Baresip
from tests.peers.kamailio import Kamailio
from tests.peers.sipp import Sipp, parse_stats

TALK_S = 1.5  # audio held in a call before the spectral checks; not a pass/fail timing


def _call(alice: Baresip, bob: Baresip) -> None:
    """alice dials bob directly; bob answers (by hand unless it auto-answers, which in
    baresip 1.0.0 raises no CALL_INCOMING)."""
    alice.dial(bob.uri)
    if bob.accounts[0].answermode == "manual":
        bob.await_event("CALL_INCOMING", 5)
        bob.accept()
    alice.await_event("CALL_ESTABLISHED", 5)
    bob.await_event("CALL_ESTABLISHED", 5)


def _hang_up(caller: Baresip, callee: Baresip) -> None:
    caller.hangup()
    caller.await_event("CALL_CLOSED", 5)
    callee.await_event("CALL_CLOSED", 5)


# ----- audio helpers (no peers)

def test_tone_wav_round_trips_and_is_found(tmp_path: Path) -> None:
    rate, x = read_wav(write_tone_wav(tmp_path / "t.wav", 440, 1.0))
    assert rate == 8000 and x.dtype == np.int16 and len(x) == 8000
    assert dominant_frequencies(x, rate) == [pytest.approx(440, abs=2)]
    assert has_tone(x, rate, 440) and not has_tone(x, rate, 1000)
    assert level_dbfs(x) == pytest.approx(-9.03, abs=0.1)  # 0.5 peak sine: -6 dB - 3 dB


def test_mixed_tones_and_silence_are_told_apart(tmp_path: Path) -> None:
    rate, low = read_wav(write_tone_wav(tmp_path / "a.wav", 440, 1.0, amplitude=0.3))
    _, high = read_wav(write_tone_wav(tmp_path / "b.wav", 1000, 1.0, amplitude=0.3))
    mix = np.concatenate([np.zeros(8000, np.int16), low + high, np.zeros(8000, np.int16)])
    peaks = dominant_frequencies(mix, rate, n=3)
    assert sorted(peaks) == [pytest.approx(440, abs=2), pytest.approx(1000, abs=2)]
    assert has_tone(mix, rate, 440) and has_tone(mix, rate, 1000)
    assert not has_tone(mix, rate, 700)
    silence = np.zeros(16000, np.int16)
    assert dominant_frequencies(silence, rate) == [] and not has_tone(silence, rate, 440)
    assert level_dbfs(silence) == float("-inf")


def test_audio_helpers_reject_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1-D"):
        dominant_frequencies(np.zeros((2, 400), np.int16), 8000)
    with pytest.raises(ValueError, match="rate"):
        has_tone(np.zeros(400, np.int16), 0, 440)
    with pytest.raises(ValueError, match="frequencies"):
        write_tone_wav(tmp_path / "x.wav", 5000, 1.0)
    (tmp_path / "junk.wav").write_bytes(b"not a wav")
    with pytest.raises(ValueError, match="not a PCM WAV"):
        read_wav(tmp_path / "junk.wav")


def test_driver_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="codecs"):
        Account("alice", codecs=("opus",))
    with pytest.raises(ValueError, match="cannot parse"):
        Account("alice", registrar="127.0.0.1:5060", password="a;b")
    with pytest.raises(ValueError, match="DTMF"):
        Baresip(tmp_path, "a").send_dtmf("12x")
    with pytest.raises(ValueError, match="aufile needs"):
        wav = write_tone_wav(tmp_path / "16k.wav", 440, 0.5, rate=16000)
        Baresip(tmp_path, "b", source=wav).start()
    with pytest.raises(ValueError, match="unknown SIPp scenario"):
        Sipp(tmp_path, "no_such_scenario")
    with pytest.raises(ValueError, match="tokens"):
        Kamailio(tmp_path, users={"alice": 'x"; exit; "'})
    assert parse_stats(tmp_path / "missing.csv") == {}


def test_a_missing_peer_binary_is_an_error_not_a_skip(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PeerMissing, match="apt-get install baresip-core"):
        Baresip(tmp_path, "a").start()
    with pytest.raises(PeerMissing, match="sip-tester"):
        require("sipp", "sip-tester")


# ----- real peers

@pytest.mark.peers
def test_two_baresips_each_hear_the_other_tone_not_their_own(peer_group: PeerGroup,
                                                             tmp_path: Path) -> None:
    tone = write_tone_wav(tmp_path / "tone1000.wav", 1000, 20)
    alice = peer_group.add(Baresip(tmp_path, "alice", source=tone, lifetime=20)).start()
    bob = peer_group.add(Baresip(tmp_path, "bob", source=440, lifetime=20)).start()
    _call(alice, bob)
    time.sleep(TALK_S)
    _hang_up(alice, bob)

    for phone, own, other in ((alice, 1000, 440), (bob, 440, 1000)):
        [rec] = phone.recordings()
        rate, heard = read_wav(rec.heard)
        assert rate == 8000 and len(heard) >= rate // 2, phone.name
        assert has_tone(heard, rate, other), (phone.name, dominant_frequencies(heard, rate))
        assert not has_tone(heard, rate, own), (phone.name, dominant_frequencies(heard, rate))
        rate, sent = read_wav(rec.sent)
        assert has_tone(sent, rate, own), (phone.name, dominant_frequencies(sent, rate))


@pytest.mark.peers
def test_rfc4733_dtmf_sent_by_one_phone_arrives_as_events(peer_group: PeerGroup,
                                                          tmp_path: Path) -> None:
    alice = peer_group.add(Baresip(tmp_path, "alice", source=1000, lifetime=20)).start()
    bob = peer_group.add(Baresip(tmp_path, "bob", Account("bob", answermode="auto"),
                                 lifetime=20)).start()
    _call(alice, bob)
    alice.send_dtmf("159#")
    digits = [bob.await_event("CALL_DTMF_START", 5)["param"] for _ in "159#"]
    assert digits == list("159#")
    _hang_up(alice, bob)


@pytest.mark.peers
def test_sipp_builtin_uac_and_uas_complete_five_calls(peer_group: PeerGroup,
                                                      tmp_path: Path) -> None:
    uas = peer_group.add(Sipp(tmp_path, "uas", calls=5, timeout=15)).start()
    uac = peer_group.add(Sipp(tmp_path, "uac", remote=uas.addr, calls=5, rate=20, limit=5,
                              timeout=15)).start()
    for result in (uac.wait(), uas.wait()):
        assert result.ok and result.successful == 5 and result.created == 5, result


@pytest.mark.peers
def test_bundled_scenarios_call_and_digest_register(peer_group: PeerGroup,
                                                    tmp_path: Path) -> None:
    uas = peer_group.add(Sipp(tmp_path, "uas_answer", calls=2, rtp_echo=True)).start()
    uac = peer_group.add(Sipp(tmp_path, "uac_call_bye", remote=uas.addr, service="bob",
                              calls=2, hold_ms=100)).start()
    for result in (uac.wait(), uas.wait()):
        assert result.ok and result.successful == 2, result

    registrar_keys = {"user": "alice", "password": "s3cret", "realm": "earshot.test",
                      "expires": "60"}
    for password, good in (("s3cret", True), ("wrong", False)):
        reg = peer_group.add(Sipp(tmp_path, "uas_auth_register", name=f"registrar-{good}",
                                  keys=registrar_keys)).start()
        client = peer_group.add(Sipp(tmp_path, "uac_register", name=f"client-{good}",
                                     remote=reg.addr, service="alice",
                                     auth=("alice", password), keys={"expires": "60"})).start()
        for result in (client.wait(), reg.wait()):
            assert (result.successful, result.failed) == ((1, 0) if good else (0, 1)), result
            assert result.ok is good


@pytest.mark.peers
def test_two_baresips_register_to_kamailio(peer_group: PeerGroup, tmp_path: Path) -> None:
    kam = peer_group.add(Kamailio(tmp_path)).start()
    alice = peer_group.add(Baresip(tmp_path, "alice", Account("alice", registrar=kam.addr),
                                   source=1000)).start()
    bob = peer_group.add(Baresip(tmp_path, "bob", Account("bob", registrar=kam.addr,
                                                          answermode="auto"),
                                 source=440)).start()
    alice.wait_registered()
    bob.wait_registered()
    locations = kam.dump_locations()
    assert set(locations) == {"alice", "bob"}
    assert any(f":{alice.sip_port}" in c for c in locations["alice"]), locations
    assert any(f":{bob.sip_port}" in c for c in locations["bob"]), locations
    # ... and the proxy routes a call by AOR.
    alice.dial(f"sip:bob@{kam.addr}")
    alice.await_event("CALL_ESTABLISHED", 5)
    _hang_up(alice, bob)


@pytest.mark.peers
def test_kamailio_digest_auth_admits_only_the_right_password(peer_group: PeerGroup,
                                                             tmp_path: Path) -> None:
    kam = peer_group.add(Kamailio(tmp_path, users={"alice": "pa55", "bob": "b0b"})).start()
    alice = peer_group.add(Baresip(tmp_path, "alice", Account(
        "alice", registrar=kam.addr, password="pa55", domain="earshot.test"))).start()
    mallory = peer_group.add(Baresip(tmp_path, "mallory", Account(
        "bob", registrar=kam.addr, password="guess"))).start()
    alice.wait_registered()
    deadline = time.monotonic() + 5
    while not any(mallory.reg_status().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(mallory.reg_status().values()) == ["ERR"]
    assert set(kam.dump_locations()) == {"alice"}
