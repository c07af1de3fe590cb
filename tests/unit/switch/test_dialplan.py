"""The XML dialplan: the seed's examples verbatim, FreeSWITCH's condition semantics, validation."""
import logging
import textwrap

import pytest

from firmware import aio
from firmware.config import Config, User
from firmware.switch import (ChannelState, Dialplan, DialplanError, DialplanHolder, HangupCause, NullEndpoint,
                             Switch, VirtualClock)
from firmware.switch import events as ev

# --- the seed page's dialplan snippets, copied verbatim (seed/000_8c1b3d57a925391c.txt) -------------

SEED_SPEAK_TO_CALLEE = """\
<extension name="eavesdrop_speak_to_callee" continue="true">
<condition field="destination_number" expression="^88(.*)$|^\\*0(.*)$">
<action application="answer"/>
<action application="set" data="eavesdrop_enable_dtmf=true"/>
<action application="queue_dtmf" data="w1@500"/>
<action application="eavesdrop" data="${db(select/spymap/$1$2)}"/>
</condition>
</extension>"""

SEED_SPEAK_TO_CALLER = """\
<extension name="eavesdrop_speak_to_caller" continue="true">
<condition field="destination_number" expression="^88(.*)$|^\\*0(.*)$">
<action application="answer"/>
<action application="set" data="eavesdrop_enable_dtmf=true"/>
<action application="queue_dtmf" data="w2@500"/>
<action application="eavesdrop" data="${db(select/spymap/$1$2)}"/>
</condition>
</extension>"""

SEED_GLOBAL = """\
<extension name="global" continue="true">
<condition>
<action application="info"/>
<action application="db" data="insert/spymap/${caller_id_number}/${uuid}"/>
<action application="db" data="insert/last_dial/${caller_id_number}/${destination_number}"/>
<action application="db" data="insert/last_dial/global/${uuid}"/>
</condition>
</extension>"""

SEED_EAVESDROP = """\
<extension name="eavesdrop">
<condition field="destination_number" expression="^88(.*)$|^\\*0(.*)$">
<action application="answer"/>
<action application="eavesdrop" data="${db(select/spymap/$1$2)}"/>
</condition>
</extension>"""

SEED_SET_GROUP = """<action application="set" data="eavesdrop_group=sales_call_eavesdrop"/>"""

SEED_GROUP = """\
<extension name="eavesdrop">
<condition field="destination_number" expression="^779$">
<action application="answer"/>
<action application="set" data="eavesdrop_require_group=sales_call_eavesdrop"/>
<action application="eavesdrop" data="all"/>
</condition>
</extension>"""


def doc(*contexts: tuple[str, str]) -> str:
    body = "".join(f'<context name="{name}">\n{exts}\n</context>\n' for name, exts in contexts)
    return f"<include>\n{body}</include>\n"


def agent_calls(extensions: str) -> str:
    """The seed's group example: the agent's incoming calls get eavesdrop_group (SEED_SET_GROUP)."""
    return doc(("default", SEED_GLOBAL + f"""
<extension name="agent_call">
<condition field="destination_number" expression="^5\\d+$">
{SEED_SET_GROUP}
<action application="answer"/>
<action application="park_here"/>
</condition>
</extension>
""" + extensions))


class Harness:
    """A switch on a virtual clock with a recording ``eavesdrop`` and ``park_here`` app."""

    def __init__(self, dialplan_text: str, config: Config | None = None) -> None:
        self.clock = VirtualClock()
        self.sw = Switch(config, dialplan=Dialplan.parse(dialplan_text), clock=self.clock)
        self.eavesdrops: list[dict] = []
        self.executed: list[tuple[str, str, str]] = []
        self.sw.events.subscribe(ev.CHANNEL_EXECUTE, lambda e: self.executed.append(
            (e["Unique-ID"], e["Application"], e["Application-Data"])))
        self.sw.register_app("eavesdrop", self._eavesdrop)
        self.sw.register_app("park_here", self._park)

    async def _eavesdrop(self, sw, ch, data):
        # a stand-in for the real app: records its target and the first command digit it gets
        digit = await ch.next_digit(2000)
        self.eavesdrops.append({"uuid": ch.uuid, "data": data, "digit": digit, "at_ms": self.clock.now_ms(),
                                "vars": dict(ch.vars)})

    async def _park(self, sw, ch, data):
        await ch.guard(ch.hungup.wait())

    def call(self, caller: str, dest: str, **variables):
        ch = self.sw.new_channel(NullEndpoint(f"sofia/internal/{caller}@earshot.local"),
                                 caller_id_number=caller, caller_id_name=f"Ext {caller}",
                                 destination_number=dest, **variables)
        task = self.sw.start(ch)
        return ch, task

    def apps_of(self, ch):
        return [(app, data) for uuid, app, data in self.executed if uuid == ch.uuid]


