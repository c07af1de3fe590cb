"""The server over real sockets, read byte for byte: auth, ACL, back-off, framing, slow clients."""
from __future__ import annotations

import asyncio
import json
import logging

from firmware.control.server import filters_pass
from firmware.switch.events import Event

from . import PASSWORD, RawClient, make_config, start_server, stop_server


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_greeting_login_and_exit_are_framed_as_freeswitch():
    async def main():
        sw, srv = await start_server()
        c = await RawClient.connect(srv.port)
        greeting = await c.reader.readexactly(len(b"Content-Type: auth/request\n\n"))
        await c.send("api status\n\n")  # before auth: refused, the connection stays
        before = await c.frame()
        await c.send(f"auth {PASSWORD}\n\n")
        ok = await c.frame()
        await c.send("exit\n\n")
        bye = await c.frame()
        notice = await c.frame()
        closed = await c.closed()
        await stop_server(sw, srv)
        return greeting, before, ok, bye, notice, closed

    greeting, before, ok, bye, notice, closed = run(main())
    assert greeting == b"Content-Type: auth/request\n\n"
    assert before == ({"Content-Type": "command/reply", "Reply-Text": "-ERR command not found"}, b"")
    assert ok == ({"Content-Type": "command/reply", "Reply-Text": "+OK accepted"}, b"")
    assert bye == ({"Content-Type": "command/reply", "Reply-Text": "+OK bye"}, b"")
    assert notice[0]["Content-Type"] == "text/disconnect-notice" and notice[1] == b"Disconnected, goodbye.\n"
    assert closed


def test_api_response_length_counts_utf8_bytes():
    async def main():
        sw, srv = await start_server()
        c = await RawClient.connect(srv.port)
        await c.login()
        await c.command("api db insert/spymap/1001/café☕")
        headers, body = await c.command("api db select/spymap/1001")
        empty = await c.command("api db select/spymap/nobody")
        await stop_server(sw, srv)
        return headers, body, empty

    headers, body, empty = run(main())
    assert headers == {"Content-Type": "api/response", "Content-Length": str(len("café☕".encode()))}
    assert body.decode() == "café☕" and len(body) == 8
    assert empty[1] == b"-ERR no reply\n"  # FreeSWITCH's text for an empty result


def test_wrong_password_closes_and_backs_off_per_source(caplog):
    now = [0]

    async def main():
        sw, srv = await start_server(now_ms=lambda: now[0], backoff_base_ms=1000)
        c = await RawClient.connect(srv.port)
        bad = await c.login("guess")
        notice = await c.frame()
        closed = await c.closed()
        # within the back-off even the right password is refused
        c2 = await RawClient.connect(srv.port)
        blocked = await c2.login()
        await c2.closed()
        now[0] += 1000
        c3 = await RawClient.connect(srv.port)
        third = await c3.login("guess again")   # second failure: the back-off doubles
        await c3.closed()
        now[0] += 1999
        c4 = await RawClient.connect(srv.port)
        still = await c4.login()
        await c4.closed()
        now[0] += 1
        c5 = await RawClient.connect(srv.port)
        finally_ok = await c5.login()
        await stop_server(sw, srv)
        return bad, notice, closed, blocked, third, still, finally_ok

    with caplog.at_level(logging.DEBUG):
        bad, notice, closed, blocked, third, still, finally_ok = run(main())
    assert bad["Reply-Text"] == "-ERR invalid" and notice[0]["Content-Type"] == "text/disconnect-notice"
    assert closed
    assert blocked["Reply-Text"] == "-ERR invalid"
    assert third["Reply-Text"] == "-ERR invalid" and still["Reply-Text"] == "-ERR invalid"
    assert finally_ok["Reply-Text"] == "+OK accepted"
    assert "back-off" in caplog.text
    assert PASSWORD not in caplog.text and "guess" not in caplog.text  # never a password in the log


