"""The event bus: FreeSWITCH names and headers, fan-out that survives a bad subscriber, the order
of a channel's life."""
import logging

import pytest

from firmware import aio
from firmware.switch import Dialplan, EventBus, HangupCause, NullEndpoint, Switch
from firmware.switch import events as ev

LIFE = {ev.CHANNEL_CREATE, ev.CHANNEL_EXECUTE, ev.CHANNEL_EXECUTE_COMPLETE, ev.CHANNEL_ANSWER,
        ev.CHANNEL_HANGUP, ev.CHANNEL_HANGUP_COMPLETE}


def test_headers_use_freeswitch_names():
    bus = EventBus("core-uuid-1", wallclock=lambda: 1_700_000_000.25)
    e = bus.fire(ev.HEARTBEAT, {"Up-Time": "1 second"})
    assert e["Event-Name"] == "HEARTBEAT" and e["Core-UUID"] == "core-uuid-1"
    assert e["Event-Date-Timestamp"] == "1700000000250000" and e["Up-Time"] == "1 second"
    assert e["Event-Sequence"] == "1" and bus.fire(ev.HEARTBEAT)["Event-Sequence"] == "2"


def test_unknown_event_and_custom_without_subclass_are_errors():
    bus = EventBus("c")
    with pytest.raises(ValueError):
        bus.fire("CHANNEL_EXPLODE")
    with pytest.raises(ValueError):
        bus.fire(ev.CUSTOM)


def test_subscribers_by_name_all_and_custom_subclass():
    bus = EventBus("c")
    got = {"dtmf": [], "all": [], "sub": []}
    bus.subscribe(ev.DTMF, got["dtmf"].append)
    bus.subscribe("all", got["all"].append)
    bus.subscribe(["earshot::eavesdrop"], got["sub"].append)
    bus.fire(ev.DTMF, {"DTMF-Digit": "1"})
    bus.fire(ev.CUSTOM, subclass="earshot::eavesdrop")
    bus.fire(ev.CUSTOM, subclass="other::thing")
    assert [e.name for e in got["dtmf"]] == ["DTMF"]
    assert len(got["all"]) == 3
    assert [e.subclass for e in got["sub"]] == ["earshot::eavesdrop"]


def test_a_failing_subscriber_is_logged_and_does_not_stop_the_others(caplog):
    bus = EventBus("c")
    seen = []
    bus.subscribe("all", lambda e: 1 / 0)
    bus.subscribe("all", seen.append)
    with caplog.at_level(logging.ERROR):
        bus.fire(ev.HEARTBEAT)
    assert len(seen) == 1 and bus.failures == 1
    assert any("subscriber" in r.getMessage() for r in caplog.records)


def test_unsubscribe():
    bus = EventBus("c")
    seen = []
    token = bus.subscribe("all", seen.append)
    assert bus.unsubscribe(token) and not bus.unsubscribe(token)
    bus.fire(ev.HEARTBEAT)
    assert seen == []


def test_subscription_buffers_for_an_async_consumer():
    async def main():
        bus = EventBus("c")
        sub = bus.subscription([ev.DTMF, ev.HEARTBEAT], maxlen=2)
        got = []

        async def consumer():
            for _ in range(2):
                got.append((await sub.get()).name)

        task = aio.create_task(consumer())
        await aio.sleep(0)
        bus.fire(ev.DTMF)
        bus.fire(ev.CHANNEL_CREATE)          # not subscribed
        bus.fire(ev.HEARTBEAT)
        await aio.wait_for(task, 5)
        for _ in range(3):
            bus.fire(ev.DTMF)
        dropped = sub.dropped
        sub.close()
        bus.fire(ev.DTMF)
        return got, dropped, len(sub), len(bus)

    assert aio.run(main()) == (["DTMF", "HEARTBEAT"], 1, 2, 0)


def test_a_channel_life_in_order():
    xml = """<include><context name="default"><extension name="e"><condition>
      <action application="answer"/><action application="set" data="x=1"/></condition></extension>
      </context></include>"""
    sw = Switch(dialplan=Dialplan.parse(xml))
    events = []
    sw.events.subscribe("all", events.append)
    ch = sw.new_channel(NullEndpoint("sofia/internal/1001@h"), caller_id_number="1001", destination_number="42")
    aio.run(sw.execute(ch))
    life = [(e.name, e.get("Application")) for e in events if e.name in LIFE]
    assert life == [
        ("CHANNEL_CREATE", None),
        ("CHANNEL_EXECUTE", "answer"), ("CHANNEL_ANSWER", None), ("CHANNEL_EXECUTE_COMPLETE", "answer"),
        ("CHANNEL_EXECUTE", "set"), ("CHANNEL_EXECUTE_COMPLETE", "set"),
        ("CHANNEL_HANGUP", None), ("CHANNEL_HANGUP_COMPLETE", None),
    ]
    assert all(e["Unique-ID"] == ch.uuid for e in events if e.name in LIFE)
    create, hangup = events[0], [e for e in events if e.name == ev.CHANNEL_HANGUP][0]
    assert create["Channel-Name"] == "sofia/internal/1001@h" and create["Caller-Caller-ID-Number"] == "1001"
    assert create["Caller-Destination-Number"] == "42" and create["variable_uuid"] == ch.uuid
    assert hangup["Hangup-Cause"] == "NORMAL_CLEARING" and hangup["Channel-State"] == "CS_HANGUP"
    assert [e["Channel-Call-State"] for e in events if e.name == ev.CHANNEL_CALLSTATE] == ["ACTIVE", "HANGUP"]
    assert sw.get(ch.uuid) is None and ch.hangup_cause is HangupCause.NORMAL_CLEARING


def test_dtmf_event_when_a_digit_is_consumed():
    async def main():
        sw = Switch()
        ch = sw.new_channel(NullEndpoint())
        seen = []
        sw.events.subscribe(ev.DTMF, seen.append)
        ch.queue_dtmf("7@100")
        assert seen == []                    # queued, not yet consumed
        await ch.next_digit(0)
        return seen

    (e,) = aio.run(main())
    assert e["DTMF-Digit"] == "7" and e["DTMF-Duration"] == "800" and e["DTMF-Source"] == "APP"
