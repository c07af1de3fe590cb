"""SIP URIs, absolute URIs and name-addr values (firmware/sip/uri.py)."""
from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.sip.uri import (AbsoluteUri, NameAddr, SipError, SipUri, UriError, parse_name_addr_list,
                              parse_uri, split_commas)


def test_sip_uri_fields() -> None:
    u = SipUri.parse("SIP:Alice:pw@Example.COM:5070;Transport=TCP;lr;maddr=10.0.0.1?Subject=hi&Priority=urgent")
    assert (u.scheme, u.user, u.password, u.host, u.port) == ("sip", "Alice", "pw", "example.com", 5070)
    assert u.params == {"transport": "TCP", "lr": None, "maddr": "10.0.0.1"}
    assert u.headers == {"Subject": "hi", "Priority": "urgent"}
    assert u.transport == "tcp"


def test_transport_defaults() -> None:
    assert SipUri.parse("sip:a@b").transport == "udp"
    assert SipUri.parse("sips:a@b").transport == "tls"


def test_host_only_and_ipv6() -> None:
    u = SipUri.parse("sip:[2001:DB8::1]:5060;lr")
    assert u.user is None and u.host == "[2001:db8::1]" and u.port == 5060
    assert str(u) == "sip:[2001:db8::1]:5060;lr"
    assert SipUri.parse("sip:192.0.2.1").host == "192.0.2.1"


def test_escapes_are_decoded_and_reencoded() -> None:
    u = SipUri.parse("sip:%61lice%20smith@host;n%61me=v%61l%25ue")
    assert u.user == "alice smith" and u.params == {"name": "val%ue"}
    assert str(u) == "sip:alice%20smith@host;name=val%25ue"
    assert SipUri.parse(str(u)) == u


def test_hash_in_user_is_accepted_and_escaped() -> None:
    u = SipUri.parse("sip:*31#1001@pbx")
    assert u.user == "*31#1001" and str(u) == "sip:*31%231001@pbx"


@pytest.mark.parametrize("text, words", [
    ("sip:", "Bad URI host"),
    ("sip:@host", "Empty user"),
    ("sip:a@host:99999", "Bad port"),
    ("sip:a@host:5x", "Bad port"),
    ("sip:a@host:", "Bad port"),
    ("sip:a@[::1", "Unterminated IPv6"),
    ("sip:a@[zz::1]", "Bad IPv6"),
    ("sip:a@ho st", "Whitespace"),
    ("sip:a@host;;lr", "Empty URI parameter"),
    ("sip:a@host;x=", "Empty URI parameter value"),
    ("sip:a%zz@host", "Bad %-escape"),
    ("sip:a%4@host", "Bad %-escape"),
    ("sip:a\"b@host", "invalid character"),
    ("sip:a@host?x", "Bad URI header"),
    ("sip:a@ho/st", "Bad URI host"),
    ("tel:+1", "Not a sip"),
])
def test_bad_sip_uris(text: str, words: str) -> None:
    with pytest.raises(UriError) as err:
        SipUri.parse(text)
    assert words in err.value.reason
    assert isinstance(err.value, SipError) and isinstance(err.value, ValueError)


def test_absolute_uris() -> None:
    assert parse_uri("tel:+1-201-555-0123") == AbsoluteUri("tel", "tel:+1-201-555-0123")
    assert parse_uri("Soap.Beep://192.0.2.103:3002").scheme == "soap.beep"
    assert str(parse_uri("http://www.example.com")) == "http://www.example.com"
    assert isinstance(parse_uri("sips:a@b"), SipUri)
    for bad in ("<sip:a@b>", "nocolon", "1x:abc", "x:", "x:a b"):
        with pytest.raises(UriError):
            parse_uri(bad)


# --- name-addr --------------------------------------------------------------------------------------
def test_name_addr_forms() -> None:
    a = NameAddr.parse('"Agent \\"One\\"" <sip:1001@pbx;transport=tcp>;tag=abc;expires=60')
    assert a.display == 'Agent "One"' and a.tag == "abc" and a.params == {"tag": "abc", "expires": "60"}
    assert a.uri.params == {"transport": "tcp"}  # type: ignore[union-attr]
    b = NameAddr.parse("Agent One <sip:1001@pbx>")
    assert b.display == "Agent One"
    c = NameAddr.parse("sip:1001@pbx;tag=x")  # addr-spec: the parameter is the header's
    assert c.display is None and c.tag == "x" and c.uri.params == {}  # type: ignore[union-attr]
    d = NameAddr.parse("<sip:1001@pbx>")
    assert d.display is None and d.tag is None


def test_name_addr_quoted_param_with_angle_brackets() -> None:
    a = NameAddr.parse('<sip:a@b>;+sip.instance="<urn:uuid:0001-ab>";reg-id=1')
    assert a.params["+sip.instance"] == '"<urn:uuid:0001-ab>"'
    assert NameAddr.parse(str(a)) == a
    c = NameAddr.parse('sip:a@b;+sip.instance="<urn:x>"')
    assert c.params["+sip.instance"] == '"<urn:x>"' and c.display is None


