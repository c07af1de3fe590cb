"""SIP message parsing, framing, encoding, make_response and validate (firmware/sip/message.py)."""
from __future__ import annotations

import pytest

from firmware.sip.message import (MAX_HEADERS, MAX_LINE, MAX_MESSAGE, Headers, Request, Response, SipError,
                                  StreamFramer, Via, frame_stream, make_response, new_branch, new_tag, parse)
from firmware.sip.uri import SipUri, parse_name_addr_list
from firmware.sip.validate import check_request, check_response

# --- captured-style fixtures: what the project's real peers send ------------------------------------
BARESIP_REGISTER = (
    b"REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK3a0f5e1c8d9b2a47;rport\r\n"
    b"Contact: <sip:alice-0x55a1c3e2f0a0@127.0.0.1:5071>;expires=3600;"
    b"+sip.instance=\"<urn:uuid:2a9b8c7d-1111-2222-3333-444455556666>\"\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:alice@earshot.local>\r\n"
    b"From: <sip:alice@earshot.local>;tag=a1b2c3d4e5f60718\r\n"
    b"Call-ID: 8f3c2b1a0e9d8c7b\r\n"
    b"CSeq: 2 REGISTER\r\n"
    b"User-Agent: baresip v1.0.0 (x86_64/linux)\r\n"
    b"Authorization: Digest username=\"alice\",realm=\"earshot.local\",nonce=\"6f1d2c3b4a59687e\","
    b"uri=\"sip:127.0.0.1:5060\",response=\"0a4f113b5c2e1d9f8e7d6c5b4a392817\",algorithm=MD5,"
    b"qop=auth,nc=00000001,cnonce=\"1c2d3e4f\"\r\n"
    b"Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE\r\n"
    b"Supported: replaces,norefersub\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)
SDP = (
    b"v=0\r\n"
    b"o=- 1716300000 1716300000 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 10000 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)
INVITE_SDP = (
    b"INVITE sip:1002@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK77e1d2c3b4a5;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: \"Agent 1001\" <sip:1001@earshot.local>;tag=5e6f7a8b\r\n"
    b"To: <sip:1002@earshot.local>\r\n"
    b"Call-ID: c0ffee01-2345-6789@127.0.0.1\r\n"
    b"CSeq: 9120 INVITE\r\n"
    b"Contact: <sip:1001@127.0.0.1:5071;transport=udp>\r\n"
    b"User-Agent: baresip v1.0.0 (x86_64/linux)\r\n"
    b"Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE\r\n"
    b"Supported: replaces,norefersub\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)
OK_RECORD_ROUTE = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK.c41a;rport=5060;received=127.0.0.1\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5071;received=127.0.0.1;branch=z9hG4bK77e1d2c3b4a5;rport=5071\r\n"
    b"Record-Route: <sip:127.0.0.1:5060;lr;ftag=5e6f7a8b;did=4d2.a1>\r\n"
    b"Record-Route: <sip:10.0.0.2;r2=on;lr>, <sip:127.0.0.1;r2=on;lr>\r\n"
    b"From: \"Agent 1001\" <sip:1001@earshot.local>;tag=5e6f7a8b\r\n"
    b"To: <sip:1002@earshot.local>;tag=9f8e7d6c\r\n"
    b"Call-ID: c0ffee01-2345-6789@127.0.0.1\r\n"
    b"CSeq: 9120 INVITE\r\n"
    b"Contact: <sip:1002@127.0.0.1:5082>\r\n"
    b"Server: kamailio (5.6.3 (x86_64/linux))\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)
FIXTURES = [BARESIP_REGISTER, INVITE_SDP, OK_RECORD_ROUTE]


@pytest.mark.parametrize("raw", FIXTURES)
def test_fixtures_round_trip_exactly(raw: bytes) -> None:
    msg = parse(raw)
    assert msg.encode() == raw
    assert parse(msg.encode()) == msg


def test_baresip_register_fields() -> None:
    m = parse(BARESIP_REGISTER)
    assert isinstance(m, Request) and m.method == "REGISTER" and str(m.uri) == "sip:127.0.0.1:5060"
    auth = m.headers.getall("Authorization")
    assert len(auth) == 1 and auth[0].startswith("Digest username=\"alice\",realm=") and "cnonce" in auth[0]
    assert m.headers.getall("Allow")[:3] == ["INVITE", "ACK", "BYE"]
    (c,) = parse_name_addr_list(m.headers.get("Contact") or "")
    assert c.params == {"expires": "3600", "+sip.instance": "\"<urn:uuid:2a9b8c7d-1111-2222-3333-444455556666>\""}
    v = m.vias[0]
    assert "rport" in v.params and v.rport is None and v.port == 5071
    assert check_request(m) is None


def test_invite_with_sdp_fields() -> None:
    m = parse(INVITE_SDP)
    assert isinstance(m, Request) and m.body == SDP and m.cseq == (9120, "INVITE")
    assert m.from_ is not None and m.from_.display == "Agent 1001" and m.from_.tag == "5e6f7a8b"
    assert m.to is not None and m.to.tag is None
    assert check_request(m) is None


def test_ok_with_record_route_fields() -> None:
    m = parse(OK_RECORD_ROUTE)
    assert isinstance(m, Response) and m.status == 200 and m.reason == "OK"
    rr = parse_name_addr_list(", ".join(m.headers.getall("Record-Route")))
    assert [str(r.uri) for r in rr] == ["sip:127.0.0.1:5060;lr;ftag=5e6f7a8b;did=4d2.a1",
                                        "sip:10.0.0.2;r2=on;lr", "sip:127.0.0.1;r2=on;lr"]
    assert [v.rport for v in m.vias] == [5060, 5071]
    assert m.headers.get("Server") == "kamailio (5.6.3 (x86_64/linux))"
    assert check_response(m, ["127.0.0.1:5060"]) == "more than one Via"


# --- headers ----------------------------------------------------------------------------------------
def test_headers_compact_forms_and_case() -> None:
    h = Headers([("i", "abc"), ("cseq", "1 INVITE"), ("X-Custom", "1"), ("v", "SIP/2.0/UDP a")])
    assert list(h) == [("Call-ID", "abc"), ("CSeq", "1 INVITE"), ("X-Custom", "1"), ("Via", "SIP/2.0/UDP a")]
    assert h.get("CALL-ID") == h.get("i") == "abc" and h.get("x-custom") == "1"
    assert "via" in h and "Route" not in h and h.get("Route") is None


def test_getall_splits_only_list_headers() -> None:
    h = Headers([("Via", "SIP/2.0/UDP a;branch=1, SIP/2.0/UDP b"), ("Via", "SIP/2.0/TCP c"),
                 ("Contact", '"Doe, J" <sip:a@b>, <sip:c@d>'),
                 ("WWW-Authenticate", 'Digest realm="x", nonce="y"'),
                 ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"), ("X-Unknown", "a, b")])
    assert h.getall("Via") == ["SIP/2.0/UDP a;branch=1", "SIP/2.0/UDP b", "SIP/2.0/TCP c"]
    assert h.getall("m") == ['"Doe, J" <sip:a@b>', "<sip:c@d>"]
    assert h.getall("WWW-Authenticate") == ['Digest realm="x", nonce="y"']
    assert h.getall("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert h.getall("X-Unknown") == ["a, b"]
    assert h.getall("Route") == []


def test_headers_set_add_remove_copy() -> None:
    h = Headers([("Via", "v1"), ("To", "t"), ("Via", "v2")])
    h.add("Via", "v0", first=True)
    assert [v for n, v in h if n == "Via"] == ["v0", "v1", "v2"]
    h.add("Route", "<sip:r>", first=True)  # none yet: at the very top
    assert list(h)[0] == ("Route", "<sip:r>")
    c = h.copy()
    h.set("Via", "only")
    assert list(h) == [("Route", "<sip:r>"), ("Via", "only"), ("To", "t")]
    assert c.count("Via") == 3 and c != h
    h.set("f", "<sip:x>")
    assert list(h)[-1] == ("From", "<sip:x>")
    h.remove("VIA")
    h.remove("Nothing")
    assert "Via" not in h and len(h) == 3


@pytest.mark.parametrize("name, value", [("X-A", "a\r\nInjected: 1"), ("X-A", "a\nb"), ("Bad Name", "v"),
                                         ("", "v"), ("X:Y", "v")])
def test_headers_refuse_injection(name: str, value: str) -> None:
    with pytest.raises(ValueError):
        Headers().add(name, value)
    with pytest.raises(ValueError):
        Headers().set(name, value)


# --- parsing details --------------------------------------------------------------------------------
REQ = (b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:c@d>;tag=1\r\n"
       b"To: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n")


def test_body_is_rest_of_datagram_without_content_length() -> None:
    m = parse(REQ + b"\r\nhello")
    assert m.body == b"hello" and m.headers.get("Content-Length") is None
    assert m.encode().endswith(b"Content-Length: 5\r\n\r\nhello")


def test_extra_bytes_after_content_length_are_ignored() -> None:
    assert parse(REQ + b"Content-Length: 2\r\n\r\nhello").body == b"he"


def test_content_length_beyond_the_datagram_is_rejected() -> None:
    with pytest.raises(SipError, match="Content-Length larger"):
        parse(REQ + b"l: 6\r\n\r\nhello")


def test_leading_crlf_is_skipped() -> None:
    assert isinstance(parse(b"\r\n\r\n" + REQ + b"\r\n"), Request)


@pytest.mark.parametrize("data, words", [
    (b"", "Empty message"),
    (b"\r\n\r\n", "Empty message"),
    (REQ, "No empty line"),
    (REQ + b"X: a\rb\r\n\r\n", "Bare CR"),
    (REQ + b"X: a\nb\r\n\r\n", "Bare CR or LF"),
    (b"OPTIONS sip:a@b SIP/2.0\r\n continued\r\n\r\n", "Continuation line"),
    (REQ + b"Nocolon\r\n\r\n", "without a colon"),
    (REQ + b": v\r\n\r\n", "Bad header name"),
    (REQ + b"X Y: v\r\n\r\n", "Bad header name"),
    (REQ + b"Max-Forwards: 256\r\n\r\n", "Max-Forwards out of range"),
    (REQ + b"Max-Forwards: ten\r\n\r\n", "Bad Max-Forwards"),
    (REQ + b"Content-Length: 99999999999999999999999\r\n\r\n", "Content-Length out of range"),
    (REQ + b"Call-ID: a b\r\n\r\n", "Bad Call-ID"),
    (REQ + b"Via: SIP/2.0/UDP h;rport=x\r\n\r\n", "Bad Via rport"),
    (REQ + b"Via: SIP/3.0/UDP h\r\n\r\n", "not SIP/2.0"),
    (REQ + b"Via: SIP/2.0/UDP\r\n\r\n", "Bad Via sent-protocol"),
    (REQ + b"Via: SIP/2.0/UDP h,\r\n\r\n", "Empty Via value"),
    (REQ + b"Route: <sip:a@b>,\r\n\r\n", "Route"),
    (b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n", "CSeq method does not match"),
    (b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: -1 OPTIONS\r\n\r\n", "Bad CSeq number"),
    (b"OPTI\xc3\xa9NS sip:a@b SIP/2.0\r\n\r\n", "Non-ASCII"),
    (b"OPT(I)ONS\x00 sip:a@b SIP/2.0\r\n\r\n", "Bad method"),
    (b"OPTIONS sip:a@b HTTP/1.1\r\n\r\n", "Bad SIP-Version"),
    (b"OPTIONS sip:a@b SIP/2.0\t\r\n\r\n", "Trailing whitespace"),
    (b"SIP/2.0 20 OK\r\n\r\n", "three digits"),
    (b"SIP/2.0 099 Odd\r\n\r\n", "out of range"),
    ("SIP/2.0 ٢٠٠ OK\r\n\r\n".encode(), "three digits"),  # Arabic-Indic digits
    (b"SIP/2.0\r\n\r\n", "no status code"),
    (b"SIP/2.1 200 OK\r\n\r\n", "Version Not Supported"),
])
def test_malformed_messages(data: bytes, words: str) -> None:
    with pytest.raises(SipError) as err:
        parse(data)
    assert words in err.value.reason


def test_response_without_reason_phrase_separator() -> None:
    m = parse(b"SIP/2.0 180\r\n\r\n")
    assert isinstance(m, Response) and m.status == 180 and m.reason == ""


def test_folded_header_and_lws_variants() -> None:
    m = parse(REQ.replace(b"CSeq: 1 OPTIONS", b"CSeq:\r\n\t1\r\n   OPTIONS") + b"Subject: a\r\n  b \r\n\r\n")
    assert m.cseq == (1, "OPTIONS") and m.headers.get("Subject") == "a b"


def test_non_utf8_header_bytes_survive_round_trip() -> None:
    raw = REQ + b"X-Latin1: caf\xe9\r\nContent-Length: 0\r\n\r\n"
    m = parse(raw)
    assert m.encode() == raw


def test_limits() -> None:
    big = REQ + b"Content-Length: 0\r\n\r\n"
    with pytest.raises(SipError) as err:
        parse(big + b"x" * (MAX_MESSAGE + 1 - len(big)))
    assert err.value.status == 513
    parse(REQ + b"X: " + b"a" * (MAX_LINE - 1) + b"\r\n\r\n")  # at the limit: fine
    with pytest.raises(SipError, match="too long"):
        parse(REQ + b"X: " + b"a" * MAX_LINE + b"\r\n\r\n")
    with pytest.raises(SipError, match="too long"):  # the limit applies after unfolding
        parse(REQ + b"X: a" + b"\r\n b" * (MAX_LINE // 2) + b"\r\n\r\n")
    with pytest.raises(SipError, match="Start line too long"):
        parse(b"OPTIONS sip:" + b"a" * MAX_LINE + b"@b SIP/2.0\r\n\r\n")
    ok = REQ + b"X: 1\r\n" * (MAX_HEADERS - 5)
    parse(ok + b"\r\n")
    with pytest.raises(SipError, match="Too many header"):
        parse(ok + b"X: 1\r\n\r\n")


def test_date_header_must_be_gmt() -> None:
    parse(REQ + b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n\r\n")
    for bad in (b"Sat, 13 Nov 2010 23:29:00 EST", b"Sat, 13 Nov 2010 25:29:00 GMT", b"yesterday"):
        with pytest.raises(SipError, match="Date"):
            parse(REQ + b"Date: " + bad + b"\r\n\r\n")


def test_contact_star() -> None:
    m = parse(REQ.replace(b"OPTIONS", b"REGISTER") + b"Contact: *\r\nExpires: 0\r\n\r\n")
    assert m.headers.getall("Contact") == ["*"]


def test_typed_views_of_missing_headers() -> None:
    m = parse(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n")
    assert m.call_id == "" and m.from_ is None and m.to is None and m.vias == [] and m.max_forwards is None
    with pytest.raises(SipError, match="Missing CSeq"):
        m.cseq


# --- Via --------------------------------------------------------------------------------------------
def test_via_parse_and_str() -> None:
    v = Via.parse("SIP / 2.0 / udp  [2001:db8::9]:5062 ; Branch = z9hG4bKx ;rport=5062;received=2001:db8::1")
    assert (v.transport, v.host, v.port) == ("UDP", "[2001:db8::9]", 5062)
    assert v.branch == "z9hG4bKx" and v.rport == 5062 and v.received == "2001:db8::1"
    assert v.sent_by == "[2001:db8::9]:5062"
    assert str(v) == "SIP/2.0/UDP [2001:db8::9]:5062;branch=z9hG4bKx;rport=5062;received=2001:db8::1"
    assert Via.parse(str(v)) == v
    assert str(Via("TCP", "h", None, {"branch": "b", "rport": None})) == "SIP/2.0/TCP h;branch=b;rport"


# --- encode -----------------------------------------------------------------------------------------
def test_encode_writes_content_length_in_place() -> None:
    m = parse(REQ + b"Content-Length: 0\r\nX-After: 1\r\n\r\n")
    m.body = b"abc"
    m.headers.add("l", "7")  # a stale duplicate is dropped
    out = m.encode()
    assert out.endswith(b"Content-Length: 3\r\nX-After: 1\r\n\r\nabc")
    assert out.count(b"Content-Length") == 1


def test_built_request_encodes() -> None:
    h = Headers([("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=" + new_branch()), ("From", "<sip:a@b>;tag=" + new_tag()),
                 ("To", "<sip:c@d>"), ("Call-ID", "x@y"), ("CSeq", "1 BYE")])
    r = Request("BYE", SipUri.parse("sip:c@d:5070"), h)
    out = r.encode()
    assert out.startswith(b"BYE sip:c@d:5070 SIP/2.0\r\nVia: ") and out.endswith(b"Content-Length: 0\r\n\r\n")
    parsed = parse(out)
    assert isinstance(parsed, Request) and parsed.method == "BYE" and parsed.uri == r.uri
    assert list(parsed.headers) == list(h) + [("Content-Length", "0")]
    with pytest.raises(ValueError):
        Request("BAD METHOD", r.uri, h).encode()
    with pytest.raises(ValueError):
        Response(42, "x", h).encode()
    with pytest.raises(ValueError):
        Response(200, "O\r\nK", h).encode()


def test_new_tag_and_branch() -> None:
    assert new_tag() != new_tag() and len(new_tag()) >= 8
    assert new_branch().startswith("z9hG4bK") and new_branch() != new_branch()


# --- frame_stream -----------------------------------------------------------------------------------
def test_frame_stream_pops_whole_messages() -> None:
    one = REQ + b"Content-Length: 5\r\n\r\nhello"
    buf = bytearray(b"\r\n\r\n" + one + one[:20])
    assert frame_stream(buf, 65535) == one
    assert bytes(buf) == one[:20]
    assert frame_stream(buf, 65535) is None
    buf += one[20:-1]
    assert frame_stream(buf, 65535) is None
    buf += b"o"
    assert frame_stream(buf, 65535) == one and buf == bytearray()


def test_frame_stream_handles_compact_and_folded_length() -> None:
    buf = bytearray(REQ + b"l:\r\n 2\r\n\r\nabX")
    assert frame_stream(buf, 65535) == REQ + b"l:\r\n 2\r\n\r\nab" and buf == b"X"


@pytest.mark.parametrize("data, status, words", [
    (REQ + b"\r\n", 400, "required"),
    (REQ + b"Content-Length: 1\r\nl: 2\r\n\r\nab", 400, "Conflicting"),
    (REQ + b"Content-Length: -1\r\n\r\n", 400, "Negative"),
    (REQ + b"Content-Length: 70000\r\n\r\n", 513, "Too Large"),
    (REQ + b"X: " + b"a" * 70000, 513, "Too Large"),
])
def test_frame_stream_errors(data: bytes, status: int, words: str) -> None:
    with pytest.raises(SipError) as err:
        frame_stream(bytearray(data), 65535)
    assert err.value.status == status and words in err.value.reason


# --- make_response ----------------------------------------------------------------------------------
def test_make_response_copies_per_8_2_6() -> None:
    req = parse(OK_RECORD_ROUTE.replace(b"SIP/2.0 200 OK", b"INVITE sip:1002@127.0.0.1 SIP/2.0")
                .replace(b";tag=9f8e7d6c", b"") + b"")
    assert isinstance(req, Request)
    resp = make_response(req, 486)
    assert resp.status == 486 and resp.reason == "Busy Here" and resp.body == b""
    assert resp.headers.getall("Via") == req.headers.getall("Via")
    assert [n for n, _ in resp.headers] == ["Via", "Via", "From", "To", "Call-ID", "CSeq"]
    assert resp.from_ == req.from_ and resp.call_id == req.call_id and resp.cseq == req.cseq
    assert resp.to is not None and resp.to.tag and resp.to.uri == req.to.uri  # type: ignore[union-attr]
    assert make_response(req, 180, "Ringing", to_tag="fixed").to.tag == "fixed"  # type: ignore[union-attr]
    assert make_response(req, 100).to.tag is None  # type: ignore[union-attr]
    assert make_response(req, 606).reason == "Not Acceptable"
    assert make_response(req, 299).reason == "OK"
    with pytest.raises(ValueError):
        make_response(req, 700)


def test_make_response_keeps_existing_to_tag_and_copies_timestamp() -> None:
    req = parse(REQ.replace(b"To: <sip:a@b>", b"To: <sip:a@b>;tag=mine") + b"Timestamp: 54.3\r\n\r\n")
    assert isinstance(req, Request)
    assert make_response(req, 200, to_tag="other").headers.get("To") == "<sip:a@b>;tag=mine"
    assert make_response(req, 100).headers.get("Timestamp") == "54.3"
    assert "Timestamp" not in make_response(req, 200).headers


def test_make_response_encodes_and_reparses() -> None:
    req = parse(INVITE_SDP)
    assert isinstance(req, Request)
    resp = make_response(req, 200, to_tag="t1")
    resp.body = b"v=0\r\n"
    again = parse(resp.encode())
    assert isinstance(again, Response) and again.to.tag == "t1" and again.body == b"v=0\r\n"  # type: ignore[union-attr]


# --- validate (beyond the RFC 4475 cases) -----------------------------------------------------------
def _req(extra: bytes = b"", method: bytes = b"OPTIONS", body: bytes = b"") -> Request:
    raw = REQ.replace(b"OPTIONS", method) + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body
    m = parse(raw)
    assert isinstance(m, Request)
    return m


def test_check_request_ack_is_never_answered() -> None:
    assert check_request(_req(b"Require: foo\r\n", b"ACK")) is None


def test_check_request_require_ignored_on_cancel() -> None:
    assert check_request(_req(b"Require: foo\r\n", b"CANCEL")) is None
    resp = check_request(_req(b"Require: foo, 100rel\r\n"), supported_extensions=("100rel",))
    assert resp is not None and resp.status == 420 and resp.headers.get("Unsupported") == "foo"


def test_check_request_body_checks() -> None:
    resp = check_request(_req(body=b"x"))
    assert resp is not None and resp.status == 400 and "Content-Type" in resp.reason
    assert check_request(_req(b"Content-Type: Application/SDP; charset=utf-8\r\n", body=b"v=0")) is None
    resp = check_request(_req(b"Content-Type: application/sdp\r\nContent-Encoding: gzip\r\n", body=b"v=0"))
    assert resp is not None and resp.status == 415 and resp.headers.get("Accept-Encoding") == "identity"
    resp = check_request(_req(b"Content-Type: application/dtmf-relay\r\n", b"INFO", b"Signal=5"),
                         accept_types=("application/sdp", "application/dtmf-relay"))
    assert resp is None


def test_check_request_accept_for_invite() -> None:
    assert check_request(_req(b"Accept: application/*\r\n", b"INVITE")) is None
    assert check_request(_req(b"Accept: */*\r\n", b"INVITE")) is None
    resp = check_request(_req(b"Accept: application/sdp;q=0, text/plain\r\n", b"INVITE"))
    assert resp is not None and resp.status == 406
    assert check_request(_req(b"Accept: text/plain\r\n")) is None  # only an INVITE needs an SDP answer


def test_check_response() -> None:
    ok = parse(OK_RECORD_ROUTE.replace(
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK.c41a;rport=5060;received=127.0.0.1\r\n", b""))
    assert isinstance(ok, Response)
    assert check_response(ok, ["127.0.0.1:5071"]) is None
    assert check_response(ok, ["127.0.0.1"]) is None
    assert check_response(ok, ["127.0.0.1:5060"]) is not None
    ok.headers.remove("Call-ID")
    assert check_response(ok, ["127.0.0.1"]) == "missing Call-ID"


def test_stream_framer_cuts_messages_and_counts_pings() -> None:
    one = REQ + b"Content-Length: 5\r\n\r\nhello"
    framer = StreamFramer(65535)
    data = b"\r\n\r\n" + one + b"\r\n\r\n\r\n" + one + one[:30]
    frames = [f for i in range(len(data)) for f in framer.feed(data[i:i + 1])]  # one byte at a time
    assert frames == [one, one] and framer.pings == 2 and bytes(framer.buf) == one[:30]
    assert framer.feed(one[30:]) == [one] and framer.buf == b""
    with pytest.raises(SipError) as err:
        StreamFramer(100).feed(b"X" * 101)
    assert err.value.status == 513
    with pytest.raises(SipError, match="required"):
        StreamFramer().feed(REQ + b"\r\n")


def test_parse_takes_bytes_like_only() -> None:
    assert isinstance(parse(bytearray(REQ + b"\r\n")), Request)
    assert isinstance(parse(memoryview(REQ + b"\r\n")), Request)
    with pytest.raises(TypeError):
        parse(REQ.decode() + "\r\n")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parse(5)  # type: ignore[arg-type]
