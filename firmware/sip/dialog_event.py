"""Busy lamps: the SIP dialog event package (RFC 6665 subscriptions, RFC 4235 dialog-info) for agents.

A supervisor's desk phone (a Yealink, Polycom or Snom BLF key) SUBSCRIBEs to ``sip:<agent>@<domain>``
with ``Event: dialog``; we answer 200 with a dialog of our own, NOTIFY the agent's state at once and
on every change (``trying`` / ``early`` / ``confirmed`` / ``terminated``), and end the subscription
on un-SUBSCRIBE (``Expires: 0``), on expiry, or when we stop.

    events = DialogEvents(ua, auth, may_watch=lambda watcher, agent: …, state_of=lambda agent: …)
    ua.on_request = events.handle               # takes out-of-dialog SUBSCRIBE, declines the rest
    events.changed("1001")                      # the agent's calls changed: NOTIFY its watchers

Only authenticated users may subscribe (digest, 401), only to a configured agent (404), and only
to one ``may_watch`` allows (403). Subscriptions are bounded per watcher and in all (503 with
Retry-After); expiry is clamped to [MIN_EXPIRES, MAX_EXPIRES] (423 below the minimum).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable
from xml.sax.saxutils import escape, quoteattr

from firmware import aio

from .auth import gate
from .dialog import Dialog, new_tag
from .message import Request, make_response

log = logging.getLogger("earshot.sip.blf")

EVENT = "dialog"
CONTENT_TYPE = "application/dialog-info+xml"
MIN_EXPIRES = 60
MAX_EXPIRES = 3600
DEFAULT_EXPIRES = 600
MAX_PER_WATCHER = 64     # a desk phone's BLF keys, with room to spare
MAX_TOTAL = 512
STATES = ("trying", "proceeding", "early", "confirmed", "terminated")


@dataclass(frozen=True)
class AgentCall:
    """One of an agent's calls as a dialog-info <dialog>: its id, state and direction."""

    id: str
    state: str                    # one of STATES
    direction: str = ""           # "initiator" (the agent placed it) or "recipient"
    remote: str = ""              # the far party's number, when it may be shown


