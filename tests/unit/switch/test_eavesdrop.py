"""The eavesdrop state machine (uuid mode, three_way, remote control, events, audit, authorisation)
on a VirtualClock with an in-memory tap: no sleeps, no sockets."""
from __future__ import annotations

import logging

import pytest

from firmware import aio
from firmware.config import Config, EavesdropConfig, User
from firmware.switch import ChannelHungUp, HangupCause, NullEndpoint, Switch, VirtualClock
from firmware.switch import eavesdrop as ed
from firmware.switch.eavesdrop_app import register

CFG = Config(users=(User("1001", "p", "Agent 1001", "sales"), User("1002", "p", "Agent 1002", "sales,support"),
                    User("1000", "p", "Supervisor", "", True), User("1003", "p", "Agent 1003", "")))


class FakeTap:
    def __init__(self, media, target, spy, kw) -> None:
        self.media, self.target, self.spy, self.kw = media, target, spy, kw
        self.mode = kw["mode"]
        self.calls: list = []
        self.detached = False

    def set_mode(self, mode: int) -> None:
        self.mode = mode
        self.calls.append(("mode", mode))

    def drop_whisper(self) -> None:
        self.calls.append(("drop",))

    def play_confirm(self, mode: int) -> None:
        self.calls.append(("confirm", mode))

    def set_gains(self, listen_gain_db=None, whisper_gain_db=None) -> None:
        self.calls.append(("gains", listen_gain_db, whisper_gain_db))

    def detach(self) -> None:
        self.detached = True
        self.media.live.discard(self)


class FakeMedia:
    """The tap interface: a channel is tappable when its uuid is in ``bridged``."""

    def __init__(self) -> None:
        self.bridged: set[str] = set()
        self.taps: list[FakeTap] = []
        self.live: set[FakeTap] = set()
        self.refuse: str | None = None
        self.ready_calls = 0

    def ready(self, target) -> bool:
        self.ready_calls += 1
        return target.uuid in self.bridged

    def attach(self, target, spy, **kw) -> FakeTap:
        if self.refuse:
            raise ValueError(self.refuse)
        tap = FakeTap(self, target, spy, kw)
        self.taps.append(tap)
        self.live.add(tap)
        return tap


class ListAudit:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def record(self, r: dict) -> None:
        self.records.append(dict(r))

    def events(self) -> list[str]:
        return [r["event"] for r in self.records]


class Rig:
    """A switch with one bridged call a (1001, caller) ↔ b (1002, agent) and a supervisor spy."""

    def __init__(self, config: Config = CFG, **spy_vars: str) -> None:
        self.clock = VirtualClock()
        self.sw = Switch(config, clock=self.clock)
        self.media = FakeMedia()
        self.audit = ListAudit()
        self.engine = register(self.sw, self.media, self.audit)
        self.a, self.b = self.call("1001", "1002")
        self.spy = self.sw.new_channel(NullEndpoint("sofia/internal/1000"), user_name="1000",
                                       caller_id_number="1000", **spy_vars)
        self.spy.mark_answered()
        self.events: list = []
        self.sw.events.subscribe("CUSTOM", self.events.append)
        self.task = None
        self.returned = False       # the app returned by itself (not cancelled when the test ended)

    def call(self, caller: str, callee: str, bridged: bool = True):
        a = self.sw.new_channel(NullEndpoint(f"sofia/internal/{caller}"), user_name=caller,
                                caller_id_number=caller, caller_id_name=f"Caller {caller}")
        b = self.sw.new_channel(NullEndpoint(f"sofia/internal/{callee}"), user_name=callee,
                                caller_id_number=caller, direction="outbound")
        a.mark_answered()
        b.mark_answered()
        a.other_leg, b.other_leg = b, a
        if bridged:
            self.media.bridged |= {a.uuid, b.uuid}
        return a, b

    def start(self, app: str = "eavesdrop", data: str | None = None, channel=None):
        ch = channel or self.spy
        target = self.a.uuid if data is None else data

        async def run_it() -> None:
            try:
                await self.sw.run_app(ch, app, target)
            except ChannelHungUp:     # the spy hung up: the dialplan runner would stop here
                return
            self.returned = True

        self.task = aio.create_task(run_it())
        return self.task

    async def settle(self, ms: int = 0) -> None:
        await self.clock.advance(ms)

    @property
    def tap(self) -> FakeTap:
        return self.media.taps[-1]

    def played(self, ch=None) -> list[str]:
        return (ch or self.spy).endpoint.media.played

    def custom(self, subclass: str) -> list:
        return [e for e in self.events if e.subclass == subclass]


