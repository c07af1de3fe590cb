"""SIP dialogs (RFC 3261 §12): identity, route set, CSeq spaces, remote target, in-dialog requests.

    d = Dialog.as_uac(invite, response_2xx_or_1xx_with_tag, local_contact)
    d = Dialog.as_uas(invite, local_tag, local_contact)
    req = d.request("BYE")            # Route, Request-URI, From/To tags, Call-ID, next local CSeq; no Via
    d.accept_remote_cseq(req)         # False when the CSeq goes backwards (answer 500)
    d.refresh_target(msg)             # new Contact from a target-refresh request or its 2xx
    table = DialogTable(); table.add(d); table.match_request(req); table.remove(d); len(table)

A dialog id is (Call-ID, local tag, remote tag). The route set comes from Record-Route: as received
for the UAS, reversed for the UAC; loose routes (`;lr`) keep the remote target as Request-URI,
a strict first route becomes the Request-URI (§12.2.1.1).
"""
from __future__ import annotations

import copy
import secrets
from typing import Iterator

from .message import Headers, Request, Response
from .uri import NameAddr, SipUri, parse_name_addr_list


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


def _record_route(msg: Request | Response) -> list[NameAddr]:
    values = msg.headers.getall("Record-Route")
    return parse_name_addr_list(", ".join(values)) if values else []


def _contact_uri(msg: Request | Response) -> SipUri | None:
    values = msg.headers.getall("Contact")
    if not values:
        return None
    addrs = parse_name_addr_list(", ".join(values))
    return addrs[0].uri if addrs else None  # type: ignore[return-value]


class Dialog:
    """One dialog. `state` is "early", "confirmed" or "terminated"."""

    def __init__(self, *, call_id: str, local: NameAddr, remote: NameAddr, remote_target: SipUri,
                 route_set: list[NameAddr], local_cseq: int, remote_cseq: int | None,
                 role: str, local_contact: str, state: str = "confirmed") -> None:
        self.call_id = call_id
        self.local = local            # our From (UAC) / To (UAS), with our tag
        self.remote = remote          # the peer's, with its tag
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.role = role
        self.local_contact = local_contact
        self.state = state
        self.owner: object = None     # the UA core's call on this dialog

    @property
    def local_tag(self) -> str:
        return self.local.tag or ""

    @property
    def remote_tag(self) -> str:
        return self.remote.tag or ""

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_uac(cls, invite: Request, resp: Response, local_contact: str) -> "Dialog":
        """The caller's dialog from a response carrying a To tag (§12.1.2)."""
        target = _contact_uri(resp) or invite.uri
        return cls(call_id=invite.call_id, local=copy.deepcopy(invite.from_),
                   remote=copy.deepcopy(resp.to), remote_target=target,  # type: ignore[arg-type]
                   route_set=list(reversed(_record_route(resp))), local_cseq=invite.cseq[0],
                   remote_cseq=None, role="uac", local_contact=local_contact,
                   state="confirmed" if 200 <= resp.status < 300 else "early")

    @classmethod
    def as_uas(cls, invite: Request, local_tag: str, local_contact: str, state: str = "early") -> "Dialog":
        """The callee's dialog for a request we answer with local_tag (§12.1.1)."""
        local = copy.deepcopy(invite.to)
        local.params["tag"] = local_tag
        target = _contact_uri(invite) or invite.from_.uri
        return cls(call_id=invite.call_id, local=local, remote=copy.deepcopy(invite.from_),
                   remote_target=target, route_set=_record_route(invite),  # type: ignore[arg-type]
                   local_cseq=secrets.randbelow(1 << 16) + 1, remote_cseq=invite.cseq[0], role="uas",
                   local_contact=local_contact, state=state)

    def update_from_response(self, resp: Response) -> None:
        """A 2xx confirms an early UAC dialog and refreshes its route set and target (§12.1.2, §13.2.2.4)."""
        if self.role == "uac" and self.state == "early" and 200 <= resp.status < 300:
            self.route_set = list(reversed(_record_route(resp)))
            self.state = "confirmed"
        self.refresh_target(resp)

    def refresh_target(self, msg: Request | Response) -> None:
        uri = _contact_uri(msg)
        if uri is not None:
            self.remote_target = uri

    def accept_remote_cseq(self, req: Request) -> bool:
        """Record the peer's CSeq; False if it is lower than before (§12.2.2: answer 500)."""
        n = req.cseq[0]
        if req.method in ("ACK", "CANCEL"):
            return True
        if self.remote_cseq is not None and n < self.remote_cseq:
            return False
        self.remote_cseq = n
        return True

    def next_hop_uri(self) -> SipUri:
        """The URI whose host/port/transport say where an in-dialog request goes first."""
        if self.route_set:
            return self.route_set[0].uri  # type: ignore[return-value]
        return self.remote_target

    def request(self, method: str, *, body: bytes = b"", content_type: str | None = None,
                headers: dict[str, str] | None = None, cseq: int | None = None) -> Request:
        """An in-dialog request (§12.2.1.1) without Via; the next local CSeq unless cseq is given."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        h = Headers()
        routes = [str(r) for r in self.route_set]
        uri: SipUri = self.remote_target
        if self.route_set and "lr" not in getattr(self.route_set[0].uri, "params", {}):
            uri = self.route_set[0].uri  # type: ignore[assignment]  # strict router
            routes = routes[1:] + [f"<{self.remote_target}>"]
        for r in routes:
            h.add("Route", r)
        h.set("Max-Forwards", "70")
        h.set("From", str(self.local))
        h.set("To", str(self.remote))
        h.set("Call-ID", self.call_id)
        h.set("CSeq", f"{cseq} {method}")
        if method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
            h.set("Contact", self.local_contact)
        for k, v in (headers or {}).items():
            h.set(k, v)
        if body:
            h.set("Content-Type", content_type or "application/sdp")
        return Request(method, uri, h, body)


class DialogTable:
    """Dialogs by id; matches incoming requests and responses to them."""

    def __init__(self) -> None:
        self._d: dict[tuple[str, str, str], Dialog] = {}

    def __len__(self) -> int:
        return len(self._d)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._d.values()))

    def add(self, d: Dialog) -> None:
        self._d[d.id] = d

    def remove(self, d: Dialog) -> None:
        if self._d.get(d.id) is d:
            del self._d[d.id]

    def get(self, key: tuple[str, str, str]) -> Dialog | None:
        return self._d.get(key)

    def match_request(self, req: Request) -> Dialog | None:
        to_tag = req.to.tag if req.to is not None else None
        from_tag = req.from_.tag if req.from_ is not None else None
        return self._d.get((req.call_id, to_tag or "", from_tag or ""))

    def match_response(self, resp: Response) -> Dialog | None:
        return self._d.get((resp.call_id, resp.from_.tag or "", resp.to.tag or ""))
