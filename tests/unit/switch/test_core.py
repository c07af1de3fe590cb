"""The switch: channel table, dial strings, bridge and originate through endpoint factories, transfer."""
import pytest

from firmware import aio
from firmware.config import Config, Gateway, User
from firmware.switch import (ChannelState, Dialplan, HangupCause, NullEndpoint, OriginateError, Switch,
                             VirtualClock, parse_dial_string, parse_leg)
from firmware.switch import events as ev

CFG = Config(users=(User("1001", "p", "Agent 1001", "sales"), User("1002", "p", "Agent 1002", "sales"),
                    User("1000", "p", "Supervisor", "", True)),
             gateways=(Gateway("pbx", "192.0.2.10:5060"),))


def run(coro):
    return aio.run(coro)


# --- dial strings -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,kind,fields", [
    ("user/1001", "user", {"user": "1001", "domain": ""}),
    ("user/1001@earshot.local", "user", {"user": "1001", "domain": "earshot.local"}),
    ("sofia/gateway/pbx/5551234", "gateway", {"gateway": "pbx", "number": "5551234"}),
    ("sofia/internal/2001@yourvsp.com", "sofia", {"profile": "internal", "uri": "2001@yourvsp.com"}),
    ("sofia/default/2001@yourvsp.com", "sofia", {"profile": "default", "uri": "2001@yourvsp.com"}),
    ("loopback/9196", "loopback", {"extension": "9196", "context": ""}),
    ("loopback/9196/public", "loopback", {"extension": "9196", "context": "public"}),
    ("error/user_busy", "error", {"cause": HangupCause.USER_BUSY}),
    ("portaudio/auto", "portaudio", {"target": "auto"}),
])
def test_parse_leg(text, kind, fields):
    d = parse_leg(text)
    assert d.kind == kind
    for k, v in fields.items():
        assert getattr(d, k) == v


def test_dial_string_variables_alternatives_and_legs():
    alts = parse_dial_string("{sip_secure_media=true,a=b=c}[x=1]user/1000,user/1001|sofia/gateway/pbx/55")
    assert [[str(d) for d in legs] for legs in alts] == [["user/1000", "user/1001"], ["sofia/gateway/pbx/55"]]
    assert alts[0][0].variables == {"sip_secure_media": "true", "a": "b=c", "x": "1"}
    assert alts[0][1].variables == {"sip_secure_media": "true", "a": "b=c"}


@pytest.mark.parametrize("bad", ["", "user", "user/", "{a=b", "{a}user/1", "sofia/gateway/pbx", "sofia/x",
                                 "error/NOT_A_CAUSE", "1001", "{a=b}"])
def test_bad_dial_strings(bad):
    with pytest.raises(ValueError):
        parse_dial_string(bad)


# --- the table ----------------------------------------------------------------------------------------

def test_table_lookup_order_and_hangup_all():
    async def main():
        sw = Switch(CFG)
        chans = [sw.new_channel(NullEndpoint(f"null/{i}")) for i in range(3)]
        assert sw.channels() == chans and sw.get(chans[1].uuid) is chans[1] and len(sw) == 3
        await chans[1].hangup()
        assert sw.channels() == [chans[0], chans[2]] and sw.get(chans[1].uuid) is None
        n = await sw.hangup_all()
        return n, len(sw), chans[0].hangup_cause

    assert run(main()) == (2, 0, HangupCause.MANAGER_REQUEST)


def test_user_variables_come_from_the_config():
    sw = Switch(CFG)
    ch = sw.new_channel(NullEndpoint(), user_name="1001", caller_id_number="1001")
    assert ch.vars["eavesdrop_group"] == "sales" and ch.vars["may_eavesdrop"] == "false"
    sup = sw.new_channel(NullEndpoint(), user_name="1000", may_eavesdrop="false")   # explicit wins
    assert sup.vars["may_eavesdrop"] == "false"
    assert sw.expand(None, "${user_exists(id 1002)} ${user_exists(id 1099)} ${user_exists(id 1002 other.dom)}") \
        == "true false false"


# --- bridge and originate -----------------------------------------------------------------------------