def run(coro):
    return aio.run(coro)


# --- listen sources and the initial mode ----------------------------------------------------------------

@pytest.mark.parametrize("vars_,want", [
    ({}, (True, True)),
    ({"eavesdrop_bridge_aleg": "true"}, (True, False)),
    ({"eavesdrop_bridge_bleg": "true"}, (False, True)),
    ({"eavesdrop_bridge_aleg": "true", "eavesdrop_bridge_bleg": "true"}, (True, True)),
    ({"eavesdrop_bridge_aleg": "false"}, (True, True)),          # false alone still means both
])
def test_listen_sources(vars_, want):
    async def main():
        rig = Rig(**vars_)
        rig.start()
        await rig.settle()
        kw = rig.tap.kw
        rig.engine.send_command(rig.spy.uuid, "*")
        await rig.settle()
        return (kw["hear_target"], kw["hear_peer"]), rig.custom("eavesdrop::start")[0]["Eavesdrop-Listen"]

    got, header = run(main())
    assert got == want
    assert header == {(True, True): "both", (True, False): "aleg", (False, True): "bleg"}[want]


@pytest.mark.parametrize("vars_,mode", [
    ({}, 0),
    ({"eavesdrop_whisper_aleg": "true"}, 1),     # the peer hears the spy
    ({"eavesdrop_whisper_bleg": "true"}, 2),     # the target hears the spy
    ({"eavesdrop_whisper_aleg": "true", "eavesdrop_whisper_bleg": "true"}, 3),
])
def test_initial_mode_from_whisper_variables(vars_, mode):
    async def main():
        rig = Rig(**vars_)
        rig.start()
        await rig.settle()
        return rig.tap.kw["mode"], rig.engine.modes()

    m, modes = run(main())
    assert m == mode and list(modes.values()) == [mode]


# --- digits ------------------------------------------------------------------------------------------------

def test_digits_0_1_2_3_set_the_mode_and_star_ends_the_app():
    async def main():
        rig = Rig()
        task = rig.start()
        await rig.settle()
        seen = []
        for d in "2130":
            rig.spy.queue_dtmf(d)
            await rig.settle()
            seen.append((rig.tap.mode, rig.engine.modes()[rig.spy.uuid]))
        rig.spy.queue_dtmf("#")
        rig.spy.queue_dtmf("5")
        rig.spy.queue_dtmf("9")
        await rig.settle()
        drops_after_ignored = rig.tap.calls.count(("drop",))
        assert not task.done()
        rig.spy.queue_dtmf("*")
        await rig.settle()
        return rig, task, seen, drops_after_ignored

    rig, task, seen, drops = run(main())
    assert seen == [(2, 2), (1, 1), (3, 3), (0, 0)]
    assert drops == 4                             # every recognised digit; # 5 9 are ignored
    assert rig.returned and rig.tap.detached and rig.spy.up and rig.a.up and rig.b.up
    assert rig.engine.modes() == {}
    assert [c for c in rig.tap.calls if c[0] == "confirm"] == [("confirm", 2), ("confirm", 1), ("confirm", 3),
                                                               ("confirm", 0)]


def test_the_same_mode_again_drops_whisper_but_is_no_change():
    async def main():
        rig = Rig(eavesdrop_whisper_bleg="true")
        rig.start()
        await rig.settle()
        rig.spy.queue_dtmf("2")
        await rig.settle()
        return rig

    rig = run(main())
    assert rig.tap.calls == [("drop",), ("confirm", 2)]
    assert rig.custom("eavesdrop::mode") == []


def test_confirm_tones_can_be_turned_off():
    async def main():
        rig = Rig(eavesdrop_confirm_tones="false")
        rig.start()
        await rig.settle()
        rig.spy.queue_dtmf("3")
        await rig.settle()
        return rig

    rig = run(main())
    assert rig.tap.calls == [("drop",), ("mode", 3)]


def test_config_turns_confirm_tones_off():
    async def main():
        rig = Rig(Config(users=CFG.users, eavesdrop=EavesdropConfig(confirm_tones=False)))
        rig.start()
        await rig.settle()
        rig.spy.queue_dtmf("1")
        await rig.settle()
        return rig

    assert ("confirm", 1) not in run(main()).tap.calls


