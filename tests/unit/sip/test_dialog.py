"""sip.dialog: dialog ids, route sets from Record-Route, CSeq spaces, target refresh, strict routing."""
from __future__ import annotations

from firmware.sip.dialog import Dialog, DialogTable
from firmware.sip.message import Request, Response, make_response, parse

INVITE = (b"INVITE sip:bob@192.0.2.20 SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKdlg1\r\n"
          b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
          b"Max-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@example.com>;tag=al1\r\n"
          b"To: <sip:bob@example.com>\r\nCall-ID: dlg-1@192.0.2.10\r\nCSeq: 314 INVITE\r\n"
          b"Contact: <sip:alice@192.0.2.10:5070>\r\nContent-Length: 0\r\n\r\n")


def invite() -> Request:
    msg = parse(INVITE)
    assert isinstance(msg, Request)
    return msg


def test_uas_dialog_keeps_record_route_order_and_targets_the_contact() -> None:
    d = Dialog.as_uas(invite(), "bobtag", "<sip:bob@192.0.2.20>")
    assert d.id == ("dlg-1@192.0.2.10", "bobtag", "al1")
    assert [r.uri.host for r in d.route_set] == ["p1.example.com", "p2.example.com"]
    bye = d.request("BYE")
    assert str(bye.uri) == "sip:alice@192.0.2.10:5070"
    assert bye.headers.getall("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert bye.from_.tag == "bobtag" and bye.to.tag == "al1" and bye.call_id == "dlg-1@192.0.2.10"
    n = bye.cseq[0]
    assert d.request("INFO").cseq == (n + 1, "INFO")      # local CSeq space grows by one
    assert d.next_hop_uri().host == "p1.example.com"


def test_uac_dialog_reverses_record_route_and_ack_reuses_invite_cseq() -> None:
    inv = invite()
    ok = make_response(inv, 200, "OK", to_tag="bobtag")
    ok.headers.add("Record-Route", "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>")
    ok.headers.set("Contact", "<sip:bob@192.0.2.20:5080>")
    d = Dialog.as_uac(inv, ok, "<sip:alice@192.0.2.10:5070>")
    assert d.id == ("dlg-1@192.0.2.10", "al1", "bobtag") and d.state == "confirmed"
    assert [r.uri.host for r in d.route_set] == ["p2.example.com", "p1.example.com"]
    ack = d.request("ACK", cseq=inv.cseq[0])
    assert ack.cseq == (314, "ACK") and str(ack.uri) == "sip:bob@192.0.2.20:5080"
    assert d.request("BYE").cseq == (315, "BYE")
    reinv = d.request("INVITE", body=b"v=0\r\n")
    assert reinv.headers.get("Contact") == "<sip:alice@192.0.2.10:5070>"
    assert reinv.headers.get("Content-Type") == "application/sdp"


def test_strict_router_becomes_request_uri() -> None:
    inv = invite()
    inv.headers.set("Record-Route", "<sip:strict.example.com>")
    d = Dialog.as_uas(inv, "t", "<sip:bob@192.0.2.20>")
    bye = d.request("BYE")
    assert str(bye.uri) == "sip:strict.example.com"
    assert bye.headers.getall("Route") == ["<sip:alice@192.0.2.10:5070>"]


def test_remote_cseq_must_not_go_backwards_and_target_refreshes() -> None:
    d = Dialog.as_uas(invite(), "t", "<sip:bob@192.0.2.20>")
    newer = d.request("INFO")  # shape of an in-dialog request; fake the peer's view
    peer = Request("INFO", newer.uri, newer.headers.copy(), b"")
    peer.headers.set("CSeq", "400 INFO")
    assert d.accept_remote_cseq(peer) and d.remote_cseq == 400
    peer.headers.set("CSeq", "399 INFO")
    assert not d.accept_remote_cseq(peer)
    ack = Request("ACK", peer.uri, peer.headers.copy(), b"")
    ack.headers.set("CSeq", "314 ACK")
    assert d.accept_remote_cseq(ack)                  # ACK/CANCEL carry the INVITE's number
    reinv = Request("INVITE", newer.uri, newer.headers.copy(), b"")
    reinv.headers.set("Contact", "<sip:alice@198.51.100.7:5999>")
    d.refresh_target(reinv)
    assert str(d.request("BYE").uri) == "sip:alice@198.51.100.7:5999"


def test_early_uac_dialog_is_confirmed_by_2xx() -> None:
    inv = invite()
    ringing = make_response(inv, 180, "Ringing", to_tag="bobtag")
    ringing.headers.set("Contact", "<sip:bob@192.0.2.20:5080>")
    d = Dialog.as_uac(inv, ringing, "<sip:alice@192.0.2.10>")
    assert d.state == "early"
    ok: Response = make_response(inv, 200, "OK", to_tag="bobtag")
    ok.headers.set("Contact", "<sip:bob@192.0.2.21:5080>")
    d.update_from_response(ok)
    assert d.state == "confirmed" and d.remote_target.host == "192.0.2.21"


def test_table_matches_requests_and_responses_by_tags() -> None:
    inv = invite()
    table = DialogTable()
    uas = Dialog.as_uas(inv, "bobtag", "<sip:bob@192.0.2.20>")
    table.add(uas)
    bye = Request("BYE", inv.uri, inv.headers.copy(), b"")
    bye.headers.set("To", "<sip:bob@example.com>;tag=bobtag")
    bye.headers.set("CSeq", "315 BYE")
    assert table.match_request(bye) is uas
    bye.headers.set("To", "<sip:bob@example.com>;tag=unknown")
    assert table.match_request(bye) is None
    uac = Dialog.as_uac(inv, make_response(inv, 200, "OK", to_tag="x1"), "<sip:alice@h>")
    table.add(uac)
    assert table.match_response(make_response(inv, 200, "OK", to_tag="x1")) is uac
    assert len(table) == 2
    table.remove(uas)
    table.remove(uac)
    assert len(table) == 0
