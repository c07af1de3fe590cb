"""``eavesdrop all``: order, one visit per call, skips, group before sound, indicate sounds and their
waits, and no busy loop (virtual time, iterations counted)."""
from __future__ import annotations

from firmware import aio
from firmware.switch import NullEndpoint
from firmware.switch import eavesdrop as ed

from .test_eavesdrop import Rig

NEW, IDLE, FAILED = "tone_stream://%(500,0,620)", "tone_stream://%(250,0,920)", "tone_stream://%(500,0,320)"
SOUNDS = {"eavesdrop_indicate_new": NEW, "eavesdrop_indicate_idle": IDLE, "eavesdrop_indicate_failed": FAILED}


def run(coro):
    return aio.run(coro)


def all_rig(**vars_) -> Rig:
    return Rig(**dict(SOUNDS, **vars_))


async def visits(rig: Rig, n: int) -> list[str]:
    """Press * n-1 times; the uuid of each target visited, in order."""
    out = []
    for i in range(n):
        await rig.settle()
        out.append(rig.tap.target.uuid)
        if i < n - 1:
            rig.spy.queue_dtmf("*")
    return out


def test_each_call_once_in_creation_order_skipping_spies_and_unanswered_legs():
    async def main():
        rig = all_rig()
        ringing = rig.sw.new_channel(NullEndpoint("sofia/internal/1004"), user_name="1003")
        rig.media.bridged.add(ringing.uuid)                      # tappable but not answered
        other_spy = rig.sw.new_channel(NullEndpoint("sofia/internal/1009"))
        other_spy.mark_answered()
        rig.media.bridged.add(other_spy.uuid)
        rig.engine.spies.add(other_spy.uuid)
        a2, b2 = rig.call("1003", "1001")
        rig.start(data="all")
        got = await visits(rig, 5)
        return rig, got, a2

    rig, got, a2 = run(main())
    assert got == [rig.a.uuid, a2.uuid, rig.a.uuid, a2.uuid, rig.a.uuid]


def test_all_legs_visits_both_legs_of_each_call():
    async def main():
        rig = all_rig(eavesdrop_all_legs="true")
        a2, b2 = rig.call("1003", "1001")
        rig.start(data="all")
        return rig, await visits(rig, 4), a2, b2

    rig, got, a2, b2 = run(main())
    assert got == [rig.a.uuid, rig.b.uuid, a2.uuid, b2.uuid]


def test_the_group_is_checked_before_any_sound():
    async def main():
        rig = all_rig(eavesdrop_require_group="support")        # only b (1002) is in support
        a2, b2 = rig.call("1003", "1001")
        rig.start(data="all")
        await rig.settle()
        first = (rig.tap.target.uuid, list(rig.played()))
        rig.spy.queue_dtmf("*")
        await rig.settle()
        return rig, first

    rig, (target, played) = run(main())
    assert target == rig.b.uuid and played == [NEW]             # no sound for the calls skipped
    assert rig.played() == [NEW, NEW] and len(rig.media.taps) == 2


def test_all_never_busy_loops_when_every_call_fails_the_group_check():
    async def main():
        rig = all_rig(eavesdrop_require_group="marketing")
        for i in range(5):
            rig.call(f"20{i}0", f"20{i}1")
        rig.start(data="all")
        await rig.settle(10 * 60 * 1000)                          # ten virtual minutes
        idle = (rig.engine.stats["all_passes"], rig.media.ready_calls, list(rig.played()))
        a3, b3 = rig.call("1003", "1004")                         # a call of the group appears
        a3.set_variable("eavesdrop_group", "marketing")
        a3.fire("CHANNEL_ANSWER")
        await rig.settle(ed.IDLE_WAIT_MS)
        return rig, idle, a3

    rig, (passes, readies, played), a3 = run(main())
    # one pass per idle wait (2 s) + rescan (5 s), never a spin
    assert passes <= 600_000 // (ed.IDLE_WAIT_MS + ed.RESCAN_MS) + 2
    assert readies == 0                                           # the group filter comes first
    assert NEW not in played and FAILED not in played and played == [IDLE] * passes
    assert rig.tap.target is a3                                   # woken by the channel event