def dialog_info(entity: str, version: int, calls: list[AgentCall]) -> bytes:
    """A full-state RFC 4235 document; no <dialog> element means the agent is idle."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" '
           f'state="full" entity={quoteattr(entity)}>']
    for c in calls:
        direction = f" direction={quoteattr(c.direction)}" if c.direction else ""
        out.append(f"<dialog id={quoteattr(c.id)}{direction}><state>{escape(c.state)}</state>")
        if c.remote:
            out.append(f"<remote><identity>{escape(c.remote)}</identity></remote>")
        out.append("</dialog>")
    out.append("</dialog-info>")
    return ("\n".join(out) + "\n").encode()


def _expires(req: Request) -> int | None:
    text = (req.headers.get("Expires") or "").strip()
    if not text:
        return DEFAULT_EXPIRES
    if not text.isdigit() or len(text) > 10:
        return None
    return int(text)


class Subscription:
    """One watcher's subscription to one agent: its dialog, NOTIFY version and expiry timer."""

    def __init__(self, events: DialogEvents, dialog: Dialog, watcher: str, agent: str, expires: int) -> None:
        self.events = events
        self.dialog = dialog
        self.watcher = watcher
        self.agent = agent
        self.version = 0
        self.expires = expires
        self.active = True
        self.last_calls: list[AgentCall] | None = None    # what the watcher was last told
        self._timer: asyncio.TimerHandle | None = None
        self._rearm()
        dialog.owner = self

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.expires, self.end, "timeout")

    def on_dialog_request(self, req: Request, stxn: Any) -> None:
        """In-dialog requests: a refreshing SUBSCRIBE (Expires: 0 ends it); anything else 405/481."""
        if not self.dialog.accept_remote_cseq(req):
            stxn.respond(make_response(req, 500, "Server Internal Error (CSeq out of order)"))
            return
        if req.method != "SUBSCRIBE":
            stxn.respond(make_response(req, 405, "Method Not Allowed"))
            return
        expires = _expires(req)
        if expires is None:
            stxn.respond(make_response(req, 400, "Bad Request (Expires is not a number)"))
            return
        if 0 < expires < MIN_EXPIRES:
            stxn.respond(self.events.too_brief(req))
            return
        self.dialog.refresh_target(req)
        if expires == 0:
            stxn.respond(self.events.ok(req, 0))
            self.end("unsubscribe")
            return
        self.expires = min(expires, MAX_EXPIRES)
        self._rearm()
        stxn.respond(self.events.ok(req, self.expires))
        self.notify()                       # RFC 6665 §4.2.1.2: a NOTIFY follows every SUBSCRIBE

    def notify(self, reason: str | None = None, *, calls: list[AgentCall] | None = None) -> None:
        """Send the agent's full state (and, with ``reason``, the subscription's end); given the
        ``calls`` it was computed from, only when that differs from what the watcher was told."""
        if calls is None:
            calls = self.events.state_of(self.agent)
        elif calls == self.last_calls:
            return
        self.last_calls = calls
        body = dialog_info(f"sip:{self.agent}@{self.events.domain}", self.version, calls)
        self.version += 1
        state = f"terminated;reason={reason}" if reason else f"active;expires={self.expires}"
        headers = {"Event": EVENT, "Subscription-State": state}
        self.events.spawn(self._send(body, headers))

    async def _send(self, body: bytes, headers: dict[str, str]) -> None:
        ua, dialog = self.events.ua, self.dialog

        def build() -> Request:
            return dialog.request("NOTIFY", body=body, content_type=CONTENT_TYPE, headers=headers)
        resp, _ = await ua._send_built(build, ua._dialog_target(dialog), None)
        log.debug("BLF: NOTIFY to %s for %s: %d", self.watcher, self.agent, resp.status)
        # RFC 6665 §4.2.2: a NOTIFY that failed (timeout, 481, 415, …) without a Retry-After ends it
        if resp.status >= 300 and not resp.headers.get("Retry-After") and self.active:
            log.info("BLF: %s no longer watches %s (%d to NOTIFY)", self.watcher, self.agent, resp.status)
            self.end(None)

    def end(self, reason: str | None) -> None:
        """Remove the subscription; with a reason, tell the watcher in a last NOTIFY."""
        if not self.active:
            return
        self.active = False
        if self._timer is not None:
            self._timer.cancel()
        if reason is not None:
            self.notify(reason)
        self.events.forget(self)


