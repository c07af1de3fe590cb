"""Framing of the event socket: byte-exact lengths, FreeSWITCH's url-encoding, packet parsing."""
from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.control import protocol as p
from firmware.switch.events import Event


def read(data: bytes):
    async def main():
        r = asyncio.StreamReader(limit=1 << 20)
        r.feed_data(data)
        r.feed_eof()
        return await p.read_packet(r)
    return asyncio.run(main())


def test_url_encode_is_freeswitchs_unsafe_set_on_utf8_bytes():
    assert p.url_encode("CHANNEL_CREATE") == "CHANNEL_CREATE"
    assert p.url_encode("sofia/internal/1001@10.0.0.1:5060") == "sofia/internal/1001%4010.0.0.1%3A5060"
    assert p.url_encode("2024-01-02 03:04:05") == "2024-01-02%2003%3A04%3A05"
    assert p.url_encode("a+b&c=d;e<f>\"g\"") == "a%2Bb%26c%3Dd%3Be%3Cf%3E%22g%22"
    assert p.url_encode("Zoë") == "Zo%C3%AB"
    assert p.url_encode("line1\nline2\r") == "line1%0Aline2%0D"
    assert p.url_encode("100%41") == "100%2541"  # % always encoded: the value round-trips


@given(st.text())
def test_url_encoding_round_trips_and_leaves_no_separator(text):
    enc = p.url_encode(text)
    assert unquote(enc, encoding="utf-8", errors="strict") == text
    assert not set(enc) & set(" \n\r:")


def make_event(body: str = "") -> Event:
    return Event("BACKGROUND_JOB", {"Event-Name": "BACKGROUND_JOB", "Job-UUID": "j-1",
                                    "Job-Command": "originate", "Job-Command-Arg": "user/1001 &echo()",
                                    "Empty": ""}, body)


def test_plain_event_with_body_has_inner_and_outer_lengths_in_bytes():
    body = "+OK wéé\n"
    frame = p.event_frame(make_event(body), "plain")
    head, _, payload = frame.partition(b"\n\n")
    assert head.split(b"\n") == [b"Content-Length: %d" % len(payload), b"Content-Type: text/event-plain"]
    text = payload.decode()
    assert text.startswith("Event-Name: BACKGROUND_JOB\nJob-UUID: j-1\nJob-Command: originate\n"
                           "Job-Command-Arg: user/1001%20%26echo()\nEmpty: _undef_\n")
    inner_head, _, inner_body = text.partition("\n\n")
    assert inner_head.endswith(f"Content-Length: {len(body.encode())}")
    assert inner_body == body and len(body.encode()) == 10


def test_plain_event_without_body_ends_with_a_blank_line():
    payload = p.event_frame(make_event(), "plain").partition(b"\n\n")[2]
    assert payload.endswith(b"Empty: _undef_\n\n") and b"Content-Length" not in payload


def test_json_event_carries_headers_and_body():
    frame = p.event_frame(make_event("x→y"), "json")
    head, _, payload = frame.partition(b"\n\n")
    assert head == b"Content-Length: %d\nContent-Type: text/event-json" % len(payload)
    obj = json.loads(payload)
    assert obj["Job-Command-Arg"] == "user/1001 &echo()" and obj["_body"] == "x→y"
    assert obj["Content-Length"] == str(len("x→y".encode()))


def test_xml_event_parses_and_url_encodes_header_values():
    ev = make_event("<ok & done>")
    ev.headers["bad name"] = "dropped"
    frame = p.event_frame(ev, "xml")
    head, _, payload = frame.partition(b"\n\n")
    assert head == b"Content-Length: %d\nContent-Type: text/event-xml" % len(payload)
    root = ET.fromstring(payload)
    headers = {child.tag: child.text or "" for child in root.find("headers")}
    assert unquote(headers["Job-Command-Arg"]) == "user/1001 &echo()"
    assert root.find("body").text == "<ok & done>"
    assert "bad name" not in payload.decode()


def test_unknown_format_is_a_value_error():
    with pytest.raises(ValueError, match="unknown event format"):
        p.event_frame(make_event(), "yaml")


@given(st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True), st.text(), max_size=8),
       st.text(), st.sampled_from(p.FORMATS))
def test_every_frame_length_counts_the_utf8_bytes_that_follow(headers, body, fmt):
    frame = p.event_frame(Event("CUSTOM", headers, body), fmt)
    head, _, payload = frame.partition(b"\n\n")
    assert int(head.split(b"\n")[0].split(b": ")[1]) == len(payload)


def test_reply_frames_are_byte_exact():
    assert p.AUTH_REQUEST == b"Content-Type: auth/request\n\n"
    assert p.command_reply("+OK accepted") == b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
    assert p.command_reply("+OK Job-UUID: u", {"Job-UUID": "u"}) == \
        b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: u\nJob-UUID: u\n\n"
    assert p.command_reply("-ERR a\nb") == b"Content-Type: command/reply\nReply-Text: -ERR a b\n\n"
    body = "+OK ünïcode\n"
    assert p.api_response(body) == b"Content-Type: api/response\nContent-Length: 14\n\n" + body.encode()
    assert p.rude_rejection() == b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n"
    assert p.disconnect_notice("bye\n") == b"Content-Type: text/disconnect-notice\nContent-Length: 4\n\nbye\n"


def test_read_packet_command_headers_and_body():
    pkt = read(b"\n\r\nsendevent CUSTOM\r\nEvent-Subclass: eavesdrop::x\nUnique-ID: abc\n"
               b"no colon line\ncontent-length: 5\n\nh\xc3\xa9llnext")
    assert pkt.command == "sendevent CUSTOM"
    assert pkt.headers == [("Event-Subclass", "eavesdrop::x"), ("Unique-ID", "abc")]
    assert pkt.header("unique-id") == "abc" and pkt.body == "héll"


def test_read_packet_keeps_the_auth_line_exactly():
    assert read(b"auth pass word \n\n").command == "auth pass word "


@pytest.mark.parametrize("clen", ["-1", "abc", "12x", str(p.MAX_BODY_BYTES + 1), "99999999999999999999"])
def test_bad_content_length_is_a_protocol_error(clen):
    with pytest.raises(p.ProtocolError, match="Content-Length"):
        read(f"sendevent CUSTOM\nContent-Length: {clen}\n\n".encode())


def test_oversize_header_block_and_bad_utf8_are_protocol_errors():
    with pytest.raises(p.ProtocolError, match="longer than"):
        read(b"api x\n" + b"H: " + b"v" * p.MAX_HEADER_BYTES + b"\n\n")
    with pytest.raises(p.ProtocolError, match="UTF-8"):
        read(b"api \xff\n\n")
    with pytest.raises(p.ProtocolError, match="UTF-8"):
        read(b"sendevent X\nContent-Length: 1\n\n\xff")


def test_end_of_stream_mid_packet_is_none():
    assert read(b"") is None
    assert read(b"api status\n") is None
    assert read(b"api stat") is None
    assert read(b"sendevent X\nContent-Length: 10\n\nabc") is None