def run(coro):
    return aio.run(coro)


# --- the seed's examples, executed --------------------------------------------------------------------

def test_seed_global_fills_the_spymap_and_eavesdrop_finds_the_call():
    h = Harness(agent_calls(SEED_EAVESDROP))

    async def main():
        agent, _ = h.call("1001", "5000")
        await h.clock.settle()
        assert agent.state is ChannelState.ANSWERED
        row = h.sw.db.api("select/spymap/1001")
        expanded = h.sw.expand(None, "${db(select/spymap/1001)}")
        spy, task = h.call("1000", "881001")
        await h.clock.advance(2000)
        await task
        spy2, task2 = h.call("1000", "*01001")
        await h.clock.advance(2000)
        await task2
        return agent, row, expanded, spy, spy2

    agent, row, expanded, spy, spy2 = run(main())
    assert row == agent.uuid and expanded == agent.uuid
    assert h.sw.db.api("select/last_dial/1001") == "5000"
    assert h.sw.db.api("select/last_dial/global") == spy2.uuid       # the last call's uuid
    assert [e["data"] for e in h.eavesdrops] == [agent.uuid, agent.uuid]
    assert h.apps_of(spy) == [
        ("info", ""), ("db", f"insert/spymap/1000/{spy.uuid}"), ("db", "insert/last_dial/1000/881001"),
        ("db", f"insert/last_dial/global/{spy.uuid}"), ("answer", ""), ("eavesdrop", agent.uuid)]
    assert h.apps_of(agent)[-1] == ("park_here", "")
    assert h.eavesdrops[0]["vars"].get("eavesdrop_require_group") is None
    assert spy.hangup_cause is HangupCause.NORMAL_CLEARING  # no more actions: the call ends


@pytest.mark.parametrize("snippet,digit", [(SEED_SPEAK_TO_CALLEE, "1"), (SEED_SPEAK_TO_CALLER, "2")])
def test_seed_speak_examples_queue_their_digit_after_500_ms(snippet, digit):
    h = Harness(agent_calls(snippet))

    async def main():
        agent, _ = h.call("1001", "5000")
        await h.clock.settle()
        spy, task = h.call("1000", "881001")
        await h.clock.advance(499)
        before = list(h.eavesdrops)
        await h.clock.advance(1)
        after = list(h.eavesdrops)
        await h.clock.advance(5000)
        return agent, spy, before, after

    agent, spy, before, after = run(main())
    assert before == []
    assert len(after) == 1
    got = after[0]
    assert got["data"] == agent.uuid and got["digit"] == digit and got["at_ms"] == 500
    assert got["vars"]["eavesdrop_enable_dtmf"] == "true"
    assert ("queue_dtmf", f"w{digit}@500") in h.apps_of(spy)


def test_seed_group_example_sets_both_sides_of_the_group():
    h = Harness(agent_calls(SEED_GROUP))

    async def main():
        agent, _ = h.call("1001", "5000")
        spy, task = h.call("1000", "779")
        await h.clock.advance(2000)
        return agent, spy

    agent, spy = run(main())
    assert agent.vars["eavesdrop_group"] == "sales_call_eavesdrop"
    assert h.eavesdrops[0]["data"] == "all"
    assert h.eavesdrops[0]["vars"]["eavesdrop_require_group"] == "sales_call_eavesdrop"


def test_the_speak_examples_continue_into_the_plain_one():
    """All three 88 extensions in one context, as the seed page lists them: continue="true" runs them all."""
    h = Harness(agent_calls(SEED_SPEAK_TO_CALLEE + SEED_SPEAK_TO_CALLER + SEED_EAVESDROP))

    async def main():
        agent, _ = h.call("1001", "5000")
        spy, task = h.call("1000", "881001")
        await h.clock.advance(10_000)
        return agent, spy

    agent, spy = run(main())
    apps = [a for a, _ in h.apps_of(spy)]
    assert apps == ["info", "db", "db", "db", "answer", "set", "queue_dtmf", "eavesdrop", "answer", "set",
                    "queue_dtmf", "eavesdrop", "answer", "eavesdrop"]
    assert [e["digit"] for e in h.eavesdrops] == ["1", "2", None]