class DialogEvents:
    """The notifier of one UA: subscriptions by agent, the SUBSCRIBE handling, NOTIFY on change."""

    def __init__(self, ua: Any, auth: Any, *, domain: str, may_watch: Callable[[str, str], bool],
                 is_agent: Callable[[str], bool], state_of: Callable[[str], list[AgentCall]]) -> None:
        self.ua = ua
        self.auth = auth
        self.domain = domain
        self.may_watch = may_watch
        self.is_agent = is_agent
        self.state_of = state_of
        self.subs: dict[str, list[Subscription]] = {}       # agent -> its watchers' subscriptions
        self._tasks = aio.TaskSet("BLF", on_error=lambda exc: log.info("BLF: NOTIFY failed: %r", exc))
        self._refused_from: set[str] = set()                # log a flood once per source

    def __len__(self) -> int:
        return sum(len(v) for v in self.subs.values())

    def spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro)

    # --- SUBSCRIBE ----------------------------------------------------------------------------------

    def handle(self, req: Request, stxn: Any, source: Any) -> bool:
        """The UA's out-of-dialog request hook: True when the request was ours (a SUBSCRIBE)."""
        if req.method != "SUBSCRIBE":
            return False
        stxn.respond(self._subscribe(req, source))
        return True

    def _subscribe(self, req: Request, source: Any):
        event = (req.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != EVENT:
            resp = make_response(req, 489, "Bad Event")
            resp.headers.set("Allow-Events", EVENT)
            return resp
        who = getattr(source, "host", "")
        watcher, denied = self._authenticate(req, who)
        if denied is not None:
            return denied
        agent = getattr(req.uri, "user", None) or ""
        if not self.is_agent(agent):
            log.info("BLF: %s subscribed to %r, which is no agent here", watcher, agent[:64])
            return make_response(req, 404, "Not Found")
        if not self.may_watch(watcher, agent):
            log.warning("BLF: %s may not watch agent %s (403)", watcher, agent)
            return make_response(req, 403, "Forbidden (may not watch this agent)")
        expires = _expires(req)
        if expires is None:
            return make_response(req, 400, "Bad Request (Expires is not a number)")
        if 0 < expires < MIN_EXPIRES:
            return self.too_brief(req)
        mine = sum(1 for subs in self.subs.values() for s in subs if s.watcher == watcher)
        if expires and (mine >= MAX_PER_WATCHER or len(self) >= MAX_TOTAL):
            if who not in self._refused_from:
                self._refused_from.add(who)
                log.warning("BLF: %s at %s has %d subscriptions (%d in all): refusing more", watcher, who,
                            mine, len(self))
            resp = make_response(req, 503, "Service Unavailable (too many subscriptions)")
            resp.headers.set("Retry-After", "60")
            return resp
        tag = new_tag()
        dialog = Dialog.as_uas(req, tag, self.ua.contact(self.ua._transport_of(req)), state="confirmed")
        sub = Subscription(self, dialog, watcher, agent, min(expires, MAX_EXPIRES) or 1)
        resp = self.ok(req, min(expires, MAX_EXPIRES), to_tag=tag)
        self.ua.dialogs.add(dialog)
        self.subs.setdefault(agent, []).append(sub)
        log.info("BLF: %s watches agent %s for %d s", watcher, agent, expires)
        if expires == 0:        # a fetch (RFC 6665 §4.4.3): the state in one NOTIFY, then it ends
            asyncio.get_running_loop().call_soon(sub.end, "timeout")
        else:
            asyncio.get_running_loop().call_soon(sub.notify)
        return resp

    def _authenticate(self, req: Request, who: str) -> tuple[str, Any]:
        """(the authenticated user, None), or ("", the response that refuses)."""
        if self.auth is None:
            return (getattr(req.from_.uri, "user", None) or ""), None
        user, refusal = gate(self.auth, req, who, make_response)
        return user or "", refusal

    def ok(self, req: Request, expires: int, to_tag: str | None = None):
        resp = self.ua._response(req, 200, to_tag=to_tag, contact=True)
        resp.headers.set("Expires", str(expires))
        return resp

    @staticmethod
    def too_brief(req: Request):
        resp = make_response(req, 423, "Interval Too Brief")
        resp.headers.set("Min-Expires", str(MIN_EXPIRES))
        return resp

    # --- state changes ------------------------------------------------------------------------------

    def changed(self, agent: str) -> None:
        """The agent's calls may have changed: NOTIFY the watchers told something else before."""
        subs = list(self.subs.get(agent, ()))
        calls = self.state_of(agent) if subs else []     # once, for every watcher
        for sub in subs:
            sub.notify(calls=calls)

    def forget(self, sub: Subscription) -> None:
        subs = self.subs.get(sub.agent, [])
        if sub in subs:
            subs.remove(sub)
        if not subs:
            self.subs.pop(sub.agent, None)
        self.ua.dialogs.remove(sub.dialog)

    def close(self) -> None:
        """Stopping: every watcher hears the subscription end (reason "deactivated", re-subscribe later)."""
        for subs in list(self.subs.values()):
            for sub in list(subs):
                sub.end("deactivated")

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) for the NOTIFYs on their way."""
        if len(self._tasks):
            await asyncio.wait(list(self._tasks), timeout=timeout)
