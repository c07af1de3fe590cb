"""The api commands against a real switch: FreeSWITCH's reply texts and their effects."""
from __future__ import annotations

import asyncio
import json

import pytest

from firmware.control.commands import CHANNEL_COLUMNS, Commands, split_args
from firmware.switch import HangupCause, NullEndpoint
from firmware.switch.channel import ChannelState

from . import make_switch


def run(coro_fn):
    """Run ``coro_fn(sw, cmds)`` on a fresh switch; tear everything down afterwards."""
    async def main():
        sw = make_switch()
        cmds = Commands(sw, reload=getattr(coro_fn, "reload", None))
        try:
            return await coro_fn(sw, cmds)
        finally:
            cmds.close()
            await sw.close()
    return asyncio.run(main())


async def settle():
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.mark.parametrize("text, tokens", [
    ("user/1001 &eavesdrop(c7709e9c-1517)", ["user/1001", "&eavesdrop(c7709e9c-1517)"]),
    ("user/1001 'queue_dtmf:w2@500,eavesdrop:a287' inline", ["user/1001", "queue_dtmf:w2@500,eavesdrop:a287",
                                                             "inline"]),
    ("{a=1,b='x y'}user/1 &playback(/tmp/a b.wav)  XML  default",
     ["{a=1,b='x y'}user/1", "&playback(/tmp/a b.wav)", "XML", "default"]),
    ("  ", []),
])
def test_split_args(text, tokens):
    assert split_args(text) == tokens


def test_split_args_rejects_an_unterminated_quote():
    with pytest.raises(ValueError):
        split_args("user/1 'abc")


def test_originate_user_with_an_app_and_dial_string_variables():
    seen = []

    async def spy(sw, ch, data):
        seen.append((ch.uuid, data, ch.get_variable("origination_note"), ch.get_variable("caller_id_name")))

    async def body(sw, cmds):
        sw.register_app("eavesdrop", spy)
        reply = await cmds.api("originate", "{origination_note=hi there,x=1}user/1000 &eavesdrop(c7709e9c) "
                                            "XML default Boss 7000")
        await settle()
        return reply

    reply = run(body)
    assert reply.startswith("+OK ") and reply.endswith("\n")
    uuid = reply[4:-1]
    assert seen == [(uuid, "c7709e9c", "hi there", "Boss")]


def test_originate_inline_runs_the_seeds_example_in_order():
    order = []

    async def spy(sw, ch, data):
        order.append(("eavesdrop", data, ch.dtmf_queued))

    async def body(sw, cmds):
        sw.register_app("eavesdrop", spy)
        reply = await cmds.api("originate", "user/1001 'queue_dtmf:2,eavesdrop:a28739d0' inline")
        await settle()
        return reply

    assert run(body).startswith("+OK ")
    assert order == [("eavesdrop", "a28739d0", 1)]  # the whisper digit is queued before eavesdrop starts


def test_originate_extension_through_the_dialplan():
    async def body(sw, cmds):
        reply = await cmds.api("originate", "user/1002 9196 XML default")
        await settle()
        ch = sw.get(reply.strip()[4:])
        return reply, ch.get_variable("destination_number"), ch.get_variable("context"), ch.up

    reply, dest, ctx, up = run(body)
    assert reply.startswith("+OK ") and (dest, ctx, up) == ("9196", "default", True)


@pytest.mark.parametrize("args, expected", [
    ("user/1099 &echo()", "-ERR USER_NOT_REGISTERED\n"),
    ("user/4242 &echo()", "-ERR SUBSCRIBER_ABSENT\n"),
    ("sofia/gateway/nopbx/123 &echo()", "-ERR INVALID_GATEWAY\n"),
    ("sofia/default/2001@yourvsp.com &echo()", "-ERR CHAN_NOT_IMPLEMENTED\n"),
    ("error/user_busy &echo()", "-ERR USER_BUSY\n"),
])
def test_originate_failures_give_the_cause(args, expected):
    async def body(sw, cmds):
        return await cmds.api("originate", args)
    assert run(body) == expected


@pytest.mark.parametrize("args", ["", "user/1001", "user/1001 &", "user/1001 'unterminated",
                                  "user/1001 &echo() XML default a b notanumber"])
