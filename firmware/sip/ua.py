"""The SIP user-agent core the switch sits on.

    ua = UserAgent(transport, domain="earshot.local", digest_server=auth, registrar=reg,
                   timers=Timers(), trusted_hosts={"192.0.2.10"})
    ua.on_invite = handler                      # handler(call: IncomingCall); may be async
    out = await ua.call("sip:1001@192.0.2.7", sdp_offer, from_user="earshot", auth=("user", "pw"))
    resp = await out.wait("answer")             # or "fail"; "provisional" for each 1xx
    await out.send_dtmf("5")                    # INFO application/dtmf-relay "Signal=5\\r\\nDuration=160"
    await out.hangup()                          # CANCEL before the answer, BYE after
    resp = await ua.send_request(register_req, target, auth=("user", "pw"))   # out-of-dialog, 401/407 answered

IncomingCall: `ringing(sdp=None)`, `progress(sdp)`, `answer(sdp)`, `reject(code, reason)`, `await hangup()`.
Both kinds of call: `await reinvite(sdp) -> Response`, `await send_dtmf(digits)`, `await request(method, ...)`,
`remote_sdp`, `local_sdp`, `state` ("early", "answered", "confirmed", "ended"), `reinvite_handler`
(offer bytes -> answer bytes, may be async; default: answer with `local_sdp`; raising ValueError gives 488).

Events (`await call.wait(name, timeout)` consumes them in order; `call.on_event(name, data)` sees them
all): "provisional", "answer", "fail" (outgoing); "ack", "cancelled" (incoming); "bye", "dtmf"
(data: (digit, duration_ms)), "reinvite" (the request), "info", "notify", "ended" (reason) on both.

Requests that RFC 4475 §3.3 says to refuse are answered by `validate.check_request` before any
transaction is made. INVITEs from sources not in `trusted_hosts` are challenged (407) when a
`digest_server` is given and `challenge_invite` is true. OPTIONS is answered 200; REGISTER goes to
the registrar (405 without one); in-dialog requests for unknown dialogs get 481.
The 2xx to an INVITE is retransmitted (T1 doubling to T2) until the ACK; without an ACK within
64*T1 the call is ended with a BYE.
"""
from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import socket
from typing import Any, Awaitable, Callable, Iterable

from . import validate
from .auth import DigestClient, gate
from .dialog import Dialog, DialogTable, new_call_id, new_tag
from .message import Headers, Request, Response, make_response
from .transaction import ClientTransaction, ServerTransaction, Timers, TransactionLayer
from .transport import Target, Transport, is_ip
from .uri import NameAddr, SipUri

log = logging.getLogger("earshot.sip.ua")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY, REGISTER, SUBSCRIBE"
KNOWN_METHODS = {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "NOTIFY", "REGISTER", "UPDATE",
                 "PRACK", "SUBSCRIBE", "REFER", "MESSAGE", "PUBLISH"}
DTMF_DIGITS = "0123456789*#ABCD"
INFO_TYPES = ("application/dtmf-relay", "application/dtmf", "application/sdp")
_SIGNAL_CODES = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}

Auth = tuple[str, str] | DigestClient | None


def _client(auth: Auth) -> DigestClient | None:
    if auth is None or isinstance(auth, DigestClient):
        return auth
    return DigestClient(auth[0], auth[1])