def test_dtmf_disabled_digits_are_not_commands_but_commands_are():
    async def main():
        rig = Rig(eavesdrop_enable_dtmf="false")
        task = rig.start()
        await rig.settle()
        rig.spy.queue_dtmf("2*")
        await rig.settle()
        still = (rig.tap.mode, task.done(), rig.spy.dtmf_queued)
        assert rig.engine.send_command(rig.spy.uuid, "3")
        await rig.settle()
        three = rig.tap.mode
        rig.engine.send_command(rig.spy.uuid, "*")
        await rig.settle()
        return still, three, task.done(), rig.spy.dtmf_queued

    still, three, done, queued = run(main())
    assert still == (0, False, 2)                 # the digits pile up (FreeSWITCH)
    assert three == 3 and done and queued == 0    # ... and are flushed at the end


@pytest.mark.parametrize("digits,mode", [("w1@500", 1), ("w2@500", 2)])
def test_seed_queue_dtmf_examples_start_in_the_mode_they_name(digits, mode):
    async def main():
        rig = Rig()
        rig.spy.queue_dtmf(digits)                # the dialplan's queue_dtmf before eavesdrop
        rig.start()
        await rig.settle()
        before = rig.tap.mode
        await rig.settle(500)
        return before, rig.tap.mode

    assert run(main()) == (0, mode)


def test_remote_control_by_digits_queued_on_the_spy_and_command_strings():
    async def main():
        rig = Rig()
        task = rig.start()
        await rig.settle()
        rig.spy.queue_dtmf("2", source="uuid_recv_dtmf")
        await rig.settle()
        by_digit = rig.tap.mode
        assert rig.engine.send_command("no-such-uuid", "3") is False
        assert rig.engine.send_command(rig.spy.uuid, "3*") is True     # several characters work
        await rig.settle()
        return by_digit, rig, task

    by_digit, rig, task = run(main())
    assert by_digit == 2 and rig.returned
    modes = [(e["Eavesdrop-Mode"], e["Eavesdrop-Mode-Source"]) for e in rig.custom("eavesdrop::mode")]
    assert modes == [("2", "digit"), ("3", "command")]
    assert rig.custom("eavesdrop::stop")[0]["Eavesdrop-Reason"] == "command"


def test_three_way_starts_in_mode_3_without_dtmf_control_or_group_check():
    async def main():
        rig = Rig(eavesdrop_require_group="nobody")
        task = rig.start("three_way")
        await rig.settle()
        rig.spy.queue_dtmf("0*")
        await rig.settle()
        state = (rig.tap.kw["mode"], rig.tap.mode, task.done(), rig.tap.kw["hear_target"], rig.tap.kw["hear_peer"])
        rig.engine.send_command(rig.spy.uuid, "*")
        await rig.settle()
        return state, task.done()

    assert run(main()) == ((3, 3, False, True, True), True)


# --- groups ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("group,ok", [("sales", True), ("support", True), ("Sales", False), ("sale", False),
                                      (" support", False), ("sales,support", False)])
def test_require_group_is_an_exact_match_in_the_comma_list(group, ok):
    async def main():
        rig = Rig(eavesdrop_require_group=group)
        rig.start(data=rig.b.uuid)                 # b is 1002: "sales,support"
        await rig.settle()
        return bool(rig.media.taps), rig.played()

    attached, played = run(main())
    assert attached is ok
    assert played == ([] if ok else [ed.DEFAULT_FAILED_SOUND])


# --- failures are never silent --------------------------------------------------------------------------

def test_a_stale_uuid_plays_indicate_failed_and_logs_why(caplog):
    async def main():
        rig = Rig(eavesdrop_indicate_failed="tone_stream://%(500,0,320)")
        gone = rig.a.uuid
        await rig.a.hangup()
        with caplog.at_level(logging.WARNING):
            await rig.start(data=gone)
        return rig, gone

    rig, gone = run(main())
    assert rig.played() == ["tone_stream://%(500,0,320)"]
    assert rig.media.taps == [] and rig.spy.up
    assert any(gone in r.getMessage() and "stale" in r.getMessage() for r in caplog.records)
    assert rig.audit.records[-1]["event"] == "failed" and "stale" in rig.audit.records[-1]["reason"]