def test_originate_usage(args):
    async def body(sw, cmds):
        return await cmds.api("originate", args)
    assert run(body).startswith("-USAGE: <call url> <exten>|&<application_name>(<app_args>)")


def test_secure_media_is_refused_clearly_until_srtp_exists():
    async def body(sw, cmds):
        before = len(sw)
        reply = await cmds.api("originate", "{sip_secure_media=true}user/1000 &eavesdrop(52d87034)")
        return reply, len(sw) - before

    reply, created = run(body)
    assert reply.startswith("-ERR ") and "sip_secure_media" in reply and "SRTP" in reply
    assert created == 0


def new_answered(sw, **variables):
    ch = sw.new_channel(NullEndpoint("sofia/internal/1001@h"), **variables)
    ch.mark_answered()
    return ch


def test_uuid_recv_dtmf_queues_digits_on_the_channel():
    async def body(sw, cmds):
        ch = new_answered(sw)
        reply = await cmds.api("uuid_recv_dtmf", f"{ch.uuid} 3")
        digit = await ch.next_dtmf(0)
        bad = await cmds.api("uuid_recv_dtmf", f"{ch.uuid} x")
        missing = await cmds.api("uuid_recv_dtmf", "no-such-uuid 3")
        usage = await cmds.api("uuid_recv_dtmf", ch.uuid)
        return ch.uuid, reply, digit, bad, missing, usage

    uuid, reply, digit, bad, missing, usage = run(body)
    assert reply == f"+OK {uuid} received DTMF 3.\n"
    assert (digit.digit, digit.source) == ("3", "app")
    assert bad.startswith("-ERR not a DTMF digit")
    assert missing == "-ERR No such channel!\n" and usage.startswith("-USAGE:")


def test_uuid_kill_getvar_setvar():
    async def body(sw, cmds):
        ch = new_answered(sw, eavesdrop_group="sales")
        out = [await cmds.api("uuid_getvar", f"{ch.uuid} eavesdrop_group"),
               await cmds.api("uuid_getvar", f"{ch.uuid} nothing_here"),
               await cmds.api("uuid_setvar", f"{ch.uuid} note two words"),
               ch.get_variable("note"),
               await cmds.api("uuid_setvar", f"{ch.uuid} note"),
               ch.get_variable("note"),
               await cmds.api("uuid_kill", f"{ch.uuid} user_busy"),
               ch.hangup_cause,
               await cmds.api("uuid_kill", ch.uuid),
               await cmds.api("uuid_getvar", f"{ch.uuid} eavesdrop_group")]
        return out

    assert run(body) == ["sales", "_undef_", "+OK\n", "two words", "+OK\n", None, "+OK\n",
                         HangupCause.USER_BUSY, "-ERR No such channel!\n", "-ERR No such channel!\n"]


def test_uuid_bridge_joins_two_legs_and_show_calls_lists_them_once():
    async def body(sw, cmds):
        a = new_answered(sw, caller_id_number="1001")
        b = sw.new_channel(NullEndpoint("sofia/internal/1002@h"), caller_id_number="1002")
        reply = await cmds.api("uuid_bridge", f"{a.uuid} {b.uuid}")
        await settle()
        calls = json.loads(await cmds.api("show", "calls as json"))
        again = await cmds.api("uuid_bridge", f"{a.uuid} {b.uuid}")
        bad = await cmds.api("uuid_bridge", f"{a.uuid} nope")
        return a, b, reply, calls, again, bad

    a, b, reply, calls, again, bad = run(body)
    assert reply == f"+OK {b.uuid}\n"
    assert a.other_leg is None or a.other_leg is b  # (torn down at close)
    assert calls["row_count"] == 1
    row = calls["rows"][0]
    assert (row["uuid"], row["b_uuid"], row["cid_num"], row["b_cid_num"]) == (a.uuid, b.uuid, "1001", "1002")
    assert again == "-ERR channel already bridged\n" and bad == "-ERR Invalid uuid nope\n"