class Call:
    """What incoming and outgoing calls share: the dialog, events, in-dialog requests."""

    def __init__(self, ua: "UserAgent", call_id: str) -> None:
        self.ua = ua
        self.call_id = call_id
        self.dialog: Dialog | None = None
        self.state = "early"
        self.local_sdp: bytes = b""
        self.remote_sdp: bytes = b""
        self.credentials: DigestClient | None = None
        self.events: list[tuple[str, Any]] = []
        self.on_event: Callable[[str, Any], None] | None = None
        self.reinvite_handler: Callable[[bytes], bytes | Awaitable[bytes]] | None = None
        self._queues: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._waiters: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._invite_pending = False   # an INVITE transaction of ours or theirs is in progress
        self._retx: asyncio.TimerHandle | None = None
        self._retx_response: Response | None = None
        self._retx_target: Target | None = None
        self._retx_cseq = 0
        self._retx_started = 0.0
        self._retx_interval = 0.0
        self._bye_after_ack = False
        self._last_ack: tuple[Request, Target] | None = None   # re-sent for retransmitted 2xx
        self.ended = asyncio.get_running_loop().create_future()

    # ------------------------------------------------------------------ events
    def _emit(self, name: str, data: Any = None) -> None:
        self.events.append((name, data))
        waiters = self._waiters[name]
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(data)
                break
        else:
            self._queues[name].append(data)
        if self.on_event is not None:
            try:
                self.on_event(name, data)
            except Exception:
                log.exception("call event handler failed")

    async def wait(self, name: str, timeout: float | None = None) -> Any:
        """The data of the next not-yet-consumed `name` event (waits for it)."""
        q = self._queues[name]
        if q:
            return q.popleft()
        fut = asyncio.get_running_loop().create_future()
        self._waiters[name].append(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            if fut in self._waiters[name]:
                self._waiters[name].remove(fut)

    # ------------------------------------------------------------------ ending
    def _end(self, reason: str) -> None:
        if self.state == "ended":
            return
        self.state = "ended"
        self._stop_2xx()
        if self.dialog is not None:
            self.dialog.state = "terminated"
            self.ua.dialogs.remove(self.dialog)
        self.ua.calls.discard(self)
        if not self.ended.done():
            self.ended.set_result(reason)
        self._emit("ended", reason)

    async def _send_bye(self) -> Response | None:
        """Send BYE; the call ends as soon as it is sent (§15.1.1), the response is returned."""
        if self.dialog is None or self.state == "ended":
            return None
        bye = asyncio.ensure_future(self.request("BYE"))
        await asyncio.sleep(0)  # the task builds and sends the BYE in its first step
        self._end("local bye")
        return await bye

    # ------------------------------------------------------------------ in-dialog requests out
    async def request(self, method: str, body: bytes = b"", content_type: str | None = None,
                      headers: dict[str, str] | None = None) -> Response:
        """Send an in-dialog non-INVITE request and return its final response."""
        if self.dialog is None:
            raise RuntimeError("no dialog yet")
        dialog = self.dialog

        def build() -> Request:
            return dialog.request(method, body=body, content_type=content_type, headers=headers)
        resp, _ = await self.ua._send_built(build, self.ua._dialog_target(dialog), self.credentials)
        if resp.status in (408, 481):
            # the dialog is gone on the other side (§12.2.1.2)
            if method != "BYE":
                self._end(f"{method} got {resp.status}")
        return resp

    async def send_dtmf(self, digits: str, duration: int = 160) -> None:
        """Send each digit as an INFO with application/dtmf-relay (Signal/Duration)."""
        for d in digits:
            if d.upper() not in DTMF_DIGITS:
                raise ValueError(f"not a DTMF digit: {d!r}")
        if not 0 < duration <= 60000:
            raise ValueError(f"DTMF duration {duration} ms out of range")
        for d in digits:
            resp = await self.request("INFO", f"Signal={d.upper()}\r\nDuration={duration}\r\n".encode(),
                                      "application/dtmf-relay")
            if resp.status >= 300:
                raise RuntimeError(f"INFO for DTMF {d!r} refused: {resp.status} {resp.reason}")

    async def reinvite(self, sdp: bytes) -> Response:
        """Send a re-INVITE with a new offer; on 2xx the answer becomes remote_sdp and the ACK goes out."""
        if self.dialog is None or self.state not in ("confirmed", "answered"):
            raise RuntimeError("re-INVITE needs a confirmed dialog")
        if self._invite_pending:
            raise RuntimeError("an INVITE transaction is already in progress on this call")
        dialog = self.dialog
        self._invite_pending = True
        try:
            def build() -> Request:
                return dialog.request("INVITE", body=sdp, content_type="application/sdp")
            resp, req = await self.ua._send_built(build, self.ua._dialog_target(dialog), self.credentials,
                                                  on_response=self._reack)
        finally:
            self._invite_pending = False
        if 200 <= resp.status < 300:
            dialog.refresh_target(resp)
            self.local_sdp = sdp
            if resp.body:
                self.remote_sdp = resp.body
            ack = dialog.request("ACK", cseq=req.cseq[0])
            self._send_ack(ack, self.ua._dialog_target(dialog))
        elif resp.status in (408, 481):
            await self._send_bye()
        return resp

    def _send_ack(self, ack: Request, target: Target) -> None:
        self.ua._add_via(ack, target)
        self._last_ack = (ack, target)
        self.ua.transport.send(ack, target)

    def _reack(self, resp: Response, txn: ClientTransaction | None = None) -> None:
        """A 2xx to our INVITE came again: send the same ACK again (§13.2.2.4)."""
        if self._last_ack is not None and 200 <= resp.status < 300 and resp.cseq[0] == self._last_ack[0].cseq[0]:
            self.ua.transport.send(*self._last_ack)

    # ------------------------------------------------------------------ in-dialog requests in
    def _on_request(self, req: Request, stxn: ServerTransaction) -> None:
        dialog = self.dialog
        assert dialog is not None
        if not dialog.accept_remote_cseq(req):
            stxn.respond(make_response(req, 500, "Server Internal Error (CSeq out of order)"))
            return
        m = req.method
        if m == "BYE":
            stxn.respond(self.ua._response(req, 200))
            self._on_bye(req)
        elif m == "INVITE":
            self._on_reinvite(req, stxn)
        elif m == "INFO":
            stxn.respond(self.ua._response(req, 200))
            self._on_info(req)
        elif m == "OPTIONS":
            stxn.respond(self.ua._options_response(req))
        elif m == "NOTIFY":
            stxn.respond(self.ua._response(req, 200))
            self._emit("notify", req)
        elif m in KNOWN_METHODS:
            resp = self.ua._response(req, 405)
            resp.headers.set("Allow", ALLOW)
            stxn.respond(resp)
        else:
            stxn.respond(self.ua._response(req, 501))

    def _on_bye(self, req: Request) -> None:
        self._emit("bye", req)
        self._end("remote bye")

    def _on_info(self, req: Request) -> None:
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype == "application/dtmf-relay":
            fields = {}
            for line in req.body.decode("ascii", "replace").splitlines():
                k, _, v = line.partition("=")
                fields[k.strip().lower()] = v.strip()
            sig = fields.get("signal", "")
            digit = _SIGNAL_CODES.get(sig, sig.upper())
            try:
                duration = int(fields.get("duration", "160"))
            except ValueError:
                duration = 160
            if len(digit) == 1 and digit in DTMF_DIGITS:
                self._emit("dtmf", (digit, duration))
                return
        elif ctype == "application/dtmf":
            digit = req.body.decode("ascii", "replace").strip().upper()
            if len(digit) == 1 and digit in DTMF_DIGITS:
                self._emit("dtmf", (digit, 160))
                return
        self._emit("info", req)

    def _on_reinvite(self, req: Request, stxn: ServerTransaction) -> None:
        if self._invite_pending or self._retx is not None:
            resp = self.ua._response(req, 491, "Request Pending")
            stxn.respond(resp)
            return
        self._invite_pending = True
        self._emit("reinvite", req)
        asyncio.get_running_loop().create_task(self._answer_reinvite(req, stxn))

    async def _answer_reinvite(self, req: Request, stxn: ServerTransaction) -> None:
        try:
            answer = self.local_sdp
            if self.reinvite_handler is not None:
                got = self.reinvite_handler(req.body)
                answer = await got if inspect.isawaitable(got) else got  # type: ignore[assignment]
        except ValueError as exc:  # NoCommonCodec / SdpError are ValueErrors
            self._invite_pending = False
            stxn.respond(self.ua._response(req, 488, f"Not Acceptable Here ({exc})"[:80]))
            return
        except Exception:
            log.exception("reinvite handler failed")
            self._invite_pending = False
            stxn.respond(self.ua._response(req, 500))
            return
        assert self.dialog is not None
        self.dialog.refresh_target(req)
        if req.body:
            self.remote_sdp = req.body
        self.local_sdp = answer
        self._invite_pending = False
        self._send_2xx(req, stxn, answer)

    # ------------------------------------------------------------------ 2xx retransmission (UAS core)
    def _send_2xx(self, req: Request, stxn: ServerTransaction, sdp: bytes) -> None:
        assert self.dialog is not None
        resp = self.ua._response(req, 200, to_tag=self.dialog.local_tag, contact=True, body=sdp)
        stxn.respond(resp)
        self._retx_response = resp
        self._retx_target = stxn._target
        self._retx_cseq = req.cseq[0]
        loop = asyncio.get_running_loop()
        self._retx_started = loop.time()
        self._retx_interval = self.ua.timers.t1
        if stxn.reliable:
            self._retx = loop.call_later(self.ua.timers.b, self._ack_timeout)
        else:
            self._retx = loop.call_later(self._retx_interval, self._retransmit_2xx)

    def _retransmit_2xx(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._retx_started >= self.ua.timers.b:
            self._ack_timeout()
            return
        if self._retx_response is not None and self._retx_target is not None:
            self.ua.stats_2xx_retransmissions += 1
            self.ua.transport.send(self._retx_response, self._retx_target)
        self._retx_interval = min(self._retx_interval * 2, self.ua.timers.t2)
        self._retx = loop.call_later(self._retx_interval, self._retransmit_2xx)

    def _stop_2xx(self) -> None:
        if self._retx is not None:
            self._retx.cancel()
        self._retx = None
        self._retx_response = None

    def _ack_timeout(self) -> None:
        self._retx = None
        log.info("no ACK for the 2xx on call %s: hanging up", self.call_id)
        self._stop_2xx()
        asyncio.get_running_loop().create_task(self._send_bye())

    def _on_ack(self, req: Request) -> None:
        if self._retx_response is None or req.cseq[0] != self._retx_cseq:
            return  # a retransmitted ACK, or one for an INVITE we no longer track
        self._stop_2xx()
        if req.body:
            self.remote_sdp = req.body
        if self.state == "answered":
            self.state = "confirmed"
        if self.dialog is not None:
            self.dialog.state = "confirmed"
        self._emit("ack", req)
        if self._bye_after_ack:
            asyncio.get_running_loop().create_task(self._send_bye())


class IncomingCall(Call):
    """A call someone placed to us. Answer, reject, ring, hang up; see the module docstring."""

    def __init__(self, ua: "UserAgent", invite: Request, stxn: ServerTransaction, source: Target,
                 auth_user: str | None) -> None:
        super().__init__(ua, invite.call_id)
        self.invite = invite
        self.source = source
        self.auth_user = auth_user
        self.stxn = stxn
        self.remote_sdp = invite.body
        self.dialog = Dialog.as_uas(invite, new_tag(), ua.contact(source.transport))
        self.dialog.owner = self
        ua.dialogs.add(self.dialog)
        stxn.on_terminated = self._txn_gone

    @property
    def from_(self) -> NameAddr:
        return self.invite.from_

    @property
    def to(self) -> NameAddr:
        return self.invite.to

    def _txn_gone(self, stxn: ServerTransaction) -> None:
        # the INVITE transaction ended without our final answer (should not happen) → clean up
        if self.state == "early" and not stxn.finished:
            self._end("transaction ended")

    def _provisional(self, code: int, reason: str | None, sdp: bytes | None) -> None:
        if self.state != "early" or self.stxn.finished:
            raise RuntimeError(f"call is {self.state}: cannot send {code}")
        if sdp:
            self.local_sdp = sdp
        assert self.dialog is not None
        self.stxn.respond(self.ua._response(self.invite, code, reason, to_tag=self.dialog.local_tag,
                                            contact=True, body=sdp or b""))

    def ringing(self, sdp: bytes | None = None) -> None:
        """180 Ringing (with early media SDP when given)."""
        self._provisional(180, "Ringing", sdp)

    def progress(self, sdp: bytes) -> None:
        """183 Session Progress with early media."""
        self._provisional(183, "Session Progress", sdp)

    def answer(self, sdp: bytes) -> None:
        """200 OK with our SDP; retransmitted until the ACK (event "ack")."""
        if self.state != "early" or self.stxn.finished:
            raise RuntimeError(f"call is {self.state}: cannot answer")
        self.local_sdp = sdp
        self.state = "answered"
        self._send_2xx(self.invite, self.stxn, sdp)

    def reject(self, code: int = 486, reason: str | None = None, headers: dict[str, str] | None = None) -> None:
        """A final 3xx–6xx; the transaction takes care of its retransmission and the ACK."""
        if not 300 <= code <= 699:
            raise ValueError(f"reject needs a 3xx-6xx code, not {code}")
        if self.state != "early" or self.stxn.finished:
            raise RuntimeError(f"call is {self.state}: cannot reject")
        assert self.dialog is not None
        resp = self.ua._response(self.invite, code, reason, to_tag=self.dialog.local_tag)
        for k, v in (headers or {}).items():
            resp.headers.set(k, v)
        self.stxn.respond(resp)
        self._end(f"rejected {code}")

    async def hangup(self) -> Response | None:
        """Reject (480) before the answer; BYE after it (after the ACK if it is still due).
        Returns the BYE's final response when one was sent right away."""
        if self.state == "early":
            self.reject(480, "Temporarily Unavailable")
        elif self.state == "answered" and self._retx_response is not None:
            self._bye_after_ack = True  # §15: the callee waits for the ACK (or its timeout) before BYE
            await asyncio.shield(self.ended)
        elif self.state in ("answered", "confirmed"):
            return await self._send_bye()
        return None

    def _on_cancel(self, cancel: Request) -> None:
        if self.state != "early" or self.stxn.finished:
            return
        assert self.dialog is not None
        self.stxn.respond(self.ua._response(self.invite, 487, "Request Terminated", to_tag=self.dialog.local_tag))
        self._emit("cancelled", cancel)
        self._end("cancelled")

    def _on_bye(self, req: Request) -> None:
        if not self.stxn.finished:
            assert self.dialog is not None
            self.stxn.respond(self.ua._response(self.invite, 487, "Request Terminated",
                                                to_tag=self.dialog.local_tag))
        super()._on_bye(req)


class OutgoingCall(Call):
    """A call we placed. Events "provisional", "answer", "fail"; cancel/hangup; see the module docstring."""

    def __init__(self, ua: "UserAgent", invite: Request, target: Target, credentials: DigestClient | None) -> None:
        super().__init__(ua, invite.call_id)
        self.invite = invite
        self.target = target
        self.credentials = credentials
        self.local_sdp = invite.body
        self.final: Response | None = None
        self._txn: ClientTransaction | None = None
        self._provisional_seen = False
        self._cancel_requested = False
        self._auth_tries = 0
        self._invite_pending = True

    def _send(self) -> None:
        self.ua._add_via(self.invite, self.target)
        self._txn = self.ua.layer.send_request(self.invite, self.target, self._on_response)

    def _on_response(self, resp: Response, txn: ClientTransaction) -> None:
        code = resp.status
        if code < 200:
            if code > 100:
                self._provisional_seen = True
                if resp.body:
                    self.remote_sdp = resp.body
                self._emit("provisional", resp)
            if self._cancel_requested and self.state == "early":
                self._send_cancel()
            return
        if code < 300:
            self._on_2xx(resp)
            return
        if code in (401, 407) and self.credentials is not None and self._auth_tries < 2 \
                and not self._cancel_requested:
            self._auth_tries += 1
            retry = self.ua._authorized_copy(self.invite, resp, self.credentials)
            if retry is not None:
                self.invite = retry
                self._send()
                return
        self._invite_pending = False
        if self.state == "early":
            self.final = resp
            self._emit("fail", resp)
            self._end(f"failed {code}")

    def _on_2xx(self, resp: Response) -> None:
        if (self.dialog is not None and resp.to.tag != self.dialog.remote_tag) or \
                (self.dialog is None and self.state == "ended"):
            # a forked second answer, or one after we gave up: acknowledge and release it (§13.2.2.4)
            extra = Dialog.as_uac(self.invite, resp, self.ua.contact(self.target.transport))
            ack = extra.request("ACK", cseq=self.invite.cseq[0])
            target = self.ua._dialog_target(extra)
            self.ua._add_via(ack, target)
            self.ua.transport.send(ack, target)
            bye = extra.request("BYE")
            self.ua._add_via(bye, target)
            self.ua.layer.send_request(bye, target)
            return
        if self.dialog is None:
            self.dialog = Dialog.as_uac(self.invite, resp, self.ua.contact(self.target.transport))
            self.dialog.owner = self
            self.ua.dialogs.add(self.dialog)
            self._send_ack(self.dialog.request("ACK", cseq=self.invite.cseq[0]),
                           self.ua._dialog_target(self.dialog))
        else:
            self._reack(resp)  # a retransmitted 2xx
        if self.state != "early":
            return
        self._invite_pending = False
        self.final = resp
        self.remote_sdp = resp.body
        self.state = "confirmed"
        self._emit("answer", resp)
        if self._cancel_requested:
            asyncio.get_running_loop().create_task(self._send_bye())

    def _send_cancel(self) -> None:
        if self._txn is None or self._txn.state not in ("calling", "proceeding"):
            return
        inv = self.invite
        h = Headers()
        h.add("Via", inv.headers.getall("Via")[0])
        for r in inv.headers.getall("Route"):
            h.add("Route", r)
        h.set("Max-Forwards", "70")
        h.set("From", inv.headers.get("From") or "")
        h.set("To", inv.headers.get("To") or "")
        h.set("Call-ID", inv.call_id)
        h.set("CSeq", f"{inv.cseq[0]} CANCEL")
        self.ua.layer.send_request(Request("CANCEL", inv.uri, h, b""), self.target)

    async def cancel(self) -> None:
        """CANCEL the INVITE (sent once a provisional response has arrived, §9.1)."""
        if self.state != "early":
            return
        self._cancel_requested = True
        if self._provisional_seen:
            self._send_cancel()

    async def hangup(self) -> Response | None:
        """CANCEL before the answer, BYE after it (returns the BYE's final response)."""
        if self.state == "early":
            await self.cancel()
        elif self.state in ("confirmed", "answered"):
            return await self._send_bye()
        return None


class UserAgent:
    """SIP UA core over one Transport. See the module docstring."""

    def __init__(self, transport: Transport, *, domain: str, digest_server: Any | None = None,
                 registrar: Any | None = None, timers: Timers | None = None,
                 trusted_hosts: Iterable[str] = (), challenge_invite: bool = True,
                 user_agent: str = "Earshot", contact_user: str = "earshot") -> None:
        self.transport = transport
        self.domain = domain
        self.digest_server = digest_server
        self.registrar = registrar
        self.timers = timers or Timers()
        self.trusted_hosts = set(trusted_hosts)
        self.challenge_invite = challenge_invite
        self.user_agent = user_agent
        self.contact_user = contact_user
        self.layer = TransactionLayer(transport, self.timers)
        self.layer.on_request = self._on_request
        self.layer.on_stray_response = self._on_stray_response
        self.layer.validate = self._validate
        self.layer.response_filter = self._check_response
        self.dialogs = DialogTable()
        self.calls: set[Call] = set()
        self.on_invite: Callable[[IncomingCall], Any] | None = None
        self.on_request: Callable[[Request, ServerTransaction, Target], bool] | None = None
        self.stats_2xx_retransmissions = 0
        self._resolved: dict[str, str] = {}
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ helpers
    def contact(self, transport: str = "udp", user: str | None = None) -> str:
        t = f";transport={transport}" if transport in ("tcp", "tls") else ""
        port = self.transport.port
        if transport == "tls" and self.transport.tls_port:
            port = self.transport.tls_port  # where new TLS connections to us go
        return f"<sip:{user or self.contact_user}@{self.transport.advertised_host}:{port}{t}>"

    def _response(self, req: Request, code: int, reason: str | None = None, *, to_tag: str | None = None,
                  contact: bool = False, body: bytes = b"") -> Response:
        resp = make_response(req, code, reason, to_tag=to_tag)
        resp.headers.set("Server", self.user_agent)
        if contact:
            resp.headers.set("Contact", self.contact(self._transport_of(req)))
        if code < 300 and req.method == "INVITE":
            resp.headers.set("Allow", ALLOW)
        if body:
            resp.headers.set("Content-Type", "application/sdp")
            resp.body = body
        return resp

    @staticmethod
    def _transport_of(req: Request) -> str:
        try:
            t = req.vias[0].transport.lower()
            return t if t in ("tcp", "tls") else "udp"
        except Exception:
            return "udp"

    def _options_response(self, req: Request) -> Response:
        resp = self._response(req, 200)
        resp.headers.set("Allow", ALLOW)
        resp.headers.set("Accept", "application/sdp")
        return resp

    def _add_via(self, req: Request, target: Target) -> None:
        req.headers.remove("Via")
        req.headers.add("Via", str(self.transport.via(target.transport, self.transport.new_branch())), first=True)

    def _resolve_sync(self, host: str) -> str:
        if is_ip(host):
            return host
        if host not in self._resolved:
            self._resolved[host] = socket.gethostbyname(host)  # only reached for names not resolved before
        return self._resolved[host]

    async def resolve(self, uri: SipUri | str) -> Target:
        """Target for a SIP URI (no SRV/NAPTR: host, port or 5060/5061 for TLS, ;transport=, sips:)."""
        if isinstance(uri, str):
            uri = SipUri.parse(uri)
        host = uri.params.get("maddr") or uri.host
        if not is_ip(host) and host not in self._resolved:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, family=socket.AF_INET)
            self._resolved[host] = infos[0][4][0]
        return self._target(uri, host)

    def _target(self, uri: SipUri, host: str) -> Target:
        """Target for a URI whose host is resolved; TLS keeps the name for the certificate check."""
        transport = uri.transport or "udp"
        if transport not in ("tcp", "tls"):
            transport = "udp"
        ip = self._resolve_sync(host)
        port = uri.port or (5061 if transport == "tls" else 5060)
        if transport == "tls" and not is_ip(host):
            self.transport.tls_names[(ip, port)] = host
        return Target(transport, ip, port)

    def _dialog_target(self, dialog: Dialog) -> Target:
        uri = dialog.next_hop_uri()
        host = uri.params.get("maddr") or uri.host
        return self._target(uri, host)

    def _authorized_copy(self, req: Request, challenge: Response, client: DigestClient) -> Request | None:
        """The request again with credentials for the challenge, next CSeq, new branch."""
        name = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
        values = challenge.headers.getall(name)
        if not values:
            return None
        try:
            chosen = client.choose(values)
            value = client.authorization(chosen, req.method, str(req.uri), req.body)
        except ValueError as exc:
            log.info("cannot answer %s challenge: %s", challenge.status, exc)
            return None
        h = req.headers.copy()
        h.set("Authorization" if challenge.status == 401 else "Proxy-Authorization", value)
        h.set("CSeq", f"{req.cseq[0] + 1} {req.method}")
        return Request(req.method, req.uri, h, req.body)

    async def _send_built(self, build: Callable[[], Request], target: Target,
                          credentials: DigestClient | None,
                          on_response: Callable[[Response, ClientTransaction], None] | None = None
                          ) -> tuple[Response, Request]:
        req = build()
        for attempt in range(3):
            self._add_via(req, target)
            txn = self.layer.send_request(req, target, on_response)
            try:
                resp = await asyncio.shield(txn.final)
            except asyncio.CancelledError:
                raise
            if resp.status in (401, 407) and credentials is not None and attempt < 2:
                retry = self._authorized_copy(req, resp, credentials)
                if retry is not None:
                    dialog = self._dialog_of(req)
                    if dialog is not None:  # keep the dialog's CSeq space in step
                        dialog.local_cseq = retry.cseq[0]
                    req = retry
                    continue
            return resp, req
        return resp, req

    def _dialog_of(self, req: Request) -> Dialog | None:
        to_tag = req.to.tag if req.to is not None else None
        if not to_tag:
            return None
        return self.dialogs.get((req.call_id, req.from_.tag or "", to_tag))

    async def send_request(self, req: Request, target: Target | None = None, *, auth: Auth = None) -> Response:
        """Send an out-of-dialog non-INVITE request (REGISTER, OPTIONS, MESSAGE…); answers 401/407 with auth.

        The request's CSeq is bumped on each authenticated retry; the final response says which was used.
        """
        if target is None:
            target = await self.resolve(req.uri)  # type: ignore[arg-type]
        resp, _ = await self._send_built(lambda: req, target, _client(auth))
        return resp

    # ------------------------------------------------------------------ outgoing calls
    async def call(self, uri: str, sdp: bytes, *, from_user: str = "earshot", display: str | None = None,
                   headers: dict[str, str] | None = None, auth: Auth = None,
                   target: Target | None = None, proxy: str | None = None) -> OutgoingCall:
        """Send an INVITE with an SDP offer and return the OutgoingCall (events follow)."""
        ruri = SipUri.parse(uri)
        if target is None:
            target = await self.resolve(SipUri.parse(proxy) if proxy else ruri)
        h = Headers()
        h.set("Max-Forwards", "70")
        name = f'"{display}" ' if display else ""
        h.set("From", f"{name}<sip:{from_user}@{self.domain}>;tag={new_tag()}")
        h.set("To", f"<{uri}>")
        h.set("Call-ID", new_call_id(self.transport.advertised_host))
        h.set("CSeq", "1 INVITE")
        h.set("Contact", self.contact(target.transport, from_user))
        h.set("Allow", ALLOW)
        h.set("User-Agent", self.user_agent)
        if proxy:
            h.add("Route", f"<{proxy};lr>" if ";lr" not in proxy else f"<{proxy}>")
        for k, v in (headers or {}).items():
            h.set(k, v)
        if sdp:
            h.set("Content-Type", "application/sdp")
        invite = Request("INVITE", ruri, h, sdp)
        call = OutgoingCall(self, invite, target, _client(auth))
        self.calls.add(call)
        call._send()
        return call

    # ------------------------------------------------------------------ incoming
    def _validate(self, req: Request) -> Response | None:
        types = INFO_TYPES if req.method == "INFO" else ("application/sdp",)
        try:
            return validate.check_request(req, accept_types=types)
        except Exception as exc:
            log.warning("validate.check_request raised %r for %s", exc, req.method)
            return None

    def _check_response(self, resp: Response) -> str | None:
        host, port = self.transport.advertised_host, self.transport.port
        ours = [f"{host}:{port}", host if port == 5060 else f"{host}:{port}"]
        tls_port = self.transport.tls_port
        if tls_port:
            ours += [f"{host}:{tls_port}", host if tls_port == 5061 else f"{host}:{tls_port}"]
        try:
            return validate.check_response(resp, ours)
        except Exception as exc:
            return f"unreadable ({exc})"

    def _on_stray_response(self, resp: Response, source: Target) -> None:
        # a 2xx retransmitted after the INVITE client transaction ended: ACK it again
        try:
            if not (200 <= resp.status < 300) or resp.cseq[1] != "INVITE":
                return
        except ValueError:  # SipError: unreadable CSeq
            return
        call = self._call_of(self.dialogs.match_response(resp))
        if call is not None:
            call._reack(resp)

    def _on_request(self, req: Request, stxn: ServerTransaction | None, source: Target) -> None:
        if stxn is None:  # ACK for a 2xx (or a stray one)
            call = self._call_of(self.dialogs.match_request(req))
            if call is not None:
                call._on_ack(req)
            return
        m = req.method
        if m == "CANCEL":
            self._on_cancel(req, stxn)
            return
        to_tag = req.to.tag if req.to is not None else None
        if to_tag:
            dialog = self.dialogs.match_request(req)
            call = self._call_of(dialog)
            owner = dialog.owner if dialog is not None else None
            if call is not None:
                call._on_request(req, stxn)
            elif hasattr(owner, "on_dialog_request"):     # a subscription (dialog_event)
                owner.on_dialog_request(req, stxn)
            else:
                stxn.respond(self._response(req, 481, "Call/Transaction Does Not Exist"))
            return
        if self.on_request is not None:
            try:
                if self.on_request(req, stxn, source):
                    return
            except Exception:
                log.exception("on_request hook failed")
        if m == "INVITE":
            self._on_invite(req, stxn, source)
        elif m == "OPTIONS":
            stxn.respond(self._options_response(req))
        elif m == "REGISTER":
            if self.registrar is None:
                resp = self._response(req, 405)
                resp.headers.set("Allow", ALLOW.replace(", REGISTER", ""))
                stxn.respond(resp)
            else:
                stxn.respond(self.registrar.handle(req, source))
        elif m in ("BYE", "INFO", "NOTIFY", "UPDATE", "PRACK"):
            stxn.respond(self._response(req, 481, "Call/Transaction Does Not Exist"))
        elif m in KNOWN_METHODS:
            resp = self._response(req, 405)
            resp.headers.set("Allow", ALLOW)
            stxn.respond(resp)
        else:
            resp = self._response(req, 501)
            resp.headers.set("Allow", ALLOW)
            stxn.respond(resp)

    @staticmethod
    def _call_of(dialog: Dialog | None) -> Call | None:
        owner = dialog.owner if dialog is not None else None
        return owner if isinstance(owner, Call) and owner.state != "ended" else None

    def _on_cancel(self, cancel: Request, stxn: ServerTransaction) -> None:
        inv = self.layer.find_invite(cancel)
        if inv is None:
            stxn.respond(self._response(cancel, 481, "Call/Transaction Does Not Exist"))
            return
        stxn.respond(self._response(cancel, 200))
        call = getattr(inv, "tu", None)
        if isinstance(call, IncomingCall):
            call._on_cancel(cancel)
        elif not inv.finished:
            inv.respond(self._response(inv.request, 487, "Request Terminated", to_tag=new_tag()))

    def _check_invite_auth(self, req: Request, stxn: ServerTransaction, source: Target) -> tuple[bool, str | None]:
        if self.digest_server is None or not self.challenge_invite or source.host in self.trusted_hosts:
            return True, None
        user, refusal = gate(self.digest_server, req, source.host,
                             lambda r, code, reason: self._response(r, code, reason, to_tag=new_tag()), proxy=True)
        if refusal is not None:
            stxn.respond(refusal)
            return False, None
        return True, user

    def _on_invite(self, req: Request, stxn: ServerTransaction, source: Target) -> None:
        ok, user = self._check_invite_auth(req, stxn, source)
        if not ok:
            return
        if self.on_invite is None:
            stxn.respond(self._response(req, 480, "Temporarily Unavailable", to_tag=new_tag()))
            return
        call = IncomingCall(self, req, stxn, source, user)
        stxn.tu = call  # type: ignore[attr-defined]
        self.calls.add(call)
        try:
            result = self.on_invite(call)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(lambda t, call=call: self._task_done(t, call))
        except Exception:
            log.exception("on_invite handler failed")
            self._unanswered_500(call)

    def _task_done(self, task: asyncio.Task, call: IncomingCall) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("on_invite task failed", exc_info=task.exception())
            self._unanswered_500(call)

    @staticmethod
    def _unanswered_500(call: IncomingCall) -> None:
        """A handler that failed must not leave the caller retransmitting into silence."""
        if call.state == "early" and not call.stxn.finished:
            call.reject(500, "Server Internal Error")

    async def close(self) -> None:
        """End every call without signalling, stop all transactions, close the transport."""
        for call in list(self.calls):
            call._end("shutdown")
        for t in list(self._tasks):
            t.cancel()
        self.layer.close()
        await self.transport.close()