def test_idle_plays_then_waits_2_s_and_any_digit_ends_the_wait():
    async def main():
        rig = all_rig()
        rig.media.bridged.clear()
        rig.start(data="all")
        await rig.settle(1999)
        one = (rig.engine.stats["all_passes"], rig.played().count(IDLE))
        await rig.settle(1)
        await rig.settle(ed.RESCAN_MS)
        two = rig.engine.stats["all_passes"]
        rig.spy.queue_dtmf("5")                                   # during the idle wait
        await rig.settle()
        return one, two, rig.engine.stats["all_passes"], rig.spy.dtmf_queued

    one, two, three, queued = run(main())
    assert one == (1, 1) and two == 2 and three == 2 and queued == 0


def test_a_failure_plays_failed_and_waits_up_to_5_s_for_a_digit():
    async def main():
        rig = all_rig()
        rig.media.refuse = "no luck"
        rig.start(data="all")
        await rig.settle(4999)
        during = (rig.engine.stats["all_passes"], list(rig.played()))
        rig.spy.queue_dtmf("1")                                   # a digit ends the wait early
        await rig.settle()
        return rig, during

    rig, (passes, played) = run(main())
    assert passes == 1 and played == [NEW, FAILED]
    assert rig.engine.stats["all_passes"] == 2 and rig.played()[:3] == [NEW, FAILED, NEW]


def test_target_hangup_moves_on_and_the_spy_hears_idle_when_nothing_is_left():
    async def main():
        rig = all_rig(eavesdrop_whisper_bleg="true")
        rig.start(data="all")
        await rig.settle()
        rig.media.bridged.clear()                                 # the call's bridge is gone
        await rig.a.hangup()
        await rig.b.hangup()
        await rig.settle()
        return rig, rig.task.done()

    rig, done = run(main())
    assert rig.spy.up and not done and rig.tap.detached
    assert rig.played() == [NEW, IDLE]
    assert rig.custom("eavesdrop::stop")[0]["Eavesdrop-Reason"] == "target-hangup"


def test_every_target_starts_from_the_variables_and_queued_digits_apply_to_the_first_only():
    async def main():
        rig = all_rig()
        a2, b2 = rig.call("1003", "1001")
        rig.spy.queue_dtmf("2")
        rig.spy.queue_dtmf("3")                                   # still queued when * arrives? no:
        rig.start(data="all")
        await rig.settle()
        first = rig.tap.mode
        rig.engine.send_command(rig.spy.uuid, "*")
        await rig.settle()
        return first, rig.tap.target is a2, rig.tap.mode

    assert run(main()) == (3, True, 0)


def test_the_spy_hanging_up_ends_all_mode():
    async def main():
        rig = all_rig()
        rig.start(data="all")
        await rig.settle()
        await rig.spy.hangup()
        await rig.settle()
        return rig, rig.task.done()

    rig, done = run(main())
    assert done and rig.a.up and rig.tap.detached and not rig.engine.is_spy(rig.spy.uuid)
    assert len(rig.sw.events) == 1                                 # only the test's own subscriber is left


def test_a_volume_change_carries_over_to_the_next_target():
    async def main():
        rig = all_rig()
        rig.call("1003", "1001")
        rig.start(data="all")
        await rig.settle()
        rig.engine.set_gains(rig.spy.uuid, listen_gain_db=-9.0)
        rig.spy.queue_dtmf("*")
        await rig.settle()
        return [t.kw["listen_gain_db"] for t in rig.media.taps]

    assert run(main()) == [0.0, -9.0]


def test_without_a_group_the_agent_leg_of_a_received_call_is_the_target():
    """A customer (no configured user) calls agent 1003: the target is 1003's leg, so digit 2 (whisper
    to the target) reaches the agent and never the customer. Before, the first leg — the customer's
    — was taken."""
    async def main():
        rig = all_rig()
        rig.sw.get(rig.a.uuid).remote_hangup()          # only the inbound call below
        rig.sw.get(rig.b.uuid).remote_hangup()
        customer = rig.sw.new_channel(NullEndpoint("sofia/gateway/pbx/5551234"), caller_id_number="5551234")
        agent = rig.sw.new_channel(NullEndpoint("sofia/internal/1003"), user_name="1003",
                                   caller_id_number="5551234", direction="outbound")
        for c in (customer, agent):
            c.mark_answered()
        customer.other_leg, agent.other_leg = agent, customer
        rig.media.bridged |= {customer.uuid, agent.uuid}
        rig.start(data="all")
        got = await visits(rig, 2)
        return got, agent, customer

    got, agent, customer = run(main())
    assert agent.get_variable("agent_id") == "1003" and customer.get_variable("agent_id") is None
    assert got == [agent.uuid, agent.uuid]