def test_an_empty_uuid_and_self_and_a_spy_fail_with_the_default_sound():
    async def main():
        rig = Rig()
        await rig.start(data="")
        await rig.start(data=rig.spy.uuid)
        other = rig.sw.new_channel(NullEndpoint("sofia/internal/1009"), may_eavesdrop="true")
        other.mark_answered()
        rig.engine.spies.add(other.uuid)          # it is running eavesdrop itself
        await rig.start(data=other.uuid)
        return rig

    rig = run(main())
    assert rig.played() == [ed.DEFAULT_FAILED_SOUND] * 3
    reasons = [r["reason"] for r in rig.audit.records]
    assert "empty" in reasons[0] and "itself" in reasons[1] and "itself eavesdropping" in reasons[2]


def test_the_target_is_waited_for_up_to_6_s():
    async def main():
        rig = Rig()
        rig.media.bridged.clear()
        rig.start()
        await rig.settle(5900)
        waiting = (rig.media.taps == [], rig.task.done())
        rig.media.bridged.add(rig.a.uuid)          # the bridge comes up just in time
        await rig.settle(100)
        return waiting, len(rig.media.taps), rig.media.ready_calls

    waiting, taps, polls = run(main())
    assert waiting == (True, False) and taps == 1 and polls <= 62


def test_a_target_without_media_after_6_s_fails():
    async def main():
        rig = Rig(eavesdrop_indicate_failed="/no/such/failed.wav")
        rig.media.bridged.clear()
        rig.start()
        await rig.settle(5999)
        early = rig.task.done()
        await rig.settle(1)
        return early, rig

    early, rig = run(main())
    assert not early and rig.returned and rig.media.taps == []
    assert "no media" in rig.audit.records[-1]["reason"]
    assert rig.played() == [ed.DEFAULT_FAILED_SOUND]      # the configured file is missing: never silence


def test_a_refused_attach_is_a_failure_with_its_reason():
    async def main():
        rig = Rig()
        rig.media.refuse = "the spy's own leg is bridged"
        await rig.start()
        return rig

    rig = run(main())
    assert rig.played() == [ed.DEFAULT_FAILED_SOUND] and "own leg" in rig.audit.records[-1]["reason"]


# --- teardown ----------------------------------------------------------------------------------------------

def test_target_hangup_ends_the_session_and_the_spy_stays():
    async def main():
        rig = Rig(eavesdrop_whisper_bleg="true")
        rig.start()
        await rig.settle()
        await rig.a.hangup()
        await rig.settle()
        return rig

    rig = run(main())
    assert rig.returned and rig.spy.up and rig.tap.detached
    assert rig.custom("eavesdrop::stop")[0]["Eavesdrop-Reason"] == "target-hangup"


def test_target_unbridged_ends_the_session():
    async def main():
        rig = Rig()
        rig.start()
        await rig.settle()
        rig.a.fire("CHANNEL_UNBRIDGE", {"Bridge-A-Unique-ID": rig.b.uuid, "Bridge-B-Unique-ID": rig.a.uuid})
        await rig.settle()
        return rig

    rig = run(main())
    assert rig.returned and rig.custom("eavesdrop::stop")[0]["Eavesdrop-Reason"] == "target-unbridged"


def test_spy_hangup_leaves_the_target_untouched():
    async def main():
        rig = Rig()
        rig.start()
        await rig.settle()
        await rig.spy.hangup()
        await rig.settle()
        return rig

    rig = run(main())
    assert rig.returned is False and rig.task.done() and rig.tap.detached and rig.a.up and rig.b.up
    assert rig.custom("eavesdrop::stop")[0]["Eavesdrop-Reason"] == "spy-hangup"
    assert rig.engine.modes() == {} and not rig.engine.is_spy(rig.spy.uuid)


# --- authorisation -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("app", ["eavesdrop", "three_way"])
def test_only_users_allowed_to_eavesdrop_may(app, caplog):
    async def main():
        rig = Rig()
        agent = rig.sw.new_channel(NullEndpoint("sofia/internal/1003"), user_name="1003")
        agent.mark_answered()
        with caplog.at_level(logging.WARNING):
            await rig.start(app, channel=agent)
        return rig, agent

    rig, agent = run(main())
    assert rig.media.taps == [] and not agent.up and agent.hangup_cause is HangupCause.CALL_REJECTED
    assert agent.endpoint.media.played == [ed.DEFAULT_FAILED_SOUND]
    assert any("may not eavesdrop" in r.getMessage() for r in caplog.records)
    assert rig.audit.records == [{"event": "refused", "spy_uuid": agent.uuid, "user": "1003",
                                  "target": rig.a.uuid, "reason": "may_eavesdrop is not true"}]


