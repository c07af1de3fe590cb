"""SIP transactions (RFC 3261 §17, with RFC 6026's Accepted states).

    layer = TransactionLayer(transport, Timers(t1=0.5))
    layer.on_request = lambda req, txn, source: ...   # txn is None only for an ACK no transaction took
    layer.on_stray_response = lambda resp, source: ... # e.g. a 2xx retransmitted after the INVITE client txn ended
    txn = layer.send_request(req, target, on_response)  # on_response(resp, txn) for every response delivered
    final = await txn.final                              # first final response (a local 408/503 on timeout/error)
    stxn.respond(resp)                                   # server transaction: send and run the state machine

Client transactions retransmit over UDP (timers A/E), time out (B/F) with a local 408, send the ACK for
a non-2xx final response themselves and absorb retransmitted finals (D/K). Server transactions
send 100 Trying for an INVITE at once, absorb retransmitted requests by resending the last response,
retransmit a non-2xx final to an INVITE until the ACK (G/H, then I), and keep the request's branch
for J/L so retransmissions are absorbed. The 2xx to an INVITE is retransmitted by the UA core, not here.

Matching is by the top Via branch (RFC 3261 §17.1.3/§17.2.3); requests whose branch lacks the
`z9hG4bK` cookie (RFC 2543 peers, e.g. RFC 4475 badbranch.dat) match on Request-URI, From tag,
Call-ID, CSeq number and the top Via (§17.2.3's fallback). `len(layer)` counts live transactions.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable

from .message import Request, Response, make_response
from .transport import Target, Transport

log = logging.getLogger("earshot.sip.transaction")

MAGIC = "z9hG4bK"


@dataclass(frozen=True)
class Timers:
    """RFC 3261 timer bases (seconds). Tests shrink t1 to run fast."""
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def b(self) -> float:  # also F, H, J, L, M: 64*T1
        return 64 * self.t1


@dataclass
class LayerStats:
    client_retransmissions: int = 0
    server_retransmissions: int = 0
    absorbed_requests: int = 0
    timeouts: int = 0


def _is_3261(branch: str | None) -> bool:
    return bool(branch) and branch.startswith(MAGIC) and len(branch) > len(MAGIC)  # type: ignore[union-attr]


def server_key(req: Request) -> tuple:
    """The key a request matches a server transaction by (ACK maps to its INVITE)."""
    method = "INVITE" if req.method == "ACK" else req.method
    via = req.vias[0]
    if _is_3261(via.branch):
        return ("3261", via.branch, via.host.lower(), via.port, method)
    frm = req.from_
    return ("2543", str(req.uri), frm.tag if frm is not None else None, req.call_id, req.cseq[0],
            via.host.lower(), via.port, via.branch, method)


class _Timed:
    """The named RFC 3261 timers (A-K) of one transaction, on the loop's clock."""

    _timers: dict[str, asyncio.TimerHandle]

    def _set(self, name: str, delay: float, fn: Callable[[], None]) -> None:
        old = self._timers.pop(name, None)
        if old:
            old.cancel()
        self._timers[name] = asyncio.get_running_loop().call_later(delay, fn)

    def _cancel(self, *names: str) -> None:
        for n in names:
            h = self._timers.pop(n, None)
            if h:
                h.cancel()