LOOP_DP = """<include><context name="default">
  <extension name="answers"><condition field="destination_number" expression="^2000$">
    <action application="ring_ready"/><action application="answer"/><action application="sleep" data="1000"/>
    <action application="hangup" data="NORMAL_CLEARING"/></condition></extension>
  <extension name="rings_forever"><condition field="destination_number" expression="^2001$">
    <action application="ring_ready"/><action application="sleep" data="600000"/></condition></extension>
  <extension name="busy"><condition field="destination_number" expression="^2002$">
    <action application="hangup" data="USER_BUSY"/></condition></extension>
  <extension name="caller"><condition field="destination_number" expression="^b(.*)$">
    <action application="export" data="exported=from_a"/>
    <action application="bridge" data="$1"/>
    <action application="set" data="after_bridge=${last_bridge_hangup_cause}"/>
  </condition></extension>
</context></include>"""


def loop_switch():
    clock = VirtualClock()
    sw = Switch(CFG, dialplan=Dialplan.parse(LOOP_DP), clock=clock)
    names = []
    sw.events.subscribe([ev.CHANNEL_BRIDGE, ev.CHANNEL_UNBRIDGE], lambda e: names.append(e.name))
    return sw, clock, names


def test_bridge_through_loopback_and_continue_after_the_other_leg_hangs_up():
    sw, clock, names = loop_switch()

    async def main():
        a = sw.new_channel(NullEndpoint("sofia/internal/1001@h"), caller_id_number="1001",
                           destination_number="bloopback/2000")
        task = sw.start(a)
        await clock.settle()
        assert a.state is ChannelState.ANSWERED and a.other_leg is not None
        b = a.other_leg
        exported = b.get_variable("exported")
        await clock.advance(1000)
        await task
        return a, b, exported

    a, b, exported = run(main())
    assert names == ["CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE"]
    assert exported == "from_a" and b.vars["caller_id_number"] == "1001"
    assert a.vars["after_bridge"] == "NORMAL_CLEARING" and a.other_leg is None
    assert a.endpoint.calls == ["answer", "hangup:NORMAL_CLEARING"]   # B answered at once: no ring first
    assert len(sw) == 0


@pytest.mark.parametrize("dial,cause", [
    ("error/user_busy", HangupCause.USER_BUSY),
    ("loopback/2002", HangupCause.USER_BUSY),
    ("user/1099", HangupCause.SUBSCRIBER_ABSENT),
    ("user/1002", HangupCause.CHAN_NOT_IMPLEMENTED),         # no SIP endpoint registered here
    ("sofia/gateway/nope/123", HangupCause.INVALID_GATEWAY),
    ("sofia/gateway/pbx/123", HangupCause.CHAN_NOT_IMPLEMENTED),
    ("carrier-pigeon/x", HangupCause.CHAN_NOT_IMPLEMENTED),
    ("not a dial string", HangupCause.INVALID_NUMBER_FORMAT),
    ("error/user_busy|error/no_answer", HangupCause.NO_ANSWER),   # alternatives tried in turn
])
def test_failed_bridge_hangs_up_with_the_cause(dial, cause):
    sw, clock, _ = loop_switch()

    async def main():
        a = sw.new_channel(NullEndpoint(), destination_number="b" + dial)
        await sw.execute(a)
        return a

    a = run(main())
    assert a.hangup_cause is cause and a.vars["originate_disposition"] == cause.name
    assert "after_bridge" not in a.vars


def test_continue_on_fail_goes_on_with_the_dialplan():
    sw, clock, _ = loop_switch()

    async def main():
        a = sw.new_channel(NullEndpoint(), destination_number="berror/user_busy", continue_on_fail="true")
        await sw.execute(a)
        return a

    a = run(main())
    assert a.vars["after_bridge"] == "USER_BUSY" and a.hangup_cause is HangupCause.NORMAL_CLEARING


def no_answer_after(clock: VirtualClock):
    """A call to a leg that rings forever with call_timeout=5: (the A leg, its state at 4999 ms)."""
    sw = Switch(CFG, dialplan=Dialplan.parse(LOOP_DP), clock=clock)

    async def main():
        a = sw.new_channel(NullEndpoint(), destination_number="b{call_timeout=5}loopback/2001")
        task = sw.start(a)
        await clock.advance(4999)
        ringing = a.state
        await clock.advance(1)
        await task
        assert len(sw) == 0
        return a, ringing

    return run(main())


