"""Every RFC 4475 torture message (plus test.dat) against the parser and validate.

The verdicts come from /work/shared/data/rfc4475/README.md; the field checks are what each RFC
section says a parser must get right.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from firmware.sip.message import Request, Response, SipError, frame_stream, parse
from firmware.sip.uri import AbsoluteUri, NameAddr, SipUri, parse_name_addr_list
from firmware.sip.validate import check_request, check_response

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "rfc4475"

VALID = ["wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri",
         "transports", "mpart01", "unreason", "noreason", "badbranch", "insuf", "unkscm", "novelsc",
         "unksm2", "bext01", "invut", "regaut01", "multi01", "mcl01", "bcast", "zeromf", "cparam01",
         "cparam02", "regescrt", "sdp01", "inv2543"]
# file -> (status, words the reason must contain)
INVALID = {
    "badinv01": (400, ["Via", "Empty parameter"]),
    "clerr": (400, ["Content-Length larger"]),
    "ncl": (400, ["Negative Content-Length"]),
    "scalar02": (400, ["CSeq", "out of range"]),
    "scalarlg": (400, ["CSeq", "out of range"]),
    "quotbal": (400, ["To", "Unterminated quoted string"]),
    "ltgtruri": (400, ["Request-URI", "<>"]),
    "lwsruri": (400, ["Whitespace in Request-URI"]),
    "lwsstart": (400, ["Extra whitespace in request line"]),
    "trws": (400, ["Trailing whitespace"]),
    "escruri": (400, ["Headers not allowed in Request-URI"]),
    "baddate": (400, ["Date", "GMT"]),
    "regbadct": (400, ["Contact", "enclosed in <>"]),
    "badaspec": (400, ["To", "Whitespace inside <URI>"]),
    "baddn": (400, ["From", "Display name", "quoted"]),
    "badvers": (505, ["Version Not Supported"]),  # RFC 4475 §3.1.2.16 names 505, not 400
    "mismatch01": (400, ["CSeq method does not match"]),
    "mismatch02": (400, ["CSeq method does not match"]),
    "bigcode": (400, ["Status code must be three digits"]),
    "test": (400, ["no SIP-Version"]),
}


def load(name: str) -> bytes:
    path = DATA / f"{name}.dat"
    if not path.is_file():
        pytest.fail(f"RFC 4475 test message {path} is missing: CI must put shared/ beside the clone "
                    f"(expected the directory {DATA})")
    return path.read_bytes()


def req(name: str) -> Request:
    msg = parse(load(name))
    assert isinstance(msg, Request)
    return msg


def test_data_directory_holds_exactly_the_cases() -> None:
    if not DATA.is_dir():
        pytest.fail(f"RFC 4475 data directory {DATA} is missing: CI must put shared/ beside the clone")
    assert {p.stem for p in DATA.glob("*.dat")} == set(VALID) | set(INVALID)


@pytest.mark.parametrize("name", VALID)
def test_valid_messages_parse_and_reencode(name: str) -> None:
    msg = parse(load(name))
    again = parse(msg.encode())
    assert again.body == msg.body
    assert [h for h in again.headers if h[0] != "Content-Length"] == \
        [h for h in msg.headers if h[0] != "Content-Length"]
    assert parse(again.encode()) == again


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_messages_are_rejected_with_the_reason(name: str) -> None:
    status, words = INVALID[name]
    with pytest.raises(SipError) as err:
        parse(load(name))
    assert err.value.status == status
    for w in words:
        assert w in err.value.reason, (name, err.value.reason)


# --- §3.1.1 valid messages: the fields a parser must get right --------------------------------------
def test_wsinv_folding_lws_case_and_unknown_headers() -> None:
    m = req("wsinv")
    assert m.method == "INVITE"
    assert isinstance(m.uri, SipUri) and m.uri.user == "vivekg" and m.uri.host == "chair-dnrc.example.com"
    assert m.uri.params == {"unknownparam": None}
    assert m.to is not None and m.to.uri.user == "vivekg" and m.to.tag == "1918181833n"
    assert m.from_ is not None and m.from_.display == 'J Rosenberg \\"' and m.from_.tag == "98asjd8"
    assert m.max_forwards == 68 and m.cseq == (9, "INVITE")
    assert m.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert m.headers.get("Subject") == ""                       # "s :" with an empty value
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert m.headers.getall("UnknownHeaderWithUnusualValue") == [";;,,;;,;"]  # unknown: never split
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"), ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239")]
    route = parse_name_addr_list(m.headers.get("Route") or "")
    assert route[0].uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    (contact,) = parse_name_addr_list(m.headers.get("Contact") or "")
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert m.headers.get("Content-Type") == "application/sdp"
    assert len(m.body) == 150 and m.body.startswith(b"v=0\r\n")


def test_intmeth_wide_range_of_valid_characters() -> None:
    m = req("intmeth")
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert isinstance(m.uri, SipUri)
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.uri.host == "example.com"
    assert m.to is not None and m.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.to.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"  # type: ignore[union-attr]
    assert m.from_ is not None and m.from_.display == "token1~` token2'+_ token3*%!.-"
    assert m.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.cseq == (139122385, m.method)
    assert m.vias[0].branch == "z9hG4bK-.!%66*_+`'~"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01_escaped_uris_are_unescaped() -> None:
    m = req("esc01")
    assert isinstance(m.uri, SipUri)
    assert m.uri.user == "sips:user@example.com" and m.uri.host == "example.net"
    assert m.to is not None and m.to.uri.user == "user"  # type: ignore[union-attr]
    assert m.from_ is not None and m.from_.uri.user == "I have spaces"  # type: ignore[union-attr]
    (contact,) = parse_name_addr_list(m.headers.get("Contact") or "")
    assert contact.uri == SipUri.parse("sip:caller@host5.example.net;lr;name=value%2541")
    assert contact.uri.params == {"lr": None, "name": "value%41"}  # type: ignore[union-attr]
    assert len(m.body) == 150


def test_escnull_escaped_nulls() -> None:
    m = req("escnull")
    assert m.to is not None and m.to.uri.user == "null-\x00-null"  # type: ignore[union-attr]
    users = [c.uri.user for c in parse_name_addr_list(", ".join(m.headers.getall("Contact")))]
    assert users == ["\x00", "\x00\x00"]


def test_esc02_percent_that_is_not_an_escape() -> None:
    m = req("esc02")
    assert m.method == "RE%47IST%45R"                   # methods are not unescaped
    assert m.cseq == (29344, "RE%47IST%45R")
    assert m.to is not None and m.to.display == "%Z%45"
    assert m.vias[0].branch == "z9hG4bK209%fzsnel234"
    contacts = parse_name_addr_list(", ".join(m.headers.getall("Contact")))
    assert [c.uri.host for c in contacts] == ["host1.example.com", "host3.example.com"]  # type: ignore[union-attr]
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"  # an unknown header


def test_lwsdisp_no_space_before_angle() -> None:
    m = req("lwsdisp")
    assert m.from_ is not None and m.from_.display == "caller" and m.from_.tag == "323"
    assert m.from_.uri.user == "caller"  # type: ignore[union-attr]


def test_longreq_long_values() -> None:
    m = req("longreq")
    assert m.to is not None and m.to.display is not None and "extremeextreme" in m.to.display
    assert m.to.uri.port == 6000 and len(m.to.uri.params) == 3  # type: ignore[union-attr]
    assert m.from_ is not None and m.from_.tag is not None and len(m.from_.tag) == 155
    assert m.from_.tag.startswith("1298298298") and m.from_.tag.endswith("982424")
    assert len(m.vias) == 34 and m.vias[-1].received == "192.0.2.5"
    assert m.vias[-1].branch is not None and m.vias[-1].branch.endswith("longbranchvalue")
    assert len(m.body) == 150


def test_dblreq_only_the_first_message() -> None:
    m = req("dblreq")
    assert m.method == "REGISTER" and m.cseq == (8, "REGISTER") and m.body == b""


def test_semiuri_semicolons_in_user_part() -> None:
    m = req("semiuri")
    assert isinstance(m.uri, SipUri)
    assert m.uri.user == "user;par=u@example.net" and m.uri.host == "example.com" and m.uri.params == {}
    assert m.headers.getall("Accept") == ["application/sdp", "application/pkcs7-mime", "multipart/mixed",
                                          "multipart/signed", "message/sip", "message/sipfrag"]


def test_transports_varied_and_unknown() -> None:
    assert [v.transport for v in req("transports").vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_binary_multipart_body_by_content_length() -> None:
    m = req("mpart01")
    assert len(m.body) == 553 == int(m.headers.get("Content-Length") or 0)
    assert b"\x00" in m.body and m.body.endswith(b"--7a9cbec02ceef655--\r\n")
    assert m.headers.get("Content-Type") == "multipart/mixed;boundary=7a9cbec02ceef655"
    assert m.vias[0].rport is None and "rport" in m.vias[0].params


def test_unreason_and_noreason() -> None:
    m = parse(load("unreason"))
    assert isinstance(m, Response) and m.status == 200
    assert m.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert len(m.body) == 154
    m = parse(load("noreason"))
    assert isinstance(m, Response) and m.status == 100 and m.reason == ""


# --- §3.2 / §3.3 / §3.4: parse, then the right answer ----------------------------------------------
def test_badbranch_parses_with_cookie_only_branch() -> None:
    m = req("badbranch")
    assert m.vias[0].branch == "z9hG4bK"
    assert check_request(m) is None


def test_insuf_answers_400_naming_the_missing_headers() -> None:
    resp = check_request(req("insuf"))
    assert resp is not None and resp.status == 400
    for name in ("From", "To", "Call-ID"):
        assert name in resp.reason
    assert resp.headers.get("Via") == "SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf"


@pytest.mark.parametrize("name", ["unkscm", "novelsc"])
def test_unknown_request_uri_scheme_gets_416(name: str) -> None:
    m = req(name)
    assert isinstance(m.uri, AbsoluteUri)
    resp = check_request(m)
    assert resp is not None and resp.status == 416
    assert resp.to is not None and resp.to.tag  # a final response carries a To tag


def test_novelsc_is_accepted_when_its_scheme_is_supported() -> None:
    m = req("novelsc")
    assert m.uri.scheme == "soap.beep"
    assert check_request(m, supported_schemes=("sip", "soap.beep")) is None


def test_unksm2_unknown_schemes_in_headers_are_accepted() -> None:
    m = req("unksm2")
    assert m.to is not None and m.to.uri == AbsoluteUri("isbn", "isbn:2983792873")
    assert m.from_ is not None and m.from_.uri == AbsoluteUri("http", "http://www.example.com")
    assert NameAddr.parse(m.headers.get("Contact") or "").uri == AbsoluteUri("name", "name:John_Smith")
    assert check_request(m) is None


def test_bext01_answers_420_listing_the_required_options() -> None:
    resp = check_request(req("bext01"))
    assert resp is not None and resp.status == 420
    assert resp.headers.getall("Unsupported") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert check_request(req("bext01"), supported_extensions=("nothingsupportsthis",
                                                               "NothingSupportsThisEither")) is None


def test_invut_answers_415_with_accept() -> None:
    resp = check_request(req("invut"))
    assert resp is not None and resp.status == 415
    assert resp.headers.get("Accept") == "application/sdp"


def test_regaut01_is_left_to_the_auth_layer() -> None:
    m = req("regaut01")
    # the unknown scheme stays one value (Authorization is never split on commas); 401 is auth's job
    assert m.headers.getall("Authorization") == ["NoOneKnowsThisScheme opaque-data=here"]
    assert check_request(m) is None


def test_multi01_answers_400_for_repeated_single_value_headers() -> None:
    resp = check_request(req("multi01"))
    assert resp is not None and resp.status == 400
    for name in ("From", "To", "Call-ID", "CSeq", "Max-Forwards"):
        assert name in resp.reason
    assert "Contact" not in resp.reason


def test_mcl01_answers_400_for_two_content_lengths() -> None:
    m = req("mcl01")
    assert m.body.startswith(b"There's no way to know")  # conflicting lengths: rest of the datagram
    resp = check_request(m, accept_types=("text/plain",))
    assert resp is not None and resp.status == 400 and "Content-Length" in resp.reason


def test_bcast_response_is_dropped() -> None:
    m = parse(load("bcast"))
    assert isinstance(m, Response) and [v.host for v in m.vias] == ["192.0.2.198", "255.255.255.255"]
    assert check_response(m, ["192.0.2.198"]) == "more than one Via"
    assert check_response(m, ["192.0.2.1"]) is not None


def test_zeromf_is_handled_normally_by_a_uas() -> None:
    m = req("zeromf")
    assert m.max_forwards == 0 and check_request(m) is None


def test_cparam01_parameter_belongs_to_the_contact_header() -> None:
    (c,) = parse_name_addr_list(req("cparam01").headers.get("Contact") or "")
    assert c.params == {"unknownparam": None} and c.uri.params == {}  # type: ignore[union-attr]
    assert c.uri.user == "+19725552222"  # type: ignore[union-attr]


def test_cparam02_parameter_belongs_to_the_uri() -> None:
    m = req("cparam02")
    (c,) = parse_name_addr_list(m.headers.get("Contact") or "")
    assert c.params == {} and c.uri.params == {"unknownparam": None}  # type: ignore[union-attr]
    assert check_request(m) is None


def test_regescrt_escaped_header_in_contact_uri() -> None:
    m = req("regescrt")
    (c,) = parse_name_addr_list(m.headers.get("Contact") or "")
    assert c.uri.headers == {"Route": "<sip:sip.example.com>"}  # type: ignore[union-attr]
    assert check_request(m) is None


def test_sdp01_answers_406() -> None:
    resp = check_request(req("sdp01"))
    assert resp is not None and resp.status == 406


def test_inv2543_rfc2543_syntax_is_accepted() -> None:
    m = req("inv2543")
    assert m.vias[0].branch is None and m.from_ is not None and m.from_.tag is None
    assert m.max_forwards is None and "Content-Length" not in m.headers
    assert m.body.startswith(b"v=0") and m.body.endswith(b"RTP/AVP 0\r\n")  # the rest of the datagram
    assert check_request(m) is None


def test_mcl01_cannot_be_framed_on_a_stream() -> None:
    with pytest.raises(SipError, match="Conflicting Content-Length"):
        frame_stream(bytearray(load("mcl01")), 65535)


def test_badinv01_contact_alone_is_rejected_too() -> None:
    data = load("badinv01").replace(b"Via: SIP/2.0/UDP 192.0.2.15;;,;,,", b"Via: SIP/2.0/UDP 192.0.2.15")
    with pytest.raises(SipError, match="Bad Contact header: Empty parameter"):
        parse(data)
