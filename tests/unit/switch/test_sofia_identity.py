"""Caller ID is who authenticated, not what From says (test_sofia.py's rig, with digest on).

User 1001, authenticated with its own password, writes ``From: "Mallory" <sip:1002@…>``: before,
the seed's ``global`` extension stored spymap/1002 → 1001's call (a supervisor dialling 881002
heard the wrong call), the audit said caller=1002 and the callee was shown 1002."""
from __future__ import annotations

import asyncio

from firmware.config import User
from firmware.sip.ua import IncomingCall
from tests.unit.switch.test_sofia import HOST, Rig, answer_for, run

USERS = (User("1001", "pw-1001", "Agent 1001"), User("1002", "pw-1002", "Agent 1002"),
         User("1003", "pw-1003", "Agent 1003", may_set_caller_id_name=True))
PORTS = "31340-31359"


async def call_as(rig: Rig, phone, dest: str, *, auth: str, from_user: str, display: str):
    offer = rig.offer(phone).encode()
    return await phone.ua.call(f"sip:{dest}@{HOST}:{rig.t.port}", offer, from_user=from_user,
                               display=display, auth=(auth, f"pw-{auth}"))


def test_a_from_naming_another_user_is_replaced_by_the_authenticated_one() -> None:
    async def main():
        rig = await Rig().start(USERS, ports=PORTS, digest=True)
        try:
            a, b = await rig.phone(), await rig.phone()
            out = await call_as(rig, a, f"b{b.t.port}", auth="1001", from_user="1002", display="Mallory")
            inc: IncomingCall = await asyncio.wait_for(b.calls.get(), 5)
            # the callee is shown the authenticated user with the configured name
            assert (inc.from_.uri.user, inc.from_.display) == ("1001", "Agent 1001")
            inc.answer(answer_for(inc, b))
            assert (await out.wait("answer", 5)).status == 200
            a_leg = next(ch for ch in rig.switch.channels() if ch.direction == "inbound")
            assert a_leg.get_variable("caller_id_number") == "1001"
            assert a_leg.get_variable("caller_id_name") == "Agent 1001"
            assert a_leg.get_variable("sip_from_user") == "1002"       # what the header claimed, kept
            assert a_leg.name.startswith("sofia/internal/1001@")
            # the seed's spymap: 881001 finds this call, 881002 finds nothing
            assert rig.switch.db.api("select/spymap/1001") == a_leg.uuid
            assert rig.switch.db.api("select/spymap/1002") == ""
            await out.hangup()
            await inc.wait("bye", 5)
            await rig.idle()
        finally:
            await rig.close()

    run(main())


def test_only_a_user_allowed_to_set_its_name_shows_the_phones_display_name() -> None:
    async def main():
        rig = await Rig().start(USERS, ports=PORTS, digest=True)
        try:
            a, b = await rig.phone(), await rig.phone()
            for user, display, shown in (("1003", "Desk three", "Desk three"), ("1002", "The CEO", "Agent 1002")):
                out = await call_as(rig, a, f"b{b.t.port}", auth=user, from_user=user, display=display)
                inc: IncomingCall = await asyncio.wait_for(b.calls.get(), 5)
                assert (inc.from_.uri.user, inc.from_.display) == (user, shown)
                inc.reject(486)
                assert (await out.wait("fail", 5)).status == 486
                await rig.idle()
        finally:
            await rig.close()

    run(main())


def test_caller_id_mismatch_refuse_answers_403_and_opens_nothing() -> None:
    async def main():
        rig = await Rig().start(USERS, ports=PORTS, digest=True, caller_id_mismatch="refuse")
        try:
            a = await rig.phone()
            out = await call_as(rig, a, "9197", auth="1001", from_user="1002", display="Mallory")
            resp = await out.wait("fail", 5)
            assert resp.status == 403 and "From is not the authenticated user" in resp.headers.get("Warning")
            assert len(rig.switch) == 0 and rig.engine.ports.available == rig.engine.ports.capacity
            await rig.answered(a, from_user="1001", auth=("1001", "pw-1001"))   # its own identity: served
        finally:
            await rig.close()

    run(main())