def test_no_answer_after_call_timeout():
    a, ringing = no_answer_after(VirtualClock())
    assert ringing is ChannelState.RINGING            # the B leg's ringing reached A
    assert a.hangup_cause is HangupCause.NO_ANSWER


def test_caller_hangup_while_ringing_cancels_the_other_leg():
    sw, clock, _ = loop_switch()
    causes = {}
    sw.events.subscribe(ev.CHANNEL_HANGUP, lambda e: causes.setdefault(e["Channel-Name"], e["Hangup-Cause"]))

    async def main():
        a = sw.new_channel(NullEndpoint("sofia/internal/1001@h"), destination_number="bloopback/2001")
        sw.start(a)
        await clock.advance(100)
        a.remote_hangup(HangupCause.ORIGINATOR_CANCEL)
        await clock.advance(100)

    run(main())
    assert causes["sofia/internal/1001@h"] == "ORIGINATOR_CANCEL"
    assert causes["loopback/2001-a"] == "ORIGINATOR_CANCEL" and len(sw) == 0


def test_a_registered_endpoint_factory_places_the_call():
    sw, clock, _ = loop_switch()
    placed = []

    async def user_factory(switch, dial, variables, a_leg):
        placed.append((dial.user, variables.get("eavesdrop_group"), variables.get("exported"), a_leg.uuid))
        b = switch.new_channel(NullEndpoint(f"sofia/internal/{dial.user}@h"), direction="outbound", **variables)
        b.mark_ringing()
        b.mark_answered()
        return b

    sw.register_endpoint("user", user_factory)

    async def main():
        a = sw.new_channel(NullEndpoint(), destination_number="buser/1002")
        sw.start(a)
        await clock.settle()
        b = a.other_leg
        b.remote_hangup(HangupCause.NORMAL_CLEARING)
        await clock.settle()
        return a, b

    a, b = run(main())
    assert placed == [("1002", "sales", "from_a", a.uuid)]
    assert b.vars["user_name"] == "1002" and a.vars["after_bridge"] == "NORMAL_CLEARING"


def test_originate_runs_an_application_on_answer():
    sw, clock, _ = loop_switch()
    seen = []

    async def spy_app(switch, ch, data):
        seen.append((ch.name, data, ch.is_answered))

    sw.register_app("eavesdrop", spy_app)

    async def main():
        leg = await sw.originate("loopback/2000", "&eavesdrop(some-uuid)")
        await clock.settle()
        inline = await sw.originate("loopback/2000", "set:x=1,eavesdrop:other-uuid", dialplan="inline")
        await clock.advance(2000)
        return leg, inline

    leg, inline = run(main())
    assert seen == [("loopback/2000-a", "some-uuid", True), ("loopback/2000-a", "other-uuid", True)]
    assert inline.vars["x"] == "1"


def test_originate_failure_raises_with_the_cause():
    sw, clock, _ = loop_switch()

    async def main():
        with pytest.raises(OriginateError) as info:
            await sw.originate("loopback/2002", "&echo")
        return info.value.cause

    assert run(main()) is HangupCause.USER_BUSY


def test_transfer_hunts_again():
    xml = """<include><context name="default">
      <extension name="t"><condition field="destination_number" expression="^1$">
        <action application="transfer" data="2 XML other"/></condition></extension>
      </context><context name="other">
      <extension name="u"><condition field="destination_number" expression="^2$">
        <action application="set" data="landed=${context}/${destination_number}"/></condition></extension>
      </context></include>"""
    sw = Switch(dialplan=Dialplan.parse(xml))
    ch = sw.new_channel(NullEndpoint(), destination_number="1")
    run(sw.execute(ch))
    assert ch.vars["landed"] == "other/2"


def test_transfer_loops_are_cut():
    xml = """<include><context name="default"><extension name="t"><condition>
        <action application="transfer" data="1"/></condition></extension></context></include>"""
    sw = Switch(dialplan=Dialplan.parse(xml))
    ch = sw.new_channel(NullEndpoint(), destination_number="1")
    run(sw.execute(ch))
    assert ch.hangup_cause is HangupCause.EXCHANGE_ROUTING_ERROR