class ClientTransaction(_Timed):
    """One request we sent and the responses to it (INVITE or non-INVITE state machine)."""

    def __init__(self, layer: "TransactionLayer", request: Request, target: Target,
                 on_response: Callable[[Response, "ClientTransaction"], None]) -> None:
        self.layer = layer
        self.request = request
        self.target = target
        self.on_response = on_response
        self.branch = request.vias[0].branch or ""
        self.method = request.method
        self.key = (self.branch, self.method)
        self.invite = request.method == "INVITE"
        self.reliable = target.transport != "udp"
        self.state = "calling" if self.invite else "trying"
        self.timed_out = False
        self.last_final: Response | None = None
        self.ack: Request | None = None
        self.final: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._interval = layer.timers.t1
        self._data = request.encode()


    def start(self) -> None:
        self.layer.transport.send(self._data, self.target)
        if not self.reliable:
            self._set("A", self._interval, self._retransmit)
        self._set("B", self.layer.timers.b, self._timeout)

    def _retransmit(self) -> None:
        if self.state not in ("calling", "trying", "proceeding"):
            return
        if self.invite and self.state != "calling":
            return
        self.layer.stats.client_retransmissions += 1
        self.layer.transport.send(self._data, self.target)
        t = self.layer.timers
        if self.invite:
            self._interval *= 2
        else:
            self._interval = t.t2 if self.state == "proceeding" else min(self._interval * 2, t.t2)
        self._set("A", self._interval, self._retransmit)

    def _timeout(self) -> None:
        if self.state in ("calling", "trying", "proceeding"):
            self.timed_out = True
            self.layer.stats.timeouts += 1
            self._deliver(make_response(self.request, 408, "Request Timeout"))
        self.terminate()

    def transport_error(self, exc: Exception) -> None:
        if self.state in ("calling", "trying", "proceeding"):
            self._deliver(make_response(self.request, 503, "Service Unavailable"))
            self.terminate()

    # -- responses
    def receive(self, resp: Response) -> None:
        code = resp.status
        if self.invite:
            if self.state in ("calling", "proceeding"):
                if code < 200:
                    self.state = "proceeding"
                    self._cancel("A")
                    self._deliver(resp)
                elif code < 300:
                    self.state = "accepted"  # RFC 6026: pass 2xx retransmissions to the TU for 64*T1
                    self._cancel("A", "B")
                    self._set("M", self.layer.timers.b, self.terminate)
                    self._deliver(resp)
                else:
                    self.state = "completed"
                    self._cancel("A", "B")
                    self._send_ack(resp)
                    # Timer D: 64*T1 = 32 s at the default T1 (RFC 3261 asks >= 32 s)
                    self._set("D", 0 if self.reliable else self.layer.timers.b, self.terminate)
                    self._deliver(resp)
            elif self.state == "accepted" and 200 <= code < 300:
                self._deliver(resp)
            elif self.state == "completed" and code >= 300:
                if self.ack is not None:
                    self.layer.transport.send(self.ack, self.target)
            return
        if self.state in ("trying", "proceeding"):
            if code < 200:
                self.state = "proceeding"
                self._deliver(resp)
            else:
                self.state = "completed"
                self._cancel("A", "B")
                self._deliver(resp)
                self._set("K", 0 if self.reliable else self.layer.timers.t4, self.terminate)

    def _send_ack(self, resp: Response) -> None:
        """ACK for a non-2xx final (§17.1.1.3): same branch, Request-URI, From, Call-ID, Route; To from resp."""
        req = self.request
        ack = Request("ACK", req.uri, req.headers.copy(), b"")
        for name in ("Content-Type", "Content-Length", "Authorization", "Proxy-Authorization",
                     "Contact", "Allow", "Supported", "Require", "Accept", "Content-Disposition"):
            ack.headers.remove(name)
        ack.headers.remove("Via")
        ack.headers.add("Via", req.headers.getall("Via")[0], first=True)
        to = resp.headers.get("To")
        if to is not None:
            ack.headers.set("To", to)
        ack.headers.set("CSeq", f"{req.cseq[0]} ACK")
        self.ack = ack
        self.layer.transport.send(ack, self.target)

    def _deliver(self, resp: Response) -> None:
        if resp.status >= 200:
            self.last_final = resp
            if not self.final.done():
                self.final.set_result(resp)
        try:
            self.on_response(resp, self)
        except Exception:
            log.exception("client transaction callback failed")

    def terminate(self) -> None:
        self._cancel(*list(self._timers))
        self.state = "terminated"
        self.layer._remove_client(self)
        if not self.final.done():
            self.final.cancel()


class ServerTransaction(_Timed):
    """One request we received and the responses we send to it."""

    def __init__(self, layer: "TransactionLayer", request: Request, source: Target, key: tuple) -> None:
        self.layer = layer
        self.request = request
        self.source = source
        self.key = key
        self.method = request.method
        self.invite = request.method == "INVITE"
        self.reliable = source.transport != "udp"
        self.state = "proceeding" if self.invite else "trying"
        self.last_response: Response | None = None
        self.on_terminated: Callable[["ServerTransaction"], None] | None = None
        self.on_ack_timeout: Callable[["ServerTransaction"], None] | None = None
        self.tu: object = None  # the UA core's object for this transaction (an IncomingCall)
        self._data: bytes | None = None
        self._target: Target | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._interval = layer.timers.t1


    @property
    def finished(self) -> bool:
        """True once a final response was sent."""
        return self.state not in ("proceeding", "trying")

    def respond(self, resp: Response) -> None:
        """Send a response and advance the state machine. Responses after the final one are ignored."""
        if self.finished:
            log.debug("response %s after final on %s ignored", resp.status, self.method)
            return
        self.last_response = resp
        self._data = resp.encode()
        self._target = self.layer.transport.send_response(resp, self.source)
        t = self.layer.timers
        code = resp.status
        if code < 200:
            if not self.invite:
                self.state = "proceeding"
            return
        if self.invite:
            if code < 300:
                self.state = "accepted"
                self._set("L", t.b, self.terminate)
            else:
                self.state = "completed"
                if not self.reliable:
                    self._set("G", self._interval, self._retransmit_final)
                self._set("H", t.b, self._ack_timeout)
        else:
            self.state = "completed"
            self._set("J", 0 if self.reliable else t.b, self.terminate)

    def _resend(self) -> None:
        if self._data is not None and self._target is not None:
            self.layer.stats.server_retransmissions += 1
            self.layer.transport.send(self._data, self._target)

    def _retransmit_final(self) -> None:
        if self.state != "completed":
            return
        self._resend()
        self._interval = min(self._interval * 2, self.layer.timers.t2)
        self._set("G", self._interval, self._retransmit_final)

    def _ack_timeout(self) -> None:
        if self.state == "completed" and self.on_ack_timeout:
            self.on_ack_timeout(self)
        self.terminate()

    def retransmitted(self, req: Request) -> None:
        """The same request again: resend the last response (absorb it in accepted/trying)."""
        self.layer.stats.absorbed_requests += 1
        if self.state in ("proceeding", "completed") and self.last_response is not None:
            self._resend()

    def ack(self, req: Request) -> None:
        if self.state == "completed":
            self.state = "confirmed"
            self._cancel("G", "H")
            self._set("I", 0 if self.reliable else self.layer.timers.t4, self.terminate)

    def terminate(self) -> None:
        self._cancel(*list(self._timers))
        if self.state == "terminated":
            return
        self.state = "terminated"
        self.layer._remove_server(self)
        if self.on_terminated:
            try:
                self.on_terminated(self)
            except Exception:
                log.exception("on_terminated failed")


