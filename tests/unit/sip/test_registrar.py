"""sip.registrar: digest-challenged REGISTER, expiry bounds, several contacts, unregister, `*`,
CSeq ordering, Path/received kept for routing, change events, expiry on a fake clock."""
from __future__ import annotations

from firmware.sip.auth import DigestClient, DigestServer
from firmware.sip.message import Headers, Request, Response
from firmware.sip.registrar import Registrar
from firmware.sip.transport import Target
from firmware.sip.uri import SipUri

USERS = {"1001": "s3cret", "1002": "pw2"}
SRC = Target("udp", "203.0.113.9", 40123)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def register(user: str, contacts: list[str], *, expires: int | None = None, cseq: int = 1,
             call_id: str = "reg-1@phone", path: list[str] | None = None) -> Request:
    h = Headers()
    h.add("Via", "SIP/2.0/UDP 192.168.1.50:5060;branch=z9hG4bK" + str(cseq) + call_id.split("@")[0])
    h.set("Max-Forwards", "70")
    h.set("From", f"<sip:{user}@earshot.local>;tag=r{cseq}")
    h.set("To", f"<sip:{user}@earshot.local>")
    h.set("Call-ID", call_id)
    h.set("CSeq", f"{cseq} REGISTER")
    for c in contacts:
        h.add("Contact", c)
    for p in path or []:
        h.add("Path", p)
    if expires is not None:
        h.set("Expires", str(expires))
    return Request("REGISTER", SipUri.parse("sip:earshot.local"), h, b"")


def make(auth: bool = True, **kw) -> tuple[Registrar, Clock, DigestServer]:
    clock = Clock()
    server = DigestServer("earshot.local", b"0123456789abcdef0123", USERS.get, clock=clock)
    reg = Registrar("earshot.local", server if auth else None, clock=clock, **kw)
    return reg, clock, server


def authed(reg: Registrar, req: Request, user: str, password: str) -> Response:
    """Send req, answer the 401 with credentials (next CSeq), return the final response."""
    first = reg.handle(req, SRC)
    assert first.status == 401
    client = DigestClient(user, password)
    challenge = client.choose(first.headers.getall("WWW-Authenticate"))
    again = Request(req.method, req.uri, req.headers.copy(), b"")
    again.headers.set("CSeq", f"{req.cseq[0] + 1} REGISTER")
    again.headers.set("Authorization", client.authorization(challenge, "REGISTER", str(req.uri)))
    return reg.handle(again, SRC)


def test_unauthenticated_register_is_challenged_and_right_password_binds() -> None:
    reg, _, _ = make()
    changes = []
    reg.on_change = lambda user, contacts: changes.append((user, len(contacts)))
    resp = authed(reg, register("1001", ["<sip:1001@192.168.1.50:5060>"], expires=600), "1001", "s3cret")
    assert resp.status == 200
    [c] = reg.lookup("1001")
    assert str(c.uri) == "sip:1001@192.168.1.50:5060" and c.expires == 600
    assert c.source == SRC and c.target == SRC          # routed to where the REGISTER came from (NAT)
    assert resp.headers.getall("Contact") == ["<sip:1001@192.168.1.50:5060>;expires=600"]
    assert changes == [("1001", 1)]


def test_wrong_password_and_unknown_user_get_the_same_answer_and_no_binding() -> None:
    reg, _, _ = make()
    wrong = authed(reg, register("1001", ["<sip:1001@192.168.1.50>"]), "1001", "nope")
    unknown = authed(reg, register("9999", ["<sip:9999@192.168.1.50>"]), "9999", "nope")
    assert wrong.status == unknown.status == 401
    assert reg.lookup("1001") == [] and reg.lookup("9999") == [] and reg.users() == []


def test_credentials_of_another_user_are_forbidden() -> None:
    reg, _, _ = make()
    resp = authed(reg, register("1001", ["<sip:1001@192.168.1.50>"]), "1002", "pw2")
    assert resp.status == 403 and reg.lookup("1001") == []


def test_repeated_failures_from_one_source_are_blocked() -> None:
    reg, _, server = make()
    for _ in range(5):
        authed(reg, register("1001", ["<sip:1001@h>"]), "1001", "bad")
    resp = reg.handle(register("1001", ["<sip:1001@h>"]), SRC)
    assert resp.status == 403 and int(resp.headers.get("Retry-After")) >= 1