def test_acl_rejects_before_the_greeting():
    async def main():
        sw, srv = await start_server(make_config(allow=("10.0.0.0/8",)))
        c = await RawClient.connect(srv.port)
        data = await c.reader.read(4096)
        while not data.endswith(b"goodbye.\n"):
            more = await c.reader.read(4096)
            if not more:
                break
            data += more
        closed = await c.closed()
        await stop_server(sw, srv)
        return data, closed

    data, closed = run(main())
    assert data == (b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n"
                    b"Content-Type: text/disconnect-notice\nContent-Length: 23\n\nDisconnected, goodbye.\n")
    assert closed


def test_idle_client_before_auth_is_closed():
    async def main():
        sw, srv = await start_server(auth_timeout_ms=100)
        c = await RawClient.connect(srv.port)
        greeting = await c.frame()
        notice = await c.frame()
        closed = await c.closed()
        await stop_server(sw, srv)
        return greeting, notice, closed

    greeting, notice, closed = run(main())
    assert greeting[0] == {"Content-Type": "auth/request"}
    assert notice[0]["Content-Type"] == "text/disconnect-notice" and b"timeout" in notice[1]
    assert closed


def test_garbage_and_bad_content_length_get_an_error_and_others_carry_on():
    async def main():
        sw, srv = await start_server()
        good = await RawClient.connect(srv.port)
        await good.login()
        c = await RawClient.connect(srv.port)
        await c.login()
        garbage = await c.command("\x01\x02 hello")
        await c.send("sendevent CUSTOM\nContent-Length: -5\n\n")
        err = await c.frame()
        closed = await c.closed()
        half = await RawClient.connect(srv.port)
        await half.login()
        await half.send("sendevent CUSTOM\nContent-Length: 100\n\nabc")
        half.close()  # gone mid-command
        huge = await RawClient.connect(srv.port)
        await huge.login()
        await huge.send("sendevent CUSTOM\nContent-Length: 99999999999\n\n")
        huge_err = await huge.frame()
        status = await good.command("api status")
        await stop_server(sw, srv)
        return garbage, err, closed, huge_err, status

    garbage, err, closed, huge_err, status = run(main())
    assert garbage[0]["Reply-Text"] == "-ERR command not found"
    assert err[0]["Reply-Text"].startswith("-ERR Content-Length must be a non-negative integer")
    assert closed
    assert huge_err[0]["Reply-Text"].startswith("-ERR Content-Length 99999999999 exceeds")
    assert status[0]["Content-Type"] == "api/response" and b"is ready" in status[1]


def test_a_silent_client_cannot_block_another_and_its_events_are_dropped(caplog):
    async def main():
        sw, srv = await start_server(outbox_len=8, write_timeout_ms=300)
        silent = await RawClient.connect(srv.port)
        await silent.login()
        await silent.command("event plain all")
        silent.writer.transport.pause_reading()  # never reads again: its socket buffers fill
        active = await RawClient.connect(srv.port)
        await active.login()
        big = "x" * 200_000
        for i in range(20):
            sw.events.fire("CUSTOM", {"N": str(i)}, subclass="test::flood", body=big)
        headers, body = await active.command("api status")  # answered while the silent one stalls
        silent_conn = next(c for c in srv.connections if c.all_events)
        for i in range(400):  # keep flooding until the write timeout disconnects it (socket buffers fill)
            if silent_conn not in srv.connections:
                break
            sw.events.fire("CUSTOM", {"N": str(i)}, subclass="test::flood", body=big)
            await asyncio.sleep(0.01)
        dropped = silent_conn.outbox.dropped
        gone = silent_conn not in srv.connections
        await stop_server(sw, srv)
        return headers, body, dropped, gone

    with caplog.at_level(logging.INFO):
        headers, body, dropped, gone = run(main())
    assert headers["Content-Type"] == "api/response" and b"is ready" in body
    assert dropped > 0 and gone
    assert "not keeping up" in caplog.text