# --- condition semantics, table-driven ---------------------------------------------------------------

def ext(name, conditions, cont=False):
    c = ' continue="true"' if cont else ""
    return f'<extension name="{name}"{c}>{conditions}</extension>'


def cond(field=None, expr=None, brk=None, actions=(), anti=(), inner="", **attrs):
    a = ""
    if field is not None:
        a += f' field="{field}" expression="{expr}"'
    if brk:
        a += f' break="{brk}"'
    for k, v in attrs.items():
        a += f' {k.replace("_", "-")}="{v}"'
    body = "".join(f'<action application="log" data="{x}"/>' for x in actions)
    body += "".join(f'<anti-action application="log" data="{x}"/>' for x in anti)
    return f"<condition{a}>{body}{inner}</condition>"


T, F = ("destination_number", "^1234$"), ("destination_number", "^9999$")

CASES = [
    # (name, extensions, expected logged data in order)
    ("absolute condition", [ext("e", cond(actions=["a"]))], ["a"]),
    ("true then stop", [ext("e", cond(*T, actions=["a"])), ext("f", cond(actions=["b"]))], ["a"]),
    ("false goes to next extension", [ext("e", cond(*F, actions=["a"])), ext("f", cond(actions=["b"]))], ["b"]),
    ("and of conditions", [ext("e", cond(*T, actions=["a"]) + cond(*T, actions=["b"]))], ["a", "b"]),
    ("on-false stops the extension", [ext("e", cond(*F, actions=["a"]) + cond(*T, actions=["b"])),
                                      ext("f", cond(actions=["c"]))], ["c"]),
    ("never goes on after false", [ext("e", cond(*F, brk="never", actions=["a"]) + cond(*T, actions=["b"]))],
     ["b"]),
    ("on-true stops after true", [ext("e", cond(*T, brk="on-true", actions=["a"]) + cond(*T, actions=["b"]))],
     ["a"]),
    ("on-true goes on after false", [ext("e", cond(*F, brk="on-true", actions=["a"]) + cond(*T, actions=["b"]))],
     ["b"]),
    ("always stops after true", [ext("e", cond(*T, brk="always", actions=["a"]) + cond(*T, actions=["b"]))],
     ["a"]),
    ("always stops after false", [ext("e", cond(*F, brk="always", actions=["a"]) + cond(*T, actions=["b"])),
                                  ext("f", cond(actions=["c"]))], ["c"]),
    ("anti-actions on false", [ext("e", cond(*F, actions=["a"], anti=["x"])), ext("f", cond(actions=["c"]))],
     ["x"]),  # anti-actions make the extension count as matched, as in mod_dialplan_xml
    ("no anti-actions on true", [ext("e", cond(*T, actions=["a"], anti=["x"]))], ["a"]),
    ("continue runs the next one", [ext("e", cond(*T, actions=["a"]), cont=True),
                                    ext("f", cond(*T, actions=["b"]))], ["a", "b"]),
    ("continue past a failed one", [ext("e", cond(*F, actions=["a"]), cont=True),
                                    ext("f", cond(*T, actions=["b"]))], ["b"]),
    ("last condition decides the match", [ext("e", cond(*T, actions=["a"]) + cond(*F, brk="never")),
                                          ext("f", cond(actions=["b"]))], ["a", "b"]),
    ("nested conditions", [ext("e", cond(*T, actions=["a"], inner=cond(*T, actions=["b"])))], ["a", "b"]),
    ("failed nested condition fails the extension",
     [ext("e", cond(*T, actions=["a"], inner=cond(*F, actions=["b"]))), ext("f", cond(actions=["c"]))],
     ["a", "c"]),
    ("require-nested false", [ext("e", cond(*T, actions=["a"], inner=cond(*F, actions=["b"]), require_nested="false")
                                  ), ext("f", cond(actions=["c"]))], ["a"]),  # the nested failure is forgiven
    ("variable field", [ext("e", cond("${who}", "^agent$", actions=["a"]))], ["a"]),
    ("variable in expression", [ext("e", cond("destination_number", "^${prefix}34$", actions=["a"]))], ["a"]),
    ("captures", [ext("e", cond("destination_number", "^(\\d\\d)(\\d\\d)$", actions=["$2-$1-$0-$3"]))],
     ["34-12-1234-"]),
    ("captures of the own condition only",
     [ext("e", cond("destination_number", "^(12)", actions=["$1"]) + cond(actions=["[$1]"]))], ["12", "[$1]"]),
    ("anti-actions keep $1", [ext("e", cond(*F, anti=["$1"]))], ["$1"]),
    ("caller id field", [ext("e", cond("caller_id_number", "^1001$", actions=["a"]))], ["a"]),
    ("chan_name field", [ext("e", cond("chan_name", "^sofia/internal/", actions=["a"]))], ["a"]),
    ("missing variable is empty", [ext("e", cond("${nope}", "^$", actions=["a"]))], ["a"]),
]