class TransactionLayer:
    """The transaction table over one Transport. See the module docstring."""

    def __init__(self, transport: Transport, timers: Timers | None = None) -> None:
        self.transport = transport
        self.timers = timers or Timers()
        self.stats = LayerStats()
        self.clients: dict[tuple, ClientTransaction] = {}
        self.servers: dict[tuple, ServerTransaction] = {}
        self.on_request: Callable[[Request, ServerTransaction | None, Target], None] = \
            lambda req, txn, src: None
        self.on_stray_response: Callable[[Response, Target], None] = lambda resp, src: None
        # optional pre-check of new requests (RFC 4475 §3.3 answers); a Response means refuse statelessly
        self.validate: Callable[[Request], Response | None] | None = None
        # optional check of responses (§18.1.2: not our Via → drop); a string says why to drop
        self.response_filter: Callable[[Response], str | None] | None = None
        transport.on_message = self.receive
        transport.on_error = self._transport_error

    def __len__(self) -> int:
        return len(self.clients) + len(self.servers)

    # -- outgoing
    def send_request(self, req: Request, target: Target,
                     on_response: Callable[[Response, ClientTransaction], None] | None = None
                     ) -> ClientTransaction:
        """Start a client transaction. The request must carry its top Via (see Transport.via)."""
        if req.method == "ACK":
            raise ValueError("ACK is sent with send_stateless, not in a transaction")
        txn = ClientTransaction(self, req, target, on_response or (lambda r, t: None))
        if txn.key in self.clients:
            raise ValueError(f"a client transaction with branch {txn.branch} {req.method} exists")
        self.clients[txn.key] = txn
        txn.start()
        return txn

    def send_stateless(self, msg: Request | Response, target: Target) -> None:
        """Send without a transaction (the ACK for a 2xx, 2xx retransmissions)."""
        self.transport.send(msg, target)

    def find_invite(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL is for (§9.2)."""
        key = server_key(cancel)
        return self.servers.get(key[:-1] + ("INVITE",))

    # -- incoming
    def receive(self, msg: Request | Response, source: Target) -> None:
        if isinstance(msg, Response):
            if self.response_filter is not None:
                why = self.response_filter(msg)
                if why is not None:
                    log.info("response %s from %s dropped: %s", msg.status, source, why)
                    return
            try:
                vias = msg.vias
                if not vias:
                    return
                key = (vias[0].branch or "", msg.cseq[1])
            except Exception:
                return
            txn = self.clients.get(key)
            if txn is not None:
                txn.receive(msg)
            else:
                self.on_stray_response(msg, source)
            return
        try:
            key = server_key(msg)
        except Exception as exc:
            log.debug("no transaction key for %s: %s", msg.method, exc)
            return
        stxn = self.servers.get(key)
        if msg.method == "ACK":
            if stxn is not None and stxn.state in ("completed", "confirmed"):
                stxn.ack(msg)  # ACK for our non-2xx: the transaction absorbs it
                return
            self.on_request(msg, None, source)
            return
        if stxn is not None:
            stxn.retransmitted(msg)
            return
        if self.validate is not None:
            refusal = self.validate(msg)
            if refusal is not None:  # answered statelessly: no transaction for a refused request
                try:
                    self.transport.send_response(refusal, source)
                except Exception as exc:
                    log.debug("cannot send %s refusal: %s", refusal.status, exc)
                return
        stxn = ServerTransaction(self, msg, source, key)
        self.servers[key] = stxn
        if stxn.invite:
            stxn.respond(make_response(msg, 100, "Trying"))
        self.on_request(msg, stxn, source)

    def _transport_error(self, target: Target, exc: Exception) -> None:
        for txn in list(self.clients.values()):
            if txn.target == target:
                txn.transport_error(exc)

    def _remove_client(self, txn: ClientTransaction) -> None:
        if self.clients.get(txn.key) is txn:
            del self.clients[txn.key]

    def _remove_server(self, txn: ServerTransaction) -> None:
        if self.servers.get(txn.key) is txn:
            del self.servers[txn.key]

    def close(self) -> None:
        """Stop every timer and forget every transaction."""
        for c in list(self.clients.values()):
            c.terminate()
        for s in list(self.servers.values()):
            s.terminate()