def test_the_dialplan_may_mark_a_channel_allowed():
    async def main():
        rig = Rig()
        agent = rig.sw.new_channel(NullEndpoint("sofia/internal/1003"), user_name="1003")
        agent.mark_answered()
        agent.set_variable("may_eavesdrop", "true")
        rig.start(channel=agent)
        await rig.settle()
        return rig

    assert len(run(main()).media.taps) == 1


# --- events, audit, LED state -------------------------------------------------------------------------------

def test_events_and_audit_cover_start_every_mode_and_stop():
    async def main():
        rig = Rig()
        rig.start()
        await rig.settle(1000)
        rig.spy.queue_dtmf("2")
        await rig.settle(3000)
        rig.spy.queue_dtmf("3")
        await rig.settle(2000)
        rig.spy.queue_dtmf("*")
        await rig.settle()
        return rig

    rig = run(main())
    subs = [e.subclass for e in rig.events]
    assert subs == ["eavesdrop::start", "eavesdrop::mode", "eavesdrop::mode", "eavesdrop::stop"]
    start = rig.events[0]
    assert start["Event-Name"] == "CUSTOM" and start["Unique-ID"] == rig.spy.uuid
    assert start["Eavesdrop-Spy-UUID"] == rig.spy.uuid and start["Eavesdrop-Target-UUID"] == rig.a.uuid
    assert start["Eavesdrop-Peer-UUID"] == rig.b.uuid and start["Eavesdrop-User"] == "1000"
    assert start["Eavesdrop-Target-Caller-ID-Number"] == "1001" and start["Eavesdrop-Mode"] == "0"
    assert rig.events[2]["Eavesdrop-Previous-Mode"] == "2" and rig.events[2]["Eavesdrop-Previous-Mode-Ms"] == "3000"
    assert rig.audit.events() == ["start", "mode", "mode", "stop"]
    stop = rig.audit.records[-1]
    assert stop["reason"] == "next" and stop["duration_ms"] == 6000 and stop["mode_ms"] == 2000
    assert stop["mode"] == 3 and stop["target_uuid"] == rig.a.uuid and stop["user"] == "1000"
    assert rig.audit.records[1]["previous_mode_ms"] == 1000


def test_gains_and_notify_variables_reach_the_tap():
    async def main():
        rig = Rig(eavesdrop_listen_gain_db="-6", eavesdrop_whisper_gain_db="oops",
                  eavesdrop_notify_parties="true")
        rig.start()
        await rig.settle()
        return rig.tap.kw

    kw = run(main())
    assert kw["listen_gain_db"] == -6.0 and kw["whisper_gain_db"] == 0.0 and kw["notify_parties"] is True


def test_register_puts_the_engine_on_the_switch_with_a_file_audit(tmp_path):
    from firmware.audit import read
    from firmware.config import LogConfig

    async def main():
        cfg = Config(users=CFG.users, log=LogConfig(audit_file=str(tmp_path / "audit.sqlite")))
        sw = Switch(cfg, clock=VirtualClock())
        engine = register(sw, FakeMedia())
        assert sw.eavesdrop is engine and sw.apps["eavesdrop"].fn == engine.app_eavesdrop
        agent = sw.new_channel(NullEndpoint("x"), user_name="1003")
        agent.mark_answered()
        await sw.run_app(agent, "eavesdrop", "whatever")

    run(main())
    records = list(read(tmp_path / "audit.sqlite"))
    assert [r["event"] for r in records] == ["refused"] and records[0]["time"].endswith("Z")


