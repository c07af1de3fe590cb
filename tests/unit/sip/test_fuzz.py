"""Property tests of the SIP parser: hostile input only ever yields a message or a SipError, and
whatever parses re-encodes to something that parses back equal."""
from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.sip.message import (_INTERNAL, Headers, Request, Response, SipError, StreamFramer, Via, frame_stream,
                                  parse)
from firmware.sip.uri import NameAddr, SipUri

from .test_message import FIXTURES
from .test_rfc4475 import DATA, VALID

CORPUS = FIXTURES + [(DATA / f"{n}.dat").read_bytes() for n in VALID if (DATA / f"{n}.dat").is_file()]
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _headers_but_length(m: Request | Response) -> list[tuple[str, str]]:
    return [h for h in m.headers if h[0] != "Content-Length"]


def check(data: bytes) -> None:
    """parse gives a message or a SipError (never its safety net); a message round-trips."""
    try:
        msg = parse(data)
    except SipError as exc:
        assert exc.reason != _INTERNAL, repr(exc.__cause__)
        assert exc.status in (400, 505, 513)
        return
    again = parse(msg.encode())
    assert type(again) is type(msg) and again.body == msg.body
    assert _headers_but_length(again) == _headers_but_length(msg)
    if isinstance(msg, Request):
        assert (again.method, again.uri) == (msg.method, msg.uri)  # type: ignore[union-attr]
    else:
        assert (again.status, again.reason) == (msg.status, msg.reason)  # type: ignore[union-attr]
    assert parse(again.encode()) == again


@FUZZ
@given(st.binary(max_size=1500))
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


_SIPISH = st.text(string.ascii_letters[:12] + string.digits + " \t\r\n:;,<>\"\\%@=/.?&[]*-'~!+" + "Ωé\x00",
                  max_size=400)


@FUZZ
@given(st.sampled_from([b"INVITE sip:a@b SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n", b""]), _SIPISH)
def test_sip_shaped_text(start: bytes, text: str) -> None:
    check(start + text.encode())


_RUNS = [b" ", b"\t", b'"', b"\\", b"<", b">", b";", b",", b"%", b"\x00", b"\r\n ", b"9", b"=", b":"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "dup_line", "drop_line", "number", "run", "lf"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[at:]
        elif op in ("dup_line", "drop_line"):
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            if op == "dup_line":
                lines.insert(i, lines[i])
            else:
                del lines[i]
            data = bytearray(b"\r\n".join(lines))
        elif op == "number":
            data[at:at] = b"9" * draw(st.integers(10, 5000))
        elif op == "run":
            data[at:at] = draw(st.sampled_from(_RUNS)) * draw(st.integers(1, 20000))
        elif op == "lf":
            data = bytearray(bytes(data).replace(b"\r\n", b"\n", draw(st.integers(1, 3))))
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_messages(data: bytes) -> None:
    check(data)


@FUZZ
@given(mutated(), st.integers(16, 1500))
def test_frame_stream_on_mutated_streams(data: bytes, chunk: int) -> None:
    """Fed in chunks, the framer yields frames that parse (or SipError) and never loses bytes."""
    buf = bytearray()
    frames = []
    try:
        for i in range(0, len(data), chunk):
            buf += data[i:i + chunk]
            while (frame := frame_stream(buf, 65535)) is not None:
                frames.append(frame)
    except SipError as exc:
        assert exc.status in (400, 513)
        framer = StreamFramer(65535)
        try:
            for i in range(0, len(data), chunk):
                framer.feed(data[i:i + chunk])
        except SipError as exc2:
            assert (exc2.status, exc2.reason) == (exc.status, exc.reason)
        else:
            raise AssertionError("StreamFramer accepted what frame_stream refused")
        return
    pos = 0
    for f in frames:  # each frame is the data after some keep-alive CRLFs, in order
        while data.startswith(b"\r\n", pos):
            pos += 2
        assert data.startswith(f, pos)
        pos += len(f)
        check(f)
    rest = data[pos:]
    assert rest.endswith(bytes(buf)) and set(rest[:len(rest) - len(buf)].split(b"\r\n")) <= {b""}
    framer = StreamFramer(65535)  # the linear framer cuts the same frames
    assert [f for i in range(0, len(data), chunk) for f in framer.feed(data[i:i + chunk])] == frames


def test_hostile_runs_stay_linear() -> None:
    """Long runs of quotes, spaces, brackets and separators in the places the scanners look."""
    base = (b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: c\r\n"
            b"CSeq: 1 INVITE\r\nTo: <sip:t@b>\r\n")
    for run in (b" " * 7000, b'"' * 7000, b'\\"' * 3500, b"<" * 7000, b";" * 7000, b"," * 7000,
                b'"a' * 3500, b"; a =" * 1400):
        for line in (b"From: " + run + b"<sip:a@b>", b"From: <sip:a@b>" + run, b"Contact: " + run,
                     b"Via: SIP/2.0/UDP h" + run, b"Route: <sip:a@b>" + run + b"<sip:c@d>"):
            check(base + line + b"\r\n\r\n")
        check(b"INVITE sip:" + run + b"@b SIP/2.0\r\n\r\n")


# --- built messages -----------------------------------------------------------------------------------
_value = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20) \
    .map(lambda s: s.strip(" \t"))
_token = st.text(string.ascii_letters + string.digits + "-.!%*_+`'~", min_size=1, max_size=10)
_host = st.sampled_from(["example.com", "10.0.0.1", "[2001:db8::1]", "pbx-1.earshot.local"])
_name_addr = st.builds(lambda d, user, host, tag: str(NameAddr(d, SipUri(user=user or None, host=host), {"tag": tag})),
                       st.none() | _value, _value, _host, _token)
_via = st.builds(lambda t, host, port, br: str(Via(t, host, port, {"branch": br, "rport": None})),
                 st.sampled_from(["UDP", "TCP", "TLS"]), _host, st.none() | st.integers(1, 65535), _token)


@st.composite
def built(draw: st.DrawFn) -> Request | Response:
    h = Headers()
    for v in draw(st.lists(_via, min_size=1, max_size=3)):
        h.add("Via", v)
    h.add("From", draw(_name_addr))
    h.add("To", draw(_name_addr))
    h.add("Call-ID", draw(_token))
    method = draw(_token)
    h.add("CSeq", f"{draw(st.integers(0, 2**32 - 1))} {method}")
    for name, value in draw(st.lists(st.tuples(_token.map(lambda t: "X-" + t), _value), max_size=6)):
        h.add(name, value)
    body = draw(st.binary(max_size=200))
    if draw(st.booleans()):
        uri = SipUri(user=draw(_value) or None, host=draw(_host),
                     params=draw(st.dictionaries(_token.map(str.lower), st.none() | _token, max_size=3)))
        return Request(method, uri, h, body)
    return Response(draw(st.integers(100, 699)), draw(_value), h, body)


@settings(FUZZ, max_examples=150)
@given(built())
def test_built_messages_reparse_equal(msg: Request | Response) -> None:
    again = parse(msg.encode())
    assert _headers_but_length(again) == list(msg.headers)
    assert again.headers.get("Content-Length") == str(len(msg.body))
    again.headers.remove("Content-Length")
    assert again == msg