@pytest.mark.parametrize("name,extensions,want", CASES, ids=[c[0] for c in CASES])
def test_condition_semantics(name, extensions, want):
    dp = Dialplan.parse(doc(("default", "".join(extensions))))
    sw = Switch(dialplan=dp)
    ch = sw.new_channel(NullEndpoint("sofia/internal/1001@h"), caller_id_number="1001", destination_number="1234",
                        who="agent", prefix="12")
    plan = run(dp.hunt(ch, sw))
    assert [p.data for p in plan] == want
    assert all(p.application == "log" for p in plan)


def test_loop_repeats_an_action():
    dp = Dialplan.parse(doc(("default", '<extension name="e"><condition>'
                                        '<action application="log" data="x" loop="3"/></condition></extension>')))
    sw = Switch(dialplan=dp)
    ch = sw.new_channel(NullEndpoint(), destination_number="1")
    assert [p.data for p in run(dp.hunt(ch, sw))] == ["x", "x", "x"]


def test_inline_actions_run_while_hunting_and_others_after():
    xml = doc(("default", """
      <extension name="first" continue="true"><condition>
        <action application="set" data="tier=gold" inline="true"/>
        <action application="set" data="late=yes"/>
      </condition></extension>
      <extension name="second"><condition field="${tier}" expression="^gold$">
        <action application="log" data="saw ${tier} ${late}"/>
      </condition></extension>"""))
    dp = Dialplan.parse(xml)
    sw = Switch(dialplan=dp)
    ch = sw.new_channel(NullEndpoint(), destination_number="1")
    plan = run(dp.hunt(ch, sw))
    assert ch.vars["tier"] == "gold" and "late" not in ch.vars      # only the inline one ran
    assert [(p.application, p.data) for p in plan] == [("set", "late=yes"), ("log", "saw ${tier} ${late}")]


def test_expansion_happens_at_execution_time():
    xml = doc(("default", """<extension name="e"><condition>
        <action application="set" data="a=1"/>
        <action application="set" data="b=${a}2"/>
      </condition></extension>"""))
    sw = Switch(dialplan=Dialplan.parse(xml))
    ch = sw.new_channel(NullEndpoint(), destination_number="1")
    run(sw.execute(ch))
    assert ch.vars["b"] == "12"


def test_context_selection_and_global_fallback():
    xml = doc(("default", ext("d", cond(actions=["default"]))),
              ("global", ext("g", cond(actions=["global"]))),
              ("public", ext("p", cond(actions=["public"]))))
    dp = Dialplan.parse(xml)
    sw = Switch(dialplan=dp)
    got = {}
    for ctx in ("default", "public", "nosuch"):
        ch = sw.new_channel(NullEndpoint(), destination_number="1", context=ctx)
        got[ctx] = [p.data for p in run(dp.hunt(ch, sw))]
    assert got == {"default": ["default"], "public": ["public"], "nosuch": ["global"]}


def test_no_route_hangs_up_with_no_route_destination():
    sw = Switch(dialplan=Dialplan.parse(doc(("default", ext("e", cond(*F, actions=["a"]))))))
    ch = sw.new_channel(NullEndpoint(), destination_number="1234")
    run(sw.execute(ch))
    assert ch.hangup_cause is HangupCause.NO_ROUTE_DESTINATION


def test_unknown_application_is_logged_with_the_extension_and_skipped(caplog):
    xml = doc(("default", """<extension name="my_ext"><condition>
        <action application="no_such_app" data="x"/>
        <action application="sleep" data="soon"/>
        <action application="set" data="reached=yes"/>
      </condition></extension>"""))
    sw = Switch(dialplan=Dialplan.parse(xml))
    ch = sw.new_channel(NullEndpoint(), destination_number="1")
    with caplog.at_level(logging.ERROR):
        run(sw.execute(ch))
    assert ch.vars["reached"] == "yes"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("[my_ext]" in m and "no_such_app" in m for m in errors)
    assert any("[my_ext]" in m and "sleep" in m and "soon" in m for m in errors)