@pytest.mark.parametrize("app,data", [("eavesdrop", "some-uuid"), ("three_way", "some-uuid")])
def test_unbuilt_slots_log_and_hang_up(app, data, caplog):
    xml = f"""<include><context name="default"><extension name="e"><condition>
        <action application="{app}" data="{data}"/></condition></extension></context></include>"""
    sw = Switch(dialplan=Dialplan.parse(xml))
    ch = sw.new_channel(NullEndpoint(), destination_number="1")
    run(sw.execute(ch))
    assert ch.hangup_cause is HangupCause.FACILITY_NOT_IMPLEMENTED
    assert any(f"the {app} application is not available" in r.getMessage() for r in caplog.records)


def test_playback_of_a_missing_file_is_logged_and_skipped(tmp_path, caplog):
    wav = tmp_path / "hello.wav"
    wav.write_bytes(b"RIFF")
    xml = f"""<include><context name="default"><extension name="e"><condition>
        <action application="playback" data="/no/such/file.wav"/>
        <action application="playback" data="hello.wav"/>
        <action application="set" data="done=yes"/></condition></extension></context></include>"""
    sw = Switch(Config(base_dir=str(tmp_path)), dialplan=Dialplan.parse(xml))
    ch = sw.new_channel(NullEndpoint(), destination_number="1")
    run(sw.execute(ch))
    assert ch.endpoint.media.played == [str(wav)] and ch.vars["done"] == "yes"
    assert ch.endpoint.calls[0] == "pre_answer"   # playback on an unanswered call is early media
    assert any("file not found" in r.getMessage() and "/no/such/file.wav" in r.getMessage()
               for r in caplog.records)


def test_sleep_and_hangup_apps_on_the_clock():
    xml = """<include><context name="default"><extension name="e"><condition>
        <action application="answer"/><action application="sleep" data="1500"/>
        <action application="hangup" data="user_busy"/></condition></extension></context></include>"""
    clock = VirtualClock()
    sw = Switch(dialplan=Dialplan.parse(xml), clock=clock)

    async def main():
        ch = sw.new_channel(NullEndpoint(), destination_number="1")
        sw.start(ch)
        await clock.advance(1499)
        up = ch.up
        await clock.advance(1)
        return up, ch.hangup_cause

    assert run(main()) == (True, HangupCause.USER_BUSY)


def test_export_sets_the_bridged_leg_too():
    sw, clock, _ = loop_switch()

    async def main():
        a = sw.new_channel(NullEndpoint(), destination_number="bloopback/2000")
        sw.start(a)
        await clock.settle()
        b = a.other_leg
        await sw.run_app(a, "export", "late=1")
        await sw.run_app(a, "export", "nolocal:only_b=2")
        got = (b.get_variable("late"), a.get_variable("late"), a.get_variable("only_b"),
               a.get_variable("export_vars"))
        await clock.advance(2000)
        return got

    assert run(main()) == ("1", "1", None, "exported,late,nolocal:only_b")


def test_the_spymap_has_each_agents_leg_whichever_way_the_call_went():
    """88<id> reads spymap/<id>: the agent leg, for the call the agent placed and for the one it
    received (before, only the placing number was recorded, by the dialplan), gone when it ends."""
    sw = Switch(CFG)
    placed = sw.new_channel(NullEndpoint(), user_name="1001", caller_id_number="1001")
    received = sw.new_channel(NullEndpoint(), user_name="1002", caller_id_number="5551234", direction="outbound")
    customer = sw.new_channel(NullEndpoint(), caller_id_number="5551234")        # no configured user
    assert (placed.get_variable("agent_id"), received.get_variable("agent_id")) == ("1001", "1002")
    assert customer.get_variable("agent_id") is None
    assert sw.db.api("select/spymap/1001") == placed.uuid and sw.db.api("select/spymap/1002") == received.uuid
    assert sw.db.api("select/spymap/5551234") == ""
    nobody = sw.new_channel(NullEndpoint(), user_name="1099")                   # not a configured user
    assert nobody.get_variable("agent_id") is None and sw.db.api("select/spymap/1099") == ""
    newer = sw.new_channel(NullEndpoint(), user_name="1002", direction="outbound")   # a second call
    received.remote_hangup()
    assert sw.db.api("select/spymap/1002") == newer.uuid      # an older leg ending leaves the newer one
    newer.remote_hangup()
    placed.remote_hangup()
    assert sw.db.api("select/spymap/1002") == sw.db.api("select/spymap/1001") == ""
