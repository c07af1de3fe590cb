"""Channels: the state machine, hangup causes and their SIP mapping, the DTMF queue and its timing."""
import pytest
from hypothesis import given, strategies as st

from firmware import aio
from firmware.switch import (Channel, ChannelHungUp, ChannelState, HangupCause, InvalidTransition,
                             LoopbackEndpoint, NullEndpoint, VirtualClock, cause_to_sip, parse_dtmf_string,
                             sip_to_cause)

S = ChannelState


def run(coro):
    return aio.run(coro)


def test_uuid_is_rfc4122_text_and_variables_are_set():
    import uuid
    ch = Channel(NullEndpoint("sofia/internal/1001@earshot.local"), variables={"caller_id_number": "1001"})
    assert str(uuid.UUID(ch.uuid)) == ch.uuid and uuid.UUID(ch.uuid).version == 4
    assert ch.vars["uuid"] == ch.uuid and ch.vars["caller_id_number"] == "1001"
    assert ch.name == "sofia/internal/1001@earshot.local" and ch.vars["context"] == "default"
    with pytest.raises(ValueError):
        ch.set_variable("uuid", "x")


@pytest.mark.parametrize("path", [
    [S.ROUTING, S.RINGING, S.EARLY, S.ANSWERED, S.HANGUP],
    [S.ROUTING, S.ANSWERED, S.HANGUP],
    [S.RINGING, S.ANSWERED, S.HANGUP],
    [S.EARLY, S.HANGUP],
    [S.HANGUP],
])
def test_valid_state_paths(path):
    ch = Channel(NullEndpoint())
    for state in path:
        ch.set_state(state)
    assert ch.state is path[-1]


@pytest.mark.parametrize("before,bad", [
    ([S.ROUTING, S.ANSWERED], S.RINGING),
    ([S.ROUTING, S.ANSWERED], S.EARLY),
    ([S.EARLY], S.RINGING),
    ([S.RINGING], S.ROUTING),
    ([S.HANGUP], S.ANSWERED),
    ([S.HANGUP], S.HANGUP),
    ([], S.NEW),
])
def test_invalid_transitions_raise(before, bad):
    ch = Channel(NullEndpoint())
    for state in before:
        ch.set_state(state)
    with pytest.raises(InvalidTransition):
        ch.set_state(bad)
    assert ch.state is (before[-1] if before else S.NEW)


@pytest.mark.parametrize("name,code", [
    ("NORMAL_CLEARING", 16), ("USER_BUSY", 17), ("NO_USER_RESPONSE", 18), ("NO_ANSWER", 19),
    ("CALL_REJECTED", 21), ("ORIGINATOR_CANCEL", 487), ("UNALLOCATED_NUMBER", 1),
    ("NORMAL_TEMPORARY_FAILURE", 41), ("INCOMPATIBLE_DESTINATION", 88), ("RECOVERY_ON_TIMER_EXPIRE", 102),
    ("MEDIA_TIMEOUT", 604),
])
def test_causes_by_name_and_code(name, code):
    assert HangupCause[name] == code
    assert HangupCause.parse(name.lower()) is HangupCause[name]
    assert HangupCause.parse(str(code)) is HangupCause[name]


def test_unknown_cause_is_an_error():
    with pytest.raises(ValueError, match="unknown hangup cause"):
        HangupCause.parse("NOT_A_CAUSE")


@pytest.mark.parametrize("cause,sip", [
    ("USER_BUSY", 486), ("NO_ANSWER", 480), ("NO_USER_RESPONSE", 408), ("CALL_REJECTED", 603),
    ("UNALLOCATED_NUMBER", 404), ("ORIGINATOR_CANCEL", 487), ("INCOMPATIBLE_DESTINATION", 488),
    ("RECOVERY_ON_TIMER_EXPIRE", 504), ("NORMAL_TEMPORARY_FAILURE", 503), ("MEDIA_TIMEOUT", 480),
])
def test_cause_to_sip(cause, sip):
    assert cause_to_sip(HangupCause[cause]) == sip


@pytest.mark.parametrize("sip,cause", [
    (200, "NORMAL_CLEARING"), (486, "USER_BUSY"), (600, "USER_BUSY"), (480, "NO_USER_RESPONSE"),
    (404, "UNALLOCATED_NUMBER"), (487, "ORIGINATOR_CANCEL"), (603, "CALL_REJECTED"), (403, "CALL_REJECTED"),
    (408, "RECOVERY_ON_TIMER_EXPIRE"), (503, "NORMAL_TEMPORARY_FAILURE"), (488, "INCOMPATIBLE_DESTINATION"),
    (499, "NORMAL_UNSPECIFIED"),
])
def test_sip_to_cause(sip, cause):
    assert sip_to_cause(sip) is HangupCause[cause]


def test_sip_to_cause_rejects_non_status():
    with pytest.raises(ValueError):
        sip_to_cause(42)


@given(st.sampled_from([486, 487, 488, 404, 603, 504]))
def test_the_main_failures_round_trip(status):
    assert cause_to_sip(sip_to_cause(status)) == status


# --- answer / hangup through the endpoint -----------------------------------------------------------