def test_audit_log_appends_and_prints(tmp_path, capsys):
    from firmware.audit import AuditLog, main, read

    import sqlite3
    path = tmp_path / "sub" / "audit.sqlite"
    log_ = AuditLog(path, wallclock=lambda: 1_700_000_000.25)
    log_.record({"event": "start", "spy_uuid": "s", "user": "1000", "target_uuid": "t", "mode": 0})
    log_.record({"event": "stop", "spy_uuid": "s", "user": "1000", "target_uuid": "t", "mode": 2,
                 "duration_ms": 6000, "reason": "next"})
    # append-only: the file refuses edits and deletions, whoever opens it
    db = sqlite3.connect(path)
    for sql in ("UPDATE audit SET user = 'nobody'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(sql)
    assert db.execute("SELECT event, user, target_uuid, mode FROM audit ORDER BY id").fetchall() == [
        ("start", "1000", "t", 0), ("stop", "1000", "t", 2)]
    db.close()
    records = list(read(path))
    assert [r["event"] for r in records] == ["start", "stop"]
    assert records[0]["time"] == "2023-11-14T22:13:20.250Z"
    assert main([str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "lasted 6.0 s" in out[1] and "(next)" in out[1]
    assert main([str(tmp_path / "missing.log")]) == 1


def test_gains_change_during_the_session():
    async def main():
        rig = Rig()
        rig.start()
        await rig.settle()
        assert rig.engine.set_gains("nobody", -6) is False
        assert rig.engine.set_gains(rig.spy.uuid, listen_gain_db=-6.0) is True
        return rig, float(rig.spy.get_variable("eavesdrop_listen_gain_db"))

    rig, kept = run(main())
    assert rig.tap.calls == [("gains", -6.0, None)] and kept == -6.0


def test_events_and_audit_name_the_agent_the_far_party_and_the_mode_by_role(tmp_path):
    """A customer (5551234, no configured user) calls agent 1002. Spied on the agent's leg or on the
    customer's, the events and the audit say who the agent and the far party are, and whom each
    whisper reached: digit 2 on the agent's leg and digit 1 on the customer's are both whisper-agent."""
    from firmware.audit import AuditLog, format_record, read

    async def main():
        rig = Rig()
        rig.engine.audit = AuditLog(tmp_path / "audit.sqlite", wallclock=lambda: 1_700_000_000.0)
        for leg in (rig.a, rig.b):
            leg.remote_hangup()
        customer = rig.sw.new_channel(NullEndpoint("sofia/gateway/pbx/5551234"), caller_id_number="5551234",
                                      caller_id_name="Customer")
        agent = rig.sw.new_channel(NullEndpoint("sofia/internal/1002"), user_name="1002",
                                   caller_id_number="5551234", direction="outbound", destination_number="1002")
        for c in (customer, agent):
            c.mark_answered()
        customer.other_leg, agent.other_leg = agent, customer
        rig.media.bridged |= {customer.uuid, agent.uuid}
        for target, digit in ((agent, "2"), (customer, "1")):
            rig.start(data=target.uuid)
            await rig.settle()
            rig.spy.queue_dtmf(digit)
            await rig.settle()
            rig.spy.queue_dtmf("*")
            await rig.settle()
        return [e for e in rig.events if e.subclass in ("eavesdrop::start", "eavesdrop::mode")]

    events = run(main())
    for e in events:
        assert (e["Eavesdrop-Agent-ID"], e["Eavesdrop-Agent-Name"]) == ("1002", "Agent 1002")
        assert (e["Eavesdrop-Far-Party-Number"], e["Eavesdrop-Far-Party-Name"]) == ("5551234", "Customer")
    assert [e["Eavesdrop-Mode-Role"] for e in events] == ["listen", "whisper-agent"] * 2
    assert [e["Eavesdrop-Mode"] for e in events] == ["0", "2", "0", "1"]
    lines = [format_record(r) for r in read(tmp_path / "audit.sqlite")]
    assert [line.split()[1] for line in lines] == ["start", "mode", "stop"] * 2
    assert all('supervisor=1000 agent=1002 "Agent 1002" far=5551234 "Customer"' in line for line in lines), lines
    assert "mode=whisper-agent srtp call=no spy=no after listen for 0.0 s" in lines[1]
    assert "mode=whisper-agent srtp call=no spy=no after listen" in lines[4]


IDLE = "tone_stream://%(250,0,920)"
NEW = "tone_stream://%(500,0,620)"


def test_userspy_follows_an_agent_across_calls_in_the_last_mode():
    """``userspy 1002``: 1002's current call (the agent's leg), whisper to the agent; the call ends,
    the supervisor stays on the line hearing indicate_idle once; 1002's next call (one it places)
    is attached by itself, still whispering to the agent; * leaves. Each attach is audited."""
    async def main():
        rig = Rig(eavesdrop_indicate_idle=IDLE, eavesdrop_indicate_new=NEW)
        rig.start(app="userspy", data="1002@earshot.local")
        await rig.settle()
        first = rig.tap
        assert first.target is rig.b                      # the leg facing agent 1002
        rig.spy.queue_dtmf("2")
        await rig.settle()
        for leg in (rig.a, rig.b):
            leg.remote_hangup()
        await rig.settle()
        waiting = (list(rig.played()), len(rig.media.taps), rig.returned)
        await rig.settle(20_000)                          # a long quiet spell: no second idle tone
        quiet = list(rig.played())
        a2, b2 = rig.call("1002", "1003")                 # the agent's next call, placed by it
        await rig.settle()
        second = rig.tap
        rig.spy.queue_dtmf("*")
        await rig.settle()
        return rig, first, waiting, quiet, second, a2

    rig, first, waiting, quiet, second, a2 = run(main())
    assert waiting == ([NEW, IDLE], 1, False) and quiet == [NEW, IDLE]
    assert second is not first and second.target is a2 and second.mode == 2      # mode kept
    assert rig.returned and rig.engine.modes() == {}
    assert rig.audit.events() == ["start", "mode", "stop", "start", "stop"]
    starts = [r for r in rig.audit.records if r["event"] == "start"]
    assert [r["agent"] for r in starts] == ["1002", "1002"] and starts[1]["mode_role"] == "whisper-agent"


def test_userspy_star_while_waiting_leaves_and_an_unknown_agent_is_a_clear_failure():
    async def main():
        rig = Rig(eavesdrop_indicate_idle=IDLE)
        rig.start(app="userspy", data="1003")             # 1003 has no call
        await rig.settle()
        idle = list(rig.played())
        rig.spy.queue_dtmf("*")
        await rig.settle()
        left = rig.returned
        rig.returned = False
        rig.start(app="userspy", data="")
        await rig.settle()
        return rig, idle, left

    rig, idle, left = run(main())
    assert idle == [IDLE] and left and rig.returned
    assert rig.media.taps == [] and rig.audit.events() == ["failed"]
    assert rig.audit.records[0]["reason"] == "userspy needs an agent id"


def test_keying_hash_id_hash_moves_the_spy_to_that_agents_call():
    """``#1003#`` during a session: on to agent 1003's call (its leg), in the default mode; the
    digits keyed between the two # change no mode (1 would whisper to the customer). An agent with
    no call is a failure tone and a log line."""
    async def main():
        rig = Rig()
        a2, b2 = rig.call("1003", "5551234")                # agent 1003 placed a call out
        rig.start()                                          # spying on 1001's leg (rig.a)
        await rig.settle()
        first = rig.tap
        for d in "#1003#":
            rig.spy.queue_dtmf(d)
        await rig.settle()
        second = rig.tap
        modes = [c for c in first.calls if c[0] == "mode"]
        for d in "#9999#":                                   # no such call: the app ends, failed
            rig.spy.queue_dtmf(d)
        await rig.settle()
        return rig, first, second, modes, a2

    rig, first, second, modes, a2 = run(main())
    assert first.target is rig.a and first.detached and modes == []
    assert second.target is a2 and second.mode == 0 and second.detached
    stops = [r for r in rig.audit.records if r["event"] == "stop"]
    assert [r["reason"] for r in stops] == ["jump", "jump"]
    assert rig.audit.records[-1]["event"] == "failed" and "agent 9999 has no call" in rig.audit.records[-1]["reason"]
    assert rig.returned and rig.played() == [ed.DEFAULT_FAILED_SOUND]


def test_88_for_an_unknown_agent_or_one_without_a_call_says_so():
    """The seed's 88<id> hands eavesdrop an empty uuid when spymap has no entry: a failed tone and
    a line naming what was dialled (not a bare "no target uuid")."""
    async def main():
        rig = Rig()
        rig.spy.set_variable("destination_number", "889999")
        rig.start(data="")
        await rig.settle()
        return rig

    rig = run(main())
    assert rig.played() == [ed.DEFAULT_FAILED_SOUND] and rig.media.taps == []
    assert rig.audit.records[-1]["reason"].startswith("no call to spy on for 889999: no such agent")