def test_inline_of_an_app_that_cannot_run_inline_is_refused(caplog):
    xml = doc(("default", '<extension name="e"><condition><action application="answer" inline="true"/>'
                          '<action application="set" data="x=1"/></condition></extension>'))
    sw = Switch(dialplan=Dialplan.parse(xml))
    ch = sw.new_channel(NullEndpoint(), destination_number="1")
    with caplog.at_level(logging.ERROR):
        run(sw.execute(ch))
    assert ch.endpoint.calls == ["hangup:NORMAL_CLEARING"]     # never answered
    assert any("cannot be executed inline" in r.getMessage() for r in caplog.records)


# --- validation ----------------------------------------------------------------------------------------

BAD = [
    ("<include><context name='d'><extension name='e'><condition>\n</extension></context></include>", 2,
     "not well-formed"),
    ("<include>\n<context name='d'>\n<extensoin name='e'/></context></include>", 3, "unknown element <extensoin>"),
    ("<include>\n<context name='d'><extension name='e'>\n<condition>\n<action data='x'/></condition>"
     "</extension></context></include>", 4, "needs an application"),
    ("<include><context name='d'>\n<extension name='e'><condition field='destination_number'/>"
     "</extension></context></include>", 2, "needs an expression"),
    ("<include><context name='d'><extension name='e'>\n\n<condition field='destination_number' "
     "expression='^(88$'/></extension></context></include>", 3, "bad regular expression"),
    ("<include><context name='d'><extension name='e'>\n<condition break='sometimes'/>"
     "</extension></context></include>", 2, "break must be one of"),
    ("<include><context name='d'><extension name='e' contnue='true'>\n</extension></context></include>", 1,
     "unknown attribute 'contnue'"),
    ("<include><context name='d'><extension name='e'>\n<condition field='destination_numbr' expression='x'/>"
     "</extension></context></include>", 2, "unknown field"),
    ("<include>\n<context>\n</context></include>", 2, "needs a name"),
    ("<include><context name='d'><extension name='e'>\n<condition wday='1-5'/></extension></context></include>",
     2, "time-of-day"),
    ("<include><context name='d'><extension name='e'>\n<condition expression='^1$'/></extension></context>"
     "</include>", 2, "expression without a field"),
    ("<include><context name='d'><extension>\n</extension></context></include>", 1, "needs a name"),
    ("<include><context name='d'><extension name='e'><condition>\n<action application='set' loop='0'/>"
     "</condition></extension></context></include>", 2, "loop must be"),
    ("<include><context name='d'>\n<action application='set'/></context></include>", 2, "not allowed inside"),
    ("<include/>", 1, "no <context>"),
]


@pytest.mark.parametrize("text,line,reason", BAD, ids=[b[2] for b in BAD])
def test_invalid_dialplans_are_rejected_with_line_and_reason(text, line, reason):
    with pytest.raises(DialplanError) as info:
        Dialplan.parse(text, "test.xml")
    assert info.value.line == line and reason in info.value.reason
    assert str(info.value).startswith(f"test.xml:{line}: ")


def test_expression_element_and_cdata_are_accepted():
    dp = Dialplan.parse("""<document type="freeswitch/xml"><section name="dialplan"><context name="default">
      <extension name="e"><condition field="destination_number">
        <expression><![CDATA[^(1\\d{3})$]]></expression>
        <action application="log">data as text $1</action>
      </condition></extension></context></section></document>""")
    sw = Switch(dialplan=dp)
    ch = sw.new_channel(NullEndpoint(), destination_number="1234")
    assert [p.data for p in run(dp.hunt(ch, sw))] == ["data as text 1234"]


def test_holder_keeps_the_old_dialplan_on_a_bad_reload(tmp_path):
    good = tmp_path / "good.xml"
    good.write_text(doc(("default", ext("e", cond(actions=["v1"])))))
    bad = tmp_path / "bad.xml"
    bad.write_text(doc(("default", ext("e", cond(actions=["v2"])))).replace("</include>", ""))
    holder = DialplanHolder()
    assert holder.current.source == "<built-in dialplan>"
    assert holder.reload(good) is True
    first = holder.current
    assert holder.reload(bad) is False
    assert holder.current is first and holder.last_error is not None and holder.last_error.line is not None
    assert holder.reload(tmp_path / "missing.xml") is False and holder.current is first
    assert holder.reload(None) is True and holder.current.source == "<built-in dialplan>"


