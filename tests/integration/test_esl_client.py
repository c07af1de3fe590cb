"""Earshot's control socket driven by a real third-party ESL client: genesis (PyPI, asyncio).

The calls are placed on the switch through a test ``user/`` endpoint over ``LoopbackEndpoint``
(tests/unit/control); the SIP/eavesdrop audio scenario lives with the SIP peer tests.
"""
from __future__ import annotations

import asyncio
import json

import pytest

from genesis import Inbound  # the test extra installs it (pyproject [test])
from genesis.exceptions import AuthenticationError, GenesisError

from tests.unit.control import PASSWORD, make_config, start_server, stop_server


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def wait_until(predicate, seconds: float = 5.0) -> bool:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


def test_auth_success_and_failure():
    async def main():
        sw, srv = await start_server()
        try:
            async with Inbound("127.0.0.1", srv.port, PASSWORD) as client:
                status = await client.send("api status")
            with pytest.raises(AuthenticationError):
                await Inbound("127.0.0.1", srv.port, "wrong").start()
        finally:
            await stop_server(sw, srv)
        return status

    status = run(main())
    assert status["Content-Type"] == "api/response" and "Earshot" in status.body


def test_acl_rejection_reaches_the_client():
    async def main():
        sw, srv = await start_server(make_config(allow=("192.0.2.0/24",)))
        try:
            with pytest.raises(GenesisError):
                await Inbound("127.0.0.1", srv.port, PASSWORD).start()
        finally:
            await stop_server(sw, srv)

    run(main())


def test_originate_user_gives_channel_events_with_headers_and_show_channels_json():
    async def main():
        sw, srv = await start_server()
        events = []

        async def on_event(event):
            events.append(event)

        try:
            async with Inbound("127.0.0.1", srv.port, PASSWORD) as client:
                client.on("*", on_event)
                reply = await client.send("event plain CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_EXECUTE")
                originate = await client.send("api originate {origination_note=a b&c}user/1001 &echo()")
                uuid = originate.body.strip().split(" ", 1)[1]
                await wait_until(lambda: any(e.get("Event-Name") == "CHANNEL_EXECUTE" for e in events))
                channels = json.loads((await client.send("api show channels as json")).body)
                dtmf = await client.send(f"api uuid_recv_dtmf {uuid} 3")
                queued = sw.get(uuid).dtmf_queued
                failed = await client.send("api originate user/1099 &echo()")
                killed = await client.send(f"api uuid_kill {uuid}")
                gone = await client.send(f"api uuid_kill {uuid}")
        finally:
            await stop_server(sw, srv)
        return reply, originate, uuid, events, channels, dtmf, queued, failed, killed, gone

    reply, originate, uuid, events, channels, dtmf, queued, failed, killed, gone = run(main())
    assert reply["Reply-Text"] == "+OK event listener enabled plain"
    assert originate.body == f"+OK {uuid}\n"
    mine = [e for e in events if e.get("Unique-ID") == uuid]
    names = [e["Event-Name"] for e in mine]
    assert names[:3] == ["CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_EXECUTE"]
    create = mine[0]
    assert create["Channel-Name"] == "sofia/internal/1001@earshot.local"  # url-decoded by the client
    assert create["Call-Direction"] == "outbound" and create["variable_origination_note"] == "a b&c"
    assert create["variable_eavesdrop_group"] == "sales"
    assert mine[2]["Application"] == "echo"
    assert channels["row_count"] == 1 and channels["rows"][0]["uuid"] == uuid
    assert channels["rows"][0]["name"] == "sofia/internal/1001@earshot.local"
    assert dtmf.body == f"+OK {uuid} received DTMF 3.\n" and queued == 1
    assert failed.body == "-ERR USER_NOT_REGISTERED\n"
    assert killed.body == "+OK\n" and gone.body == "-ERR No such channel!\n"


def test_bgapi_background_job_and_filters():
    async def main():
        sw, srv = await start_server()
        jobs, creates = [], []

        async def on_job(event):
            jobs.append(event)

        async def on_create(event):
            creates.append(event)

        try:
            async with Inbound("127.0.0.1", srv.port, PASSWORD) as client:
                client.on("BACKGROUND_JOB", on_job)
                client.on("CHANNEL_CREATE", on_create)
                await client.send("event plain BACKGROUND_JOB CHANNEL_CREATE")
                filt = await client.send("filter Caller-Destination-Number 9196")
                await client.send("filter Event-Name BACKGROUND_JOB")
                reply = await client.send("bgapi originate loopback/9196 &echo()")
                job = reply["Job-UUID"]
                await wait_until(lambda: jobs)
                await client.send("api originate user/1002 &echo()")  # filtered out
                await asyncio.sleep(0.2)
        finally:
            await stop_server(sw, srv)
        return filt, reply, job, jobs, creates

    filt, reply, job, jobs, creates = run(main())
    assert filt["Reply-Text"] == "+OK filter added. [Caller-Destination-Number]=[9196]"
    assert reply["Reply-Text"] == f"+OK Job-UUID: {job}"
    assert len(jobs) == 1 and jobs[0]["Job-UUID"] == job and jobs[0]["Job-Command"] == "originate"
    assert jobs[0].body.startswith("+OK ")
    assert creates and all(e["Caller-Destination-Number"] == "9196" for e in creates)


