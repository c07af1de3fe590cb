"""Gateway client: keep Earshot registered to an upstream registrar/PBX (RFC 3261 §10.2).

    reg = GatewayRegistration(ua, registrar="sip:192.0.2.10:5060", username="earshot", password="…",
                              expires=3600, on_state=lambda state, reg: ...)
    reg.start()                  # background task: REGISTER, answer 401/407, refresh, retry
    await reg.wait_state("registered", timeout=5)
    await reg.stop()             # unregisters (Expires: 0) when registered

`state` is "unregistered", "trying", "registered" or "failed". Refreshes happen before expiry
(at half the granted time, or 30 s before it for long registrations); failures retry with
exponential back-off from `retry_base` to `retry_max` seconds. One Call-ID is kept for the
whole registration and the CSeq grows by one per REGISTER (§10.2.4). A 423 answer raises the
requested expiry to the registrar's Min-Expires and retries at once.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from .dialog import new_call_id, new_tag
from .message import Headers, Request, Response
from .transport import Target
from .uri import SipUri, parse_name_addr_list

log = logging.getLogger("earshot.sip.registration")

STATES = ("unregistered", "trying", "registered", "failed")


class GatewayRegistration:
    """One upstream registration. See the module docstring."""

    def __init__(self, ua, *, registrar: str, username: str, password: str,
                 domain: str | None = None, expires: int = 3600, contact_user: str | None = None,
                 target: Target | None = None, retry_base: float = 2.0, retry_max: float = 300.0,
                 on_state: Callable[[str, "GatewayRegistration"], None] | None = None) -> None:
        if expires <= 0:
            raise ValueError("expires must be positive")
        if retry_base <= 0 or retry_max < retry_base:
            raise ValueError("need 0 < retry_base <= retry_max")
        if not registrar.startswith(("sip:", "sips:")):
            registrar = "sip:" + registrar
        self.ua = ua
        self.registrar = SipUri.parse(registrar)
        self.username = username
        self.password = password
        self.domain = domain or self.registrar.host
        self.expires = expires
        self.contact_user = contact_user or username
        self.target = target
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.on_state = on_state
        self.state = "unregistered"
        self.granted = 0            # seconds the registrar granted last time
        self.last_response: Response | None = None
        self.failures = 0
        self._call_id = new_call_id(ua.transport.advertised_host)
        self._tag = new_tag()
        self._cseq = 0
        self._task: asyncio.Task | None = None
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ state
    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        log.info("gateway %s@%s: %s -> %s", self.username, self.registrar.host, self.state, state)
        self.state = state
        self._changed.set()
        self._changed = asyncio.Event()
        if self.on_state is not None:
            try:
                self.on_state(state, self)
            except Exception:
                log.exception("registration state callback failed")

    async def wait_state(self, state: str, timeout: float | None = None) -> None:
        """Wait until `state` is reached."""
        async def until() -> None:
            while self.state != state:
                await self._changed.wait()
        await asyncio.wait_for(until(), timeout)

    # ------------------------------------------------------------------ REGISTER
    def _build(self, expires: int) -> Request:
        self._cseq += 1
        aor = f"sip:{self.username}@{self.domain}"
        h = Headers()
        h.set("Max-Forwards", "70")
        h.set("From", f"<{aor}>;tag={self._tag}")
        h.set("To", f"<{aor}>")
        h.set("Call-ID", self._call_id)
        h.set("CSeq", f"{self._cseq} REGISTER")
        transport = self.target.transport if self.target else (self.registrar.transport or "udp")
        h.set("Contact", self.ua.contact(transport, self.contact_user))
        h.set("Expires", str(expires))
        h.set("User-Agent", self.ua.user_agent)
        uri = SipUri.parse(f"sip:{self.registrar.host}" + (f":{self.registrar.port}" if self.registrar.port else ""))
        return Request("REGISTER", uri, h, b"")

    async def register_once(self, expires: int | None = None) -> Response:
        """Send one REGISTER (answering a challenge) and return the final response."""
        want = self.expires if expires is None else expires
        target = self.target or await self.ua.resolve(self.registrar)
        req = self._build(want)
        resp = await self.ua.send_request(req, target, auth=(self.username, self.password))
        self._cseq = max(self._cseq, resp.cseq[0])  # an authenticated retry used the next CSeq
        self.last_response = resp
        return resp

    def _granted(self, resp: Response, asked: int) -> int:
        mine = self.ua.contact().strip("<>")
        try:
            for value in resp.headers.getall("Contact"):
                for addr in parse_name_addr_list(value):
                    if str(addr.uri) == mine or getattr(addr.uri, "user", None) == self.contact_user:
                        e = addr.params.get("expires")
                        if e and e.isdigit():
                            return int(e)
        except ValueError:
            pass
        e = resp.headers.get("Expires")
        return int(e) if e and e.strip().isdigit() else asked

    def refresh_delay(self, granted: int) -> float:
        """When to refresh a registration granted for `granted` seconds."""
        return max(1.0, granted / 2 if granted <= 120 else granted - 30)

    def retry_delay(self) -> float:
        return min(self.retry_max, self.retry_base * 2 ** max(0, self.failures - 1))

    async def _run(self) -> None:
        want = self.expires
        while True:
            if self.state != "registered":
                self._set_state("trying")
            try:
                resp = await self.register_once(want)
            except (OSError, ValueError, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError):
                    raise
                log.warning("REGISTER to %s failed: %s", self.registrar, exc)
                resp = None
            if resp is not None and 200 <= resp.status < 300:
                self.failures = 0
                self.granted = self._granted(resp, want)
                self._set_state("registered")
                await asyncio.sleep(self.refresh_delay(self.granted))
                continue
            if resp is not None and resp.status == 423:
                m = resp.headers.get("Min-Expires")
                if m and m.strip().isdigit() and int(m) > want:
                    want = int(m)
                    continue
            self.failures += 1
            if resp is not None:
                log.warning("REGISTER to %s: %s %s", self.registrar, resp.status, resp.reason)
            self._set_state("failed")
            await asyncio.sleep(self.retry_delay())

    def start(self) -> None:
        """Start registering in the background (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, unregister: bool = True) -> None:
        """Stop refreshing; send Expires: 0 first when registered."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if unregister and self.state == "registered":
            try:
                await self.register_once(0)
            except (OSError, ValueError) as exc:
                log.warning("unREGISTER failed: %s", exc)
        self._set_state("unregistered")