def test_name_addr_str_is_canonical_and_reparses() -> None:
    a = NameAddr.parse('x <sip:a@b> ; tag = 1 ; flag')
    assert str(a) == '"x" <sip:a@b>;tag=1;flag'
    empty = NameAddr.parse('"" <sip:a@b>')
    assert empty.display == "" and NameAddr.parse(str(empty)) == empty
    odd = NameAddr(display='back\\slash "q" \x00\x07', uri=SipUri(host="h"), params={"p": "two words"})
    assert NameAddr.parse(str(odd)) == NameAddr(odd.display, odd.uri, {"p": '"two words"'})


@pytest.mark.parametrize("text, words", [
    ('"unterminated <sip:a@b>', "Unterminated quoted string"),
    ('"x" sip:a@b', "not followed by <URI>"),
    ("Bell, Alexander <sip:a@b>", "must be quoted"),
    ("< sip:a@b >", "Whitespace inside <URI>"),
    ("<sip:a@b", "Missing '>'"),
    ("<>", "Empty <URI>"),
    ("Joe sip:a@b", "Whitespace in addr-spec"),
    ("sip:a@b?Route=x", "enclosed in <>"),
    ("<sip:a@b>;;", "Empty parameter"),
    ("<sip:a@b> junk", "Unexpected text"),
    ("<sip:a@b>;tag=", "parameter value"),
    ('<sip:a@b>;x="open', "Unterminated quoted string"),
    ("", "Empty address"),
])
def test_bad_name_addrs(text: str, words: str) -> None:
    with pytest.raises(UriError) as err:
        NameAddr.parse(text)
    assert words in err.value.reason


def test_name_addr_list_respects_quotes_and_brackets() -> None:
    items = parse_name_addr_list('"Watson, Thomas" <sip:t@b;x=1>, <sip:c,x@d>;q=0.5 ,sip:e@f')
    assert [i.display for i in items] == ["Watson, Thomas", None, None]
    assert [str(i.uri) for i in items] == ["sip:t@b;x=1", "sip:c,x@d", "sip:e@f"]
    assert items[1].params == {"q": "0.5"}
    with pytest.raises(UriError, match="Empty element"):
        parse_name_addr_list("<sip:a@b>,,<sip:c@d>")
    with pytest.raises(UriError, match="not an address"):
        parse_name_addr_list("*")


def test_split_commas() -> None:
    assert split_commas('a, "b,c" , <d,e>, \\,') == ["a", '"b,c"', "<d,e>", "\\", ""]
    assert split_commas('"x\\",y", z') == ['"x\\",y"', "z"]


# --- properties -------------------------------------------------------------------------------------
_chars = st.characters(blacklist_categories=("Cs",))  # no lone surrogates: they are not text
_text = st.text(_chars, min_size=1, max_size=12)
_any_text = st.text(_chars, max_size=8)
_lower_text = _text.filter(lambda s: s.lower() == s)
_hosts = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9.\-]{0,20}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)


@st.composite
def _uris(draw: st.DrawFn) -> SipUri:
    user = draw(st.none() | _text)
    return SipUri(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        user=user,
        password=None if user is None else draw(st.none() | _any_text),
        host=draw(_hosts),
        port=draw(st.none() | st.integers(0, 65535)),
        params=draw(st.dictionaries(_lower_text, st.none() | _text, max_size=4)),
        headers=draw(st.dictionaries(_text, _any_text, max_size=3)),
    )


@settings(max_examples=150, deadline=None)
@given(_uris())
def test_sip_uri_str_reparses_equal(u: SipUri) -> None:
    text = str(u)
    assert text.isascii() and " " not in text
    assert SipUri.parse(text) == u


@settings(max_examples=100, deadline=None)
@given(_uris(), st.none() | _text, st.dictionaries(st.from_regex(r"[a-z][a-z0-9\-]{0,8}", fullmatch=True),
                                                 st.none() | _text, max_size=3))
def test_name_addr_str_reparses_equal(u: SipUri, display: str | None, params: dict[str, str | None]) -> None:
    a = NameAddr(display, u, params)
    b = NameAddr.parse(str(a))
    assert b.display == (None if display is None else display.replace("\r", " ").replace("\n", " "))
    assert b.uri == u and b.params.keys() == params.keys()
    assert NameAddr.parse(str(b)) == b  # quoting a value is a one-time normalisation


@settings(max_examples=300, deadline=None)
@given(st.text(string.printable + "\"<>;,\\ \t%@:", max_size=80))
def test_uri_and_name_addr_parsers_only_raise_uri_error(text: str) -> None:
    for fn in (SipUri.parse, parse_uri, NameAddr.parse, parse_name_addr_list):
        try:
            fn(text)
        except UriError:
            pass
