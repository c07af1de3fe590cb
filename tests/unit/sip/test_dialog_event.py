"""sip.dialog_event: the dialog-info document, and the SUBSCRIBE answers a desk phone can get —
between two of our own UAs over loopback (tests/integration/test_busy_lamps.py has SIPp as the
phone). The subscriber's UA refuses our NOTIFYs (415: it takes no dialog-info), which also shows
that a subscription whose NOTIFY fails is forgotten (RFC 6665 §4.2.2)."""
from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest

from firmware.sip import dialog_event as de
from firmware.sip.auth import DigestServer
from firmware.sip.message import Headers, Request
from firmware.sip.transaction import Timers
from firmware.sip.transport import Transport
from firmware.sip.ua import UserAgent
from firmware.sip.uri import SipUri
from tests.asynctest import run, wait_until

HOST = "127.0.0.1"
FAST = Timers(t1=0.02, t2=0.08, t4=0.1)
NS = "{urn:ietf:params:xml:ns:dialog-info}"
PASSWORDS = {"1000": "pw-sup", "1001": "pw-1001", "1002": "pw-1002"}
SUPERVISORS = {"1000"}


def test_dialog_info_is_rfc_4235_full_state():
    idle = ET.fromstring(de.dialog_info('sip:1001@a"b', 0, []))
    assert idle.tag == NS + "dialog-info" and idle.get("state") == "full" and idle.get("version") == "0"
    assert idle.get("entity") == 'sip:1001@a"b' and list(idle) == []
    busy = ET.fromstring(de.dialog_info("sip:1001@x", 7, [de.AgentCall("u1", "confirmed", "recipient", "5551<2>")]))
    (d,) = busy
    assert (d.get("id"), d.get("direction"), d.find(NS + "state").text) == ("u1", "recipient", "confirmed")
    assert d.find(f"{NS}remote/{NS}identity").text == "5551<2>"


class Rig:
    async def start(self) -> "Rig":
        self.ts, self.tc = Transport(HOST, 0), Transport(HOST, 0)
        await self.ts.start()
        await self.tc.start()
        auth = DigestServer(HOST, b"k" * 32, PASSWORDS.get, algorithms=("MD5",))
        self.server = UserAgent(self.ts, domain=HOST, timers=FAST, digest_server=auth)
        self.calls: dict[str, list[de.AgentCall]] = {}
        self.events = de.DialogEvents(
            self.server, auth, domain=HOST, is_agent=lambda a: a in PASSWORDS,
            may_watch=lambda w, a: w == a or w in SUPERVISORS, state_of=lambda a: self.calls.get(a, []))
        self.server.on_request = self.events.handle
        self.client = UserAgent(self.tc, domain=HOST, timers=FAST)
        return self

    async def subscribe(self, agent: str, watcher: str = "1000", *, expires: str | None = "600",
                        event: str = "dialog"):
        h = Headers()
        for k, v in (("Max-Forwards", "70"), ("From", f"<sip:{watcher}@{HOST}>;tag={Transport.new_branch()}"),
                     ("To", f"<sip:{agent}@{HOST}>"), ("Call-ID", Transport.new_branch()), ("CSeq", "1 SUBSCRIBE"),
                     ("Contact", f"<sip:{watcher}@{HOST}:{self.tc.port}>"), ("Event", event)):
            h.set(k, v)
        if expires is not None:
            h.set("Expires", expires)
        req = Request("SUBSCRIBE", SipUri.parse(f"sip:{agent}@{HOST}:{self.ts.port}"), h, b"")
        return await self.client.send_request(req, auth=(watcher, PASSWORDS[watcher]))

    async def close(self) -> None:
        self.events.close()
        await self.events.drain(1)
        await self.server.close()
        await self.client.close()


def test_subscribe_answers_and_limits(monkeypatch):
    monkeypatch.setattr(de, "MAX_PER_WATCHER", 2)
    # admission only: no NOTIFY goes out (our client UA would refuse it, which ends a subscription)
    monkeypatch.setattr(de.Subscription, "notify", lambda self, *a, **k: None)

    async def main():
        rig = await Rig().start()
        try:
            ok = await rig.subscribe("1001")
            assert ok.status == 200 and ok.headers.get("Expires") == "600" and ok.to.tag
            assert (await rig.subscribe("1001", expires="99999")).headers.get("Expires") == str(de.MAX_EXPIRES)
            full = await rig.subscribe("1002")                     # a third for this watcher
            assert full.status == 503 and full.headers.get("Retry-After") == "60"
            assert (await rig.subscribe("1001", "1002")).status == 403     # an agent watching another
            assert (await rig.subscribe("1002", "1002")).status == 200     # … may watch itself
            assert (await rig.subscribe("9999")).status == 404
            brief = await rig.subscribe("1002", "1002", expires="30")
            assert brief.status == 423 and brief.headers.get("Min-Expires") == str(de.MIN_EXPIRES)
            assert (await rig.subscribe("1002", "1002", expires="soon")).status == 400
            bad = await rig.subscribe("1002", "1002", event="presence")
            assert bad.status == 489 and bad.headers.get("Allow-Events") == "dialog"
        finally:
            await rig.close()
    run(main())


def test_a_watcher_that_has_gone_is_forgotten():
    async def main():
        rig = await Rig().start()
        try:
            assert (await rig.subscribe("1001")).status == 200
            assert len(rig.events) == 1
            # the client UA refuses the first NOTIFY (415): that ends the subscription
            await wait_until(lambda: len(rig.events) == 0, timeout=5)
            assert len(rig.server.dialogs) == 0
        finally:
            await rig.close()
    run(main())