# --- the built-in dialplan ----------------------------------------------------------------------------

def builtin_harness():
    cfg = Config(users=(User("1001", "p", "Agent 1001", "sales"), User("1002", "p", "Agent 1002", "sales"),
                        User("1000", "p", "Supervisor", "", True)))
    h = Harness("<include><context name='x'/></include>", cfg)
    h.sw.dialplan = DialplanHolder()          # the built-in one
    return h


def test_builtin_dialplan_uses_only_known_applications():
    dp = Dialplan.builtin()
    assert dp.applications() <= set(Switch().apps)


def test_builtin_spymap_eavesdrop_and_group():
    h = builtin_harness()
    h.sw.register_app("bridge", h._park)      # stands in for the SIP leg: the agent's call stays up

    async def main():
        agent, _ = h.call("1001", "1002", user_name="1001")
        await h.clock.settle()
        spy, _ = h.call("1000", "881001", user_name="1000")
        await h.clock.advance(2000)
        group, _ = h.call("1000", "779", user_name="1000")
        await h.clock.advance(2000)
        return agent, spy

    agent, spy = run(main())
    assert h.sw.db.api("select/spymap/1001") == agent.uuid
    assert ("bridge", "user/1002") in h.apps_of(agent)
    assert agent.vars["eavesdrop_group"] == "sales" and agent.vars["hangup_after_bridge"] == "true"
    assert [e["data"] for e in h.eavesdrops] == [agent.uuid, "all"]
    assert h.eavesdrops[0]["vars"]["may_eavesdrop"] == "true"
    # the config's default group is "": "set x=" unsets, and the app falls back to the (empty) global
    assert "eavesdrop_require_group" not in h.eavesdrops[1]["vars"]
    assert h.sw.variable(None, "eavesdrop_require_group") == ""


@pytest.mark.parametrize("dest,check", [
    ("9196", lambda ch: ch.endpoint.media.echoing),
    ("9197", lambda ch: ch.endpoint.media.played == ["tone_stream://%(1000,0,1000);loops=-1"]),
    ("4321", lambda ch: ch.hangup_cause is HangupCause.UNALLOCATED_NUMBER),
    ("1099", lambda ch: ch.hangup_cause is HangupCause.UNALLOCATED_NUMBER),   # not a configured user
])
def test_builtin_test_extensions(dest, check):
    h = builtin_harness()

    async def main():
        ch, _ = h.call("1001", dest)
        await h.clock.advance(100)
        return check(ch)      # checked while the call is still up (echo runs until hangup)

    assert run(main())


def test_builtin_routes_to_a_configured_user_and_fails_cleanly_without_sip():
    h = builtin_harness()

    async def main():
        ch, task = h.call("1001", "1002")
        await h.clock.advance(100)
        await task
        return ch

    ch = run(main())
    # no SIP endpoint factory is registered in this unit test: the bridge fails with a clear cause
    assert ch.hangup_cause is HangupCause.CHAN_NOT_IMPLEMENTED
    assert ch.vars["originate_disposition"] == "CHAN_NOT_IMPLEMENTED"


def test_dialplan_text_is_dedented_fixture_sanity():
    # the verbatim snippets must parse on their own inside a context
    for snippet in (SEED_SPEAK_TO_CALLEE, SEED_SPEAK_TO_CALLER, SEED_GLOBAL, SEED_EAVESDROP, SEED_GROUP):
        Dialplan.parse(doc(("default", textwrap.dedent(snippet))))


def test_info_without_a_level_is_one_line_at_info_and_the_dump_at_debug(caplog):
    import asyncio
    import logging

    from firmware.switch.apps import app_info
    sw = Switch()
    ch = sw.new_channel(NullEndpoint("sofia/internal/1001"), name="sofia/internal/1001", caller_id_number="1001",
                        destination_number="881002")
    caplog.set_level(logging.DEBUG, logger="firmware.switch.apps")
    asyncio.run(app_info(sw, ch, ""))
    info = [r for r in caplog.records if r.levelno == logging.INFO]
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(info) == 1 and "\n" not in info[0].getMessage() and "1001 -> 881002" in info[0].getMessage()
    assert len(debug) == 1 and "variable_destination_number: 881002" in debug[0].getMessage()
    caplog.clear()
    asyncio.run(app_info(sw, ch, "WARNING"))        # an explicit level: the dump at that level
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
