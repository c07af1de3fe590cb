"""Registrar and location service (RFC 3261 §10.3, RFC 3327 Path, RFC 3581 received).

    reg = Registrar(domain="earshot.local", auth=DigestServer(...), min_expires=60, max_expires=3600)
    reg.on_change = lambda user, contacts: ...     # after every change, expiry included
    resp = reg.handle(register_request, source)     # a Response to send (401 challenge, 200 with bindings, 4xx)
    reg.lookup("1001") -> list[Contact]             # live bindings, best q first
    contact.target                                   # where to send: the REGISTER's source for NATed phones

The address-of-record is the To URI's user part. With `auth`, every REGISTER must carry digest
credentials for that same user (401 otherwise, 403 if they belong to someone else). A binding is
keyed by its Contact URI; a refresh must come with the same Call-ID and a higher CSeq, or a new
Call-ID (§10.3 step 7). `Expires: 0` with `Contact: *` removes every binding of the user.
Expired bindings are dropped lazily (lookup/handle) and by `expire()`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .auth import gate
from .message import Request, Response, SipError, make_response
from .transport import Target
from .uri import NameAddr, parse_name_addr_list

log = logging.getLogger("earshot.sip.registrar")


@dataclass
class Contact:
    """One binding of a user to a reachable URI."""
    uri: Any                       # SipUri (or AbsoluteUri for other schemes)
    expires_at: float              # on the registrar's clock (monotonic)
    call_id: str
    cseq: int
    q: float | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)      # Path header values: route to reach the phone
    source: Target | None = None   # where the REGISTER came from (received/rport): the NAT-safe target
    user_agent: str | None = None
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    @property
    def expires(self) -> int:
        """Seconds left (rounded up, >= 0)."""
        return max(0, int(self.expires_at - self.clock() + 0.999))

    @property
    def target(self) -> Target:
        """Where requests for this binding go: the REGISTER's source when known (NAT), else the URI."""
        if self.source is not None:
            return self.source
        uri = self.uri
        transport = getattr(uri, "transport", "udp") or "udp"
        if transport not in ("tcp", "tls"):
            transport = "udp"
        return Target(transport, uri.host, uri.port or (5061 if transport == "tls" else 5060))

    def header(self) -> str:
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items()
                         if k.lower() not in ("expires",))
        return f"<{self.uri}>{params};expires={self.expires}"