def test_answer_and_hangup_drive_the_endpoint_once():
    async def main():
        ep = NullEndpoint()
        ch = Channel(ep)
        ch.start_routing()
        await ch.answer()
        await ch.answer()           # idempotent
        assert ch.answered.is_set()
        await ch.hangup(HangupCause.USER_BUSY)
        await ch.hangup()           # idempotent
        return ep.calls, ch

    calls, ch = run(main())
    assert calls == ["answer", "hangup:USER_BUSY"]
    assert ch.hangup_cause is HangupCause.USER_BUSY and ch.vars["hangup_cause"] == "USER_BUSY"
    assert ch.hungup.is_set() and not ch.up


def test_remote_hangup_does_not_call_the_endpoint():
    async def main():
        ep = NullEndpoint()
        ch = Channel(ep)
        ch.remote_hangup(HangupCause.ORIGINATOR_CANCEL)
        return ep.calls, ch.hangup_cause

    assert run(main()) == ([], HangupCause.ORIGINATOR_CANCEL)


def test_answer_after_hangup_raises():
    async def main():
        ch = Channel(NullEndpoint())
        ch.remote_hangup()
        with pytest.raises(ChannelHungUp):
            await ch.answer()

    run(main())


def test_guard_ends_a_wait_when_the_channel_hangs_up():
    async def main():
        clock = VirtualClock()
        ch = Channel(NullEndpoint(), clock=clock)
        result = []

        async def app():
            try:
                await ch.guard(clock.sleep_ms(60_000))
                result.append("slept")
            except ChannelHungUp:
                result.append("hung up")

        task = aio.create_task(app())
        await clock.advance(10)
        ch.remote_hangup()
        await clock.settle()
        await task
        return result, clock.pending

    assert run(main()) == (["hung up"], 0)


def test_loopback_pair_propagates_answer_hangup_and_dtmf():
    async def main():
        a_ep, b_ep = LoopbackEndpoint.pair("loopback/x-a", "loopback/x-b")
        a, b = Channel(a_ep, direction="outbound"), Channel(b_ep)
        b.start_routing()
        await b.ring()
        assert a.state is S.RINGING
        await b.answer()
        assert a.state is S.ANSWERED
        b.send_dtmf("5")
        digit = await a.next_digit(0)
        await b.hangup(HangupCause.USER_BUSY)
        return digit, a.hangup_cause, a_ep.calls

    digit, cause, a_calls = run(main())
    assert digit == "5" and cause is HangupCause.USER_BUSY
    assert a_calls == []  # the far side acted: nothing was asked of a's endpoint


# --- DTMF -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,steps", [
    ("123", [("1", 250), ("2", 250), ("3", 250)]),
    ("w2@500", [("", 500), ("2", 500)]),
    ("W1", [("", 1000), ("1", 250)]),
    ("~1@40", [("1", 250)]),                       # 40 ms is below the minimum: default
    ("1@99999", [("1", 24000)]),                   # clamped
    ("12@100+3", [("1", 100), ("2", 100), ("3", 250)]),
    ("a*#d", [("A", 250), ("*", 250), ("#", 250), ("D", 250)]),
])
def test_parse_dtmf_string(text, steps):
    assert parse_dtmf_string(text) == steps


@pytest.mark.parametrize("bad", ["", "~", "12x", "1@abc", "1++2", "@500"])
def test_parse_dtmf_string_rejects(bad):
    with pytest.raises(ValueError):
        parse_dtmf_string(bad)


def test_queue_dtmf_honours_pauses_on_the_clock():
    async def main():
        clock = VirtualClock()
        ch = Channel(NullEndpoint(), clock=clock)
        ch.queue_dtmf("1w2W3")
        first = await ch.next_digit(0)
        await clock.advance(499)
        early = ch.dtmf_queued
        await clock.advance(1)
        second = await ch.next_digit(0)
        await clock.advance(999)
        not_yet = ch.dtmf_queued
        await clock.advance(1)
        third = await ch.next_digit(0)
        return first, early, second, not_yet, third

    assert run(main()) == ("1", 0, "2", 0, "3")


def test_next_digit_times_out_on_the_clock():
    async def main():
        clock = VirtualClock()
        ch = Channel(NullEndpoint(), clock=clock)
        waiter = aio.create_task(ch.next_digit(2000))
        await clock.advance(1999)
        still_waiting = not waiter.done()
        await clock.advance(1)
        return still_waiting, await waiter

    assert run(main()) == (True, None)


def test_flush_drops_queued_and_paused_digits():
    async def main():
        clock = VirtualClock()
        ch = Channel(NullEndpoint(), clock=clock)
        ch.queue_dtmf("12w3")
        ch.flush_dtmf()
        await clock.advance(1000)
        return ch.dtmf_queued

    assert run(main()) == 0


def test_digits_queued_behind_a_pause_keep_their_order():
    async def main():
        clock = VirtualClock()
        ch = Channel(NullEndpoint(), clock=clock)
        ch.queue_dtmf("w1")
        ch.queue_dtmf("2")  # must not overtake the paused "1"
        await clock.advance(500)
        return [await ch.next_digit(0), await ch.next_digit(0)]

    assert run(main()) == ["1", "2"]