def test_show_channels_plain_and_json():
    async def body(sw, cmds):
        empty_plain = await cmds.api("show", "channels")
        empty_json = await cmds.api("show", "channels as json")
        a = new_answered(sw, caller_id_name="Agent, One", caller_id_number="1001", destination_number="9196")
        await sw.run_app(a, "set", "x=1")
        plain = await cmds.api("show", "channels")
        js = json.loads(await cmds.api("show", "channels as json"))
        count = await cmds.api("show", "channels count")
        usage = await cmds.api("show", "everything")
        return a, empty_plain, empty_json, plain, js, count, usage

    a, empty_plain, empty_json, plain, js, count, usage = run(body)
    assert empty_plain == "\n0 total.\n" and empty_json == '{"row_count":0}\n'
    lines = plain.split("\n")
    assert lines[0] == ",".join(CHANNEL_COLUMNS) and lines[1].startswith(a.uuid + ",inbound,")
    assert plain.endswith("\n\n1 total.\n")
    assert js["row_count"] == 1 and list(js["rows"][0]) == list(CHANNEL_COLUMNS)
    row = js["rows"][0]
    assert (row["uuid"], row["cid_name"], row["dest"], row["callstate"], row["state"]) == \
        (a.uuid, "Agent, One", "9196", "ACTIVE", "CS_EXECUTE")
    assert (row["application"], row["application_data"]) == ("set", "x=1")
    assert count == "\n1 total.\n" and usage.startswith("-USAGE:")


def test_show_eavesdrops_reads_the_eavesdrop_registry():
    class Session:
        def __init__(self, spy, target):
            self.spy, self.target, self.mode, self.listen, self.started_ms = spy, target, 2, "both", 0

    class Engine:
        sessions: dict = {}

    async def body(sw, cmds):
        none = await cmds.api("show", "eavesdrops as json")
        spy = new_answered(sw, user_name="1000")
        target = new_answered(sw)
        sw.eavesdrop = Engine()
        sw.eavesdrop.sessions = {spy.uuid: Session(spy, target)}
        return spy, target, none, json.loads(await cmds.api("show", "eavesdrops as json"))

    spy, target, none, js = run(body)
    assert none == '{"row_count":0}\n'
    row = js["rows"][0]
    assert (row["spy_uuid"], row["target_uuid"], row["mode"], row["mode_name"], row["spy_user"]) == \
        (spy.uuid, target.uuid, "2", "whisper-target", "1000")


def test_status_db_and_unknown_commands():
    async def body(sw, cmds):
        return [await cmds.api("status"), await cmds.api("db", "insert/spymap/1001/abc"),
                await cmds.api("db", "select/spymap/1001"), await cmds.api("db", "bogus"),
                await cmds.api("frobnicate", "now"), await cmds.api("user_exists", "id 1001")]

    status, ins, sel, bad, unknown, exists = run(body)
    assert status.startswith("UP 0 years, 0 days, ") and "is ready\n" in status
    assert (ins, sel, bad, exists) == ("+OK", "abc", "!err!", "true")
    assert unknown == "-ERR frobnicate Command not found!\n"


@pytest.mark.parametrize("reload, expected", [
    (None, "-ERR reloadxml is not available\n"),
    (lambda: None, "+OK [Success]\n"),
    (lambda: "-ERR dialplan.xml:3: mismatched tag", "-ERR dialplan.xml:3: mismatched tag\n"),
])
def test_reloadxml_uses_the_apps_callback(reload, expected):
    async def body(sw, cmds):
        return await cmds.api("reloadxml")
    body.reload = reload
    assert run(body) == expected


def test_reloadxml_awaits_an_async_callback_and_reports_its_error():
    calls = []

    async def reload():
        calls.append(1)
        raise ValueError("bad file")

    async def body(sw, cmds):
        return await cmds.api("reloadxml")
    body.reload = reload
    assert run(body) == "-ERR bad file\n" and calls == [1]


def test_hupall_hangs_up_everything():
    async def body(sw, cmds):
        chans = [new_answered(sw), new_answered(sw)]
        reply = await cmds.api("hupall", "normal_clearing")
        return reply, [c.state for c in chans], [c.hangup_cause for c in chans]

    reply, states, causes = run(body)
    assert reply == "+OK\n" and states == [ChannelState.HANGUP] * 2
    assert causes == [HangupCause.NORMAL_CLEARING] * 2