def test_events_filters_and_formats_on_the_wire():
    async def main():
        sw, srv = await start_server()
        c = await RawClient.connect(srv.port)
        await c.login()
        replies = [await c.command("event"), await c.command("event json NOT_AN_EVENT"),
                   await c.command("event json CHANNEL_CREATE CUSTOM eavesdrop::start"),
                   await c.command("filter Caller-Context earshot"), await c.command("filter add Unique-ID x"),
                   await c.command("filter"), await c.command("filter delete Unique-ID")]
        sw.events.fire("CUSTOM", {"Caller-Context": "earshot"}, subclass="other::thing")  # not subscribed
        sw.events.fire("CHANNEL_CREATE", {"Caller-Context": "default"})                   # filtered out
        sw.events.fire("CHANNEL_CREATE", {"Caller-Context": "EARSHOT", "Unique-ID": "u1"})  # passes
        sw.events.fire("CUSTOM", {"Caller-Context": "earshot", "Unique-ID": "u2"}, subclass="eavesdrop::start")
        first = await c.frame()
        second = await c.frame()
        nix = await c.command("nixevent CHANNEL_CREATE")
        sw.events.fire("CHANNEL_CREATE", {"Caller-Context": "earshot", "Unique-ID": "u3"})
        log_on = await c.command("log info")
        log_off = await c.command("nolog")
        noev = await c.command("noevents")
        noev2 = await c.command("noevents")
        await stop_server(sw, srv)
        return replies, first, second, nix, log_on, log_off, noev, noev2

    replies, first, second, nix, log_on, log_off, noev, noev2 = run(main())
    assert [h["Reply-Text"] for h, _ in replies] == [
        "-ERR no keywords supplied", "-ERR no keywords supplied", "+OK event listener enabled json",
        "+OK filter added. [Caller-Context]=[earshot]", "+OK filter added. [Unique-ID]=[x]",
        "-ERR invalid syntax", "+OK filter deleted. [Unique-ID][]"]
    assert first[0]["Content-Type"] == "text/event-json" and int(first[0]["Content-Length"]) == len(first[1])
    a, b = json.loads(first[1]), json.loads(second[1])
    assert (a["Event-Name"], a["Unique-ID"]) == ("CHANNEL_CREATE", "u1")
    assert (b["Event-Name"], b["Event-Subclass"], b["Unique-ID"]) == ("CUSTOM", "eavesdrop::start", "u2")
    assert nix[0]["Reply-Text"] == "+OK events nixed"
    # u3 was nixed: the next frame on the wire is the log reply
    assert log_on[0]["Reply-Text"] == "+OK log level info [6]"
    assert log_off[0]["Reply-Text"] == "+OK no longer logging"
    assert noev[0]["Reply-Text"] == "+OK no longer listening for events"
    assert noev2[0]["Reply-Text"] == "-ERR not listening for events"


def ev(**headers):
    return Event("CHANNEL_CREATE", headers)


def test_filter_rules_match_freeswitch():
    assert filters_pass([], ev())
    assert filters_pass([("Unique-ID", "abc")], ev(**{"Unique-ID": "ABC"}))
    assert not filters_pass([("Unique-ID", "abc")], ev(**{"Unique-ID": "abd"}))
    assert not filters_pass([("Unique-ID", "abc")], ev())  # header missing: no positive match
    assert filters_pass([("Event-Name", "/^CHANNEL_/")], ev(**{"Event-Name": "CHANNEL_CREATE"}))
    veto = [("Event-Name", "/CHANNEL/"), ("Unique-ID", "-bad")]
    assert filters_pass(veto, ev(**{"Event-Name": "CHANNEL_X", "Unique-ID": "good"}))
    assert not filters_pass(veto, ev(**{"Event-Name": "CHANNEL_X", "Unique-ID": "bad"}))
    assert not filters_pass([("Unique-ID", "-bad")], ev(**{"Unique-ID": "good"}))  # negatives alone pass nothing
    assert not filters_pass([("Event-Name", "/([/")], ev(**{"Event-Name": "x"}))   # a broken regex matches nothing