class Registrar:
    """In-memory location service answering REGISTER. See the module docstring."""

    def __init__(self, domain: str, auth: Any | None = None, *, min_expires: int = 60,
                 max_expires: int = 3600, default_expires: int = 3600, max_contacts: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < min_expires <= default_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        self.domain = domain
        self.auth = auth
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.max_contacts = max_contacts
        self.clock = clock
        self.on_change: Callable[[str, list[Contact]], None] | None = None
        self._bindings: dict[str, dict[str, Contact]] = {}

    # ---------------------------------------------------------------- queries
    def lookup(self, user: str) -> list[Contact]:
        """Live bindings of a user, highest q first."""
        self.expire()
        found = list(self._bindings.get(user, {}).values())
        found.sort(key=lambda c: -(c.q if c.q is not None else 1.0))
        return found

    def users(self) -> list[str]:
        self.expire()
        return sorted(self._bindings)

    def expire(self) -> None:
        """Drop expired bindings and report the users that changed."""
        now = self.clock()
        for user in list(self._bindings):
            contacts = self._bindings[user]
            gone = [k for k, c in contacts.items() if c.expires_at <= now]
            for k in gone:
                del contacts[k]
            if not contacts:
                del self._bindings[user]
            if gone:
                self._changed(user)

    def _changed(self, user: str) -> None:
        if self.on_change is not None:
            try:
                self.on_change(user, list(self._bindings.get(user, {}).values()))
            except Exception:
                log.exception("registrar on_change failed")

    # ---------------------------------------------------------------- REGISTER
    def handle(self, req: Request, source: Target | None = None) -> Response:
        """Process a REGISTER; always returns the response to send."""
        if req.method != "REGISTER":
            return make_response(req, 405, "Method Not Allowed")
        to = req.to
        user = getattr(to.uri, "user", None) if to is not None else None
        if not user:
            return make_response(req, 404, "Not Found")
        if self.auth is not None:
            denied = self._authenticate(req, source, user)
            if denied is not None:
                return denied
        try:
            return self._update(req, source, user)
        except SipError as exc:
            return make_response(req, 400, f"Bad Request ({getattr(exc, 'reason', exc)})")
        except (ValueError, TypeError) as exc:
            return make_response(req, 400, f"Bad Request ({exc})")

    def _authenticate(self, req: Request, source: Target | None, user: str) -> Response | None:
        proven, refusal = gate(self.auth, req, source.host if source is not None else "", make_response, user=user)
        if refusal is not None:
            return refusal
        if proven != user:
            return make_response(req, 403, "Forbidden (credentials are for another user)")
        return None

    def _expiry(self, value: str | None) -> int | None:
        if value is None:
            return None
        value = value.strip()
        if not value.isdigit():
            raise ValueError("bad expires value")
        return min(int(value), 2**32 - 1)

    def _update(self, req: Request, source: Target | None, user: str) -> Response:
        now = self.clock()
        header_expires = self._expiry(req.headers.get("Expires"))
        raw = req.headers.getall("Contact")
        call_id = req.call_id
        cseq = req.cseq[0]
        bindings = self._bindings.setdefault(user, {})
        changed = False
        if any(v.strip() == "*" for v in raw):
            # "*" only alone and with Expires: 0 (§10.3 step 6)
            if len(raw) != 1 or header_expires != 0:
                self._drop_empty(user)
                return make_response(req, 400, "Bad Request (* contact needs Expires: 0 and no other contact)")
            for key, c in list(bindings.items()):
                if c.call_id == call_id and cseq <= c.cseq:
                    self._drop_empty(user)
                    return make_response(req, 500, "Server Internal Error (CSeq out of order)")
            changed = bool(bindings)
            bindings.clear()
        else:
            addrs: list[NameAddr] = parse_name_addr_list(", ".join(raw)) if raw else []
            plans: list[tuple[str, NameAddr, int]] = []
            for addr in addrs:
                e = self._expiry(addr.params.get("expires"))
                expires = e if e is not None else header_expires
                if expires is None:
                    expires = self.default_expires
                if 0 < expires < self.min_expires:
                    self._drop_empty(user)
                    resp = make_response(req, 423, "Interval Too Brief")
                    resp.headers.set("Min-Expires", str(self.min_expires))
                    return resp
                plans.append((str(addr.uri), addr, min(expires, self.max_expires)))
            for key, addr, expires in plans:
                old = bindings.get(key)
                if old is not None and old.call_id == call_id and cseq <= old.cseq:
                    self._drop_empty(user)
                    return make_response(req, 500, "Server Internal Error (CSeq out of order)")
            for key, addr, expires in plans:
                if expires == 0:
                    if bindings.pop(key, None) is not None:
                        changed = True
                    continue
                if key not in bindings and len(bindings) >= self.max_contacts:
                    self._drop_empty(user)
                    return make_response(req, 403, "Forbidden (too many contacts)")
                q = addr.params.get("q")
                bindings[key] = Contact(
                    uri=addr.uri, expires_at=now + expires, call_id=call_id, cseq=cseq,
                    q=float(q) if q else None,
                    params={k: v for k, v in addr.params.items() if k.lower() != "expires"},
                    path=req.headers.getall("Path"), source=source,
                    user_agent=req.headers.get("User-Agent"), clock=self.clock)
                changed = True
        self._drop_empty(user)
        resp = make_response(req, 200, "OK")
        for c in self.lookup(user):
            resp.headers.add("Contact", c.header())
        if req.headers.getall("Path"):
            for p in req.headers.getall("Path"):
                resp.headers.add("Path", p)
        resp.headers.set("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()))
        if changed:
            log.info("registration of %s: %d contact(s)", user, len(self._bindings.get(user, {})))
            self._changed(user)
        return resp

    def _drop_empty(self, user: str) -> None:
        if user in self._bindings and not self._bindings[user]:
            del self._bindings[user]

    def remove_user(self, user: str) -> None:
        if self._bindings.pop(user, None):
            self._changed(user)


__all__ = ["Contact", "Registrar"]