def test_expiry_bounds_423_and_clamp() -> None:
    reg, _, _ = make(auth=False, min_expires=60, max_expires=3600)
    brief = reg.handle(register("1001", ["<sip:1001@h>"], expires=30), SRC)
    assert brief.status == 423 and brief.headers.get("Min-Expires") == "60"
    assert reg.lookup("1001") == []
    long = reg.handle(register("1001", ["<sip:1001@h>;expires=99999"]), SRC)
    assert long.status == 200 and reg.lookup("1001")[0].expires == 3600
    default = reg.handle(register("1002", ["<sip:1002@h>"]), SRC)
    assert default.status == 200 and reg.lookup("1002")[0].expires == reg.default_expires


def test_several_contacts_q_order_and_single_unregister() -> None:
    reg, _, _ = make(auth=False)
    reg.handle(register("1001", ["<sip:1001@10.0.0.1>;q=0.5", "<sip:1001@10.0.0.2>;q=0.9"]), SRC)
    reg.handle(register("1001", ["<sip:1001@10.0.0.3>"], call_id="desk@phone"), SRC)
    assert [c.uri.host for c in reg.lookup("1001")] == ["10.0.0.3", "10.0.0.2", "10.0.0.1"]
    resp = reg.handle(register("1001", ["<sip:1001@10.0.0.2>"], expires=0, cseq=2), SRC)
    assert resp.status == 200
    assert sorted(c.uri.host for c in reg.lookup("1001")) == ["10.0.0.1", "10.0.0.3"]


def test_star_contact_removes_all_and_needs_expires_zero() -> None:
    reg, _, _ = make(auth=False)
    reg.handle(register("1001", ["<sip:1001@10.0.0.1>", "<sip:1001@10.0.0.2>"]), SRC)
    assert reg.handle(register("1001", ["*"], expires=60, cseq=2), SRC).status == 400
    assert reg.handle(register("1001", ["*"], cseq=2), SRC).status == 400
    assert reg.handle(register("1001", ["*"], expires=0, cseq=3), SRC).status == 200
    assert reg.lookup("1001") == [] and reg.users() == []


def test_out_of_order_cseq_on_same_call_id_is_refused() -> None:
    reg, _, _ = make(auth=False)
    assert reg.handle(register("1001", ["<sip:1001@10.0.0.1>"], cseq=5), SRC).status == 200
    assert reg.handle(register("1001", ["<sip:1001@10.0.0.1>"], expires=0, cseq=4), SRC).status == 500
    assert len(reg.lookup("1001")) == 1


def test_query_without_contact_lists_bindings() -> None:
    reg, _, _ = make(auth=False)
    reg.handle(register("1001", ["<sip:1001@10.0.0.1>"], expires=120), SRC)
    resp = reg.handle(register("1001", [], cseq=2), SRC)
    assert resp.status == 200 and resp.headers.getall("Contact") == ["<sip:1001@10.0.0.1>;expires=120"]


def test_path_is_kept_and_echoed() -> None:
    reg, _, _ = make(auth=False)
    resp = reg.handle(register("1001", ["<sip:1001@10.0.0.1>"], path=["<sip:edge.example.com;lr>"]), SRC)
    assert resp.headers.getall("Path") == ["<sip:edge.example.com;lr>"]
    assert reg.lookup("1001")[0].path == ["<sip:edge.example.com;lr>"]


def test_bindings_expire_on_the_clock_and_report_the_change() -> None:
    reg, clock, _ = make(auth=False)
    changes = []
    reg.on_change = lambda user, contacts: changes.append((user, len(contacts)))
    reg.handle(register("1001", ["<sip:1001@10.0.0.1>"], expires=60), SRC)
    clock.now += 59
    assert reg.lookup("1001")[0].expires == 1
    clock.now += 1
    assert reg.lookup("1001") == []
    assert changes == [("1001", 1), ("1001", 0)]


def test_bad_contact_or_expires_gives_400() -> None:
    reg, _, _ = make(auth=False)
    assert reg.handle(register("1001", ["<sip:1001@10.0.0.1>"], expires=None) , SRC).status == 200
    bad = register("1001", ["<sip:1001@10.0.0.1>"], cseq=2)
    bad.headers.set("Expires", "soon")
    assert reg.handle(bad, SRC).status == 400
    assert reg.handle(register("1001", ["<sip:1001@10.0.0.9>;q=high"], cseq=3), SRC).status == 400