def test_sendevent_steers_a_running_eavesdrop_or_fires_the_event():
    class Engine:
        def __init__(self):
            self.commands = []

        def send_command(self, spy, command):
            self.commands.append((spy, command))
            return spy == "spy-1"

    async def main():
        sw, srv = await start_server()
        sw.eavesdrop = Engine()
        seen = []
        sw.events.subscribe("all", seen.append)
        c = await RawClient.connect(srv.port)
        await c.login()
        steer = await c.command("sendevent CUSTOM\nUnique-ID: spy-1\neavesdrop-command: 3*")
        idle = await c.command("sendevent CUSTOM\nEvent-Subclass: earshot::note\nUnique-ID: spy-2\n"
                               "eavesdrop-command: 2")
        body = "hello ☎"
        custom = await c.command(f"sendevent CUSTOM\nEvent-Subclass: my::thing\nX-Who: me\n"
                                 f"Content-Length: {len(body.encode())}\n\n{body}")
        nosub = await c.command("sendevent CUSTOM\nX: y")
        unknown = await c.command("sendevent NOPE\nX: y")
        other = await c.command("sendevent HEARTBEAT\nX: y")
        await stop_server(sw, srv)
        return sw.eavesdrop.commands, steer, idle, custom, nosub, unknown, other, seen

    commands, steer, idle, custom, nosub, unknown, other, seen = run(main())
    assert commands == [("spy-1", "3*"), ("spy-2", "2")]
    assert steer[0]["Reply-Text"].startswith("+OK ") and idle[0]["Reply-Text"].startswith("+OK ")
    assert custom[0]["Reply-Text"].startswith("+OK ")
    assert nosub[0]["Reply-Text"] == "-ERR a CUSTOM event needs an Event-Subclass header"
    assert unknown[0]["Reply-Text"] == "-ERR unknown event name 'NOPE'"
    fired = [(e.name, e.subclass, e.get("X-Who"), e.body) for e in seen if e.name in ("CUSTOM", "HEARTBEAT")]
    assert ("CUSTOM", "my::thing", "me", "hello ☎") in fired
    assert ("CUSTOM", "earshot::note", None, "") in fired   # not running eavesdrop: fired as sent
    assert not any(e.get("Unique-ID") == "spy-1" for e in seen)  # the steering event was consumed
    assert other[0]["Reply-Text"].startswith("+OK ") and any(n == "HEARTBEAT" for n, *_ in fired)


def test_bgapi_replies_first_then_fires_background_job():
    async def main():
        sw, srv = await start_server()
        c = await RawClient.connect(srv.port)
        await c.login()
        await c.command("event plain BACKGROUND_JOB")
        await c.send("bgapi originate user/1099 &echo()\nJob-UUID: my-job-1\n\n")
        reply = await c.frame()
        job = await c.frame()
        await stop_server(sw, srv)
        return reply, job

    reply, job = run(main())
    assert reply[0] == {"Content-Type": "command/reply", "Reply-Text": "+OK Job-UUID: my-job-1",
                        "Job-UUID": "my-job-1"}
    head, _, body = job[1].decode().partition("\n\n")
    lines = dict(line.split(": ", 1) for line in head.split("\n"))
    assert (lines["Event-Name"], lines["Job-UUID"], lines["Job-Command"]) == ("BACKGROUND_JOB", "my-job-1",
                                                                             "originate")
    assert lines["Job-Command-Arg"] == "user/1099%20%26echo()"
    assert body == "-ERR USER_NOT_REGISTERED\n" and lines["Content-Length"] == str(len(body))


def test_generated_password_when_none_is_configured(tmp_path, monkeypatch):
    monkeypatch.setenv("EARSHOT_STATE_DIR", str(tmp_path))

    async def main():
        sw, srv = await start_server(make_config(password=""))
        secret = (tmp_path / "control.secret").read_text().strip()
        c = await RawClient.connect(srv.port)
        empty = await c.login("")
        await c.closed()
        c2 = await RawClient.connect(srv.port)
        srv.login_succeeded("127.0.0.1")  # clear the back-off the empty attempt earned
        ok = await c2.login(secret)
        await stop_server(sw, srv)
        return secret, empty, ok, (tmp_path / "control.secret").stat().st_mode & 0o777

    secret, empty, ok, mode = run(main())
    assert len(secret) >= 16 and mode == 0o600
    assert empty["Reply-Text"] == "-ERR invalid" and ok["Reply-Text"] == "+OK accepted"