def test_sendevent_eavesdrop_command_and_custom_events_through_the_client():
    class Engine:
        def __init__(self, sw):
            self.sw, self.commands = sw, []

        def send_command(self, spy, command):
            self.commands.append((spy, command))
            ch = self.sw.get(spy)
            if ch is None:
                return False
            ch.fire("CUSTOM", {"Eavesdrop-Mode": command}, subclass="eavesdrop::mode")
            return True

    async def main():
        sw, srv = await start_server()
        sw.eavesdrop = Engine(sw)
        customs = []

        async def on_mode(event):
            customs.append(event)

        try:
            async with Inbound("127.0.0.1", srv.port, PASSWORD) as client:
                client.on("eavesdrop::mode", on_mode)
                await client.send("event plain CUSTOM eavesdrop::mode eavesdrop::start")
                spy = (await client.send("api originate user/1000 &echo()")).body.strip()[4:]
                steer = await client.send(f"sendevent CUSTOM\nUnique-ID: {spy}\neavesdrop-command: 3")
                await wait_until(lambda: customs)
        finally:
            await stop_server(sw, srv)
        return spy, sw.eavesdrop.commands, steer, customs

    spy, commands, steer, customs = run(main())
    assert commands == [(spy, "3")] and steer["Reply-Text"].startswith("+OK ")
    assert customs[0]["Event-Subclass"] == "eavesdrop::mode" and customs[0]["Unique-ID"] == spy
    assert customs[0]["Eavesdrop-Mode"] == "3" and customs[0]["Content-Type"] == "text/event-plain"


def test_a_silent_client_does_not_block_a_genesis_client():
    async def main():
        sw, srv = await start_server(write_timeout_ms=500)
        try:
            silent_r, silent_w = await asyncio.open_connection("127.0.0.1", srv.port)  # never logs in
            async with Inbound("127.0.0.1", srv.port, PASSWORD) as client:
                body = (await client.send("api status")).body
            silent_w.close()
        finally:
            await stop_server(sw, srv)
        return body

    assert "is ready" in run(main())


class FakeTap:
    def __init__(self, log: list, mode: int) -> None:
        self.log = log
        log.append(("attach", mode))

    def set_mode(self, mode: int) -> None:
        self.log.append(("mode", mode))

    def drop_whisper(self) -> None:
        pass

    def play_confirm(self, mode: int) -> None:
        pass

    def set_gains(self, listen_db: float, whisper_db: float) -> None:
        pass

    def detach(self) -> None:
        self.log.append(("detach",))


class FakeMedia:
    """The eavesdrop engine's media interface (firmware.media.tap.TapHub's shape), recording only:
    the audio itself is checked by the SIP peer tests."""

    def __init__(self) -> None:
        self.log: list = []

    def ready(self, target) -> bool:
        return target.is_answered

    def attach(self, target, spy, **kw) -> FakeTap:
        return FakeTap(self.log, kw["mode"])


class Audit:
    def __init__(self) -> None:
        self.records: list = []

    def record(self, rec: dict) -> None:
        self.records.append(rec)


def test_seed_scenario_spy_switches_modes_and_custom_events():
    """The seed's ESL examples against the real eavesdrop engine: ``&eavesdrop(<uuid>)``, modes
    by ``uuid_recv_dtmf`` and by ``sendevent … eavesdrop-command``, ``eavesdrop::*`` events, and
    the ``inline`` example starting in whisper mode."""
    from firmware.switch.eavesdrop_app import register

    async def main():
        sw, srv = await start_server()
        media, audit = FakeMedia(), Audit()
        register(sw, media, audit)
        events = []

        async def on_event(event):
            events.append(event)

        def of(spy, sub):
            return [e for e in events if e.get("Eavesdrop-Spy-UUID") == spy and e["Event-Subclass"] == sub]

        try:
            async with Inbound("127.0.0.1", srv.port, PASSWORD) as client:
                client.on("*", on_event)
                await client.send("event plain CUSTOM eavesdrop::start eavesdrop::mode eavesdrop::stop")
                target = (await client.send("api originate user/1001 &echo()")).body.strip()[4:]
                spy = (await client.send(f"api originate user/1000 &eavesdrop({target})")).body.strip()[4:]
                await wait_until(lambda: of(spy, "eavesdrop::start"))
                await client.send(f"api uuid_recv_dtmf {spy} 3")
                await wait_until(lambda: of(spy, "eavesdrop::mode"))
                await client.send(f"sendevent CUSTOM\nUnique-ID: {spy}\neavesdrop-command: 1")
                await wait_until(lambda: len(of(spy, "eavesdrop::mode")) == 2)
                shown = json.loads((await client.send("api show eavesdrops as json")).body)
                await client.send(f"sendevent CUSTOM\nUnique-ID: {spy}\neavesdrop-command: *")
                await wait_until(lambda: of(spy, "eavesdrop::stop"))
                inline = (await client.send(
                    f"api originate user/1000 'queue_dtmf:w2@500,eavesdrop:{target}' inline")).body.strip()[4:]
                await wait_until(lambda: of(inline, "eavesdrop::mode"))
        finally:
            await stop_server(sw, srv)
        return target, spy, inline, [of(spy, s) for s in ("eavesdrop::start", "eavesdrop::mode",
                                                         "eavesdrop::stop")], shown, of(inline, "eavesdrop::mode")

    target, spy, inline, (start, modes, stop), shown, inline_modes = run(main())
    assert start[0]["Eavesdrop-Target-UUID"] == target and start[0]["Eavesdrop-Mode"] == "0"
    assert [(m["Eavesdrop-Mode"], m["Eavesdrop-Mode-Source"]) for m in modes] == [("3", "digit"), ("1", "command")]
    assert stop[0]["Eavesdrop-Reason"] == "command"
    assert shown["row_count"] == 1
    assert (shown["rows"][0]["spy_uuid"], shown["rows"][0]["target_uuid"], shown["rows"][0]["mode"]) == \
        (spy, target, "1")
    assert inline_modes[0]["Eavesdrop-Mode"] == "2" and inline_modes[0]["Eavesdrop-Mode-Name"] == "whisper-target"
