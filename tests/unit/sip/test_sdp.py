"""SDP parsing/encoding and audio offer/answer against real-world and RFC 4317 bodies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.sip import sdp
from firmware.sip.sdp import (Connection, Media, Negotiated, NoCommonCodec, Origin, RtpMap,
                              SdpError, SessionDescription, Timing, bump_version, make_offer,
                              negotiate, parse, parse_answer)


def crlf(text: str) -> bytes:
    return "".join(line + "\r\n" for line in text.strip("\n").split("\n")).encode()


# Captured from baresip 1.0.0 (Debian) dialling on loopback, byte for byte.
BARESIP_OFFER = crlf("""\
v=0
o=- 3196907004 2070904643 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
a=tool:baresip 1.0.0
m=audio 10044 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=rtcp-rsize
a=ssrc:26440812 cname:sip:alice@127.0.0.1:5199
a=minptime:20
a=ptime:20""")

# linphone 5.x: opus/speex first, telephone-event at three rates, a video stream.
LINPHONE_OFFER = crlf("""\
v=0
o=carol 3267 1398 IN IP4 192.168.1.20
s=Talk
c=IN IP4 192.168.1.20
t=0 0
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
a=record:off
m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:97 speex/16000
a=fmtp:97 vbr=on
a=rtpmap:98 speex/8000
a=fmtp:98 vbr=on
a=fmtp:18 annexb=yes
a=rtpmap:101 telephone-event/48000
a=rtpmap:99 telephone-event/16000
a=rtpmap:100 telephone-event/8000
a=rtcp:7079
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:* ccm tmmbr
m=video 9078 RTP/AVP 96
a=rtpmap:96 VP8/90000
a=rtcp:9079
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:96 nack pli
a=rtcp-fb:96 ccm fir""")

# SIPp 3.6.1 built-in uac_pcap scenario, with its [fields] filled in as it sends them.
SIPP_PCAP_OFFER = crlf("""\
v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 16000 RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-11,16""")

# Asterisk (chan_pjsip) initial offer, then its hold re-INVITE and a T.38 switch-over.
ASTERISK_OFFER = crlf("""\
v=0
o=- 1733000000 1733000002 IN IP4 10.20.30.40
s=Asterisk
c=IN IP4 10.20.30.40
t=0 0
m=audio 14982 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
a=sendrecv""")
ASTERISK_HOLD = ASTERISK_OFFER.replace(b"1733000002 IN", b"1733000003 IN").replace(b"a=sendrecv", b"a=sendonly")
ASTERISK_T38 = crlf("""\
v=0
o=- 1733000000 1733000004 IN IP4 10.20.30.40
s=Asterisk
c=IN IP4 10.20.30.40
t=0 0
m=image 4398 udptl t38
a=T38FaxVersion:0
a=T38MaxBitRate:14400
a=T38FaxRateManagement:transferredTCF
a=T38FaxMaxDatagram:400
a=T38FaxUdpEC:t38UDPRedundancy""")

# RFC 4317 §2.1 (Audio and Video 1), offer and answer as published.
RFC4317_OFFER = crlf("""\
v=0
o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com
s=
c=IN IP4 host.atlanta.example.com
t=0 0
m=audio 49170 RTP/AVP 0 8 97
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:97 iLBC/8000
m=video 51372 RTP/AVP 31 32
a=rtpmap:31 H261/90000
a=rtpmap:32 MPV/90000""")
RFC4317_ANSWER = crlf("""\
v=0
o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com
s=
c=IN IP4 host.biloxi.example.com
t=0 0
m=audio 49174 RTP/AVP 0
a=rtpmap:0 PCMU/8000
m=video 49170 RTP/AVP 32
a=rtpmap:32 MPV/90000""")

# An old phone putting us on hold the RFC 2543 way.
RFC2543_HOLD = crlf("""\
v=0
o=Cisco-SIPUA 2218 1 IN IP4 0.0.0.0
s=SIP Call
c=IN IP4 0.0.0.0
t=0 0
m=audio 28994 RTP/AVP 0 8 101
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15""")

ALL_FIXTURES = [BARESIP_OFFER, LINPHONE_OFFER, SIPP_PCAP_OFFER, ASTERISK_OFFER, ASTERISK_HOLD,
                ASTERISK_T38, RFC4317_OFFER, RFC4317_ANSWER, RFC2543_HOLD]


def offer_with_media(media: str, conn: str = "IN IP4 192.0.2.5", session_attr: str = "") -> bytes:
    head = f"v=0\no=x 1 1 IN IP4 192.0.2.5\ns=-\nc={conn}\nt=0 0\n{session_attr}"
    return crlf(head + media)


# --- parsing ----------------------------------------------------------------------------------------

def test_parse_baresip_offer_fields():
    sd = parse(BARESIP_OFFER)
    assert sd.origin == Origin("-", "3196907004", 2070904643, "IN", "IP4", "127.0.0.1")
    assert (sd.name, sd.connection, sd.timing) == ("-", Connection("IN", "IP4", "127.0.0.1"), [Timing(0, 0)])
    assert sd.attributes == [("tool", "baresip 1.0.0")]
    (m,) = sd.media
    assert (m.kind, m.port, m.proto, m.formats) == ("audio", 10044, "RTP/AVP", ["0", "8", "101"])
    assert m.rtpmap == {0: RtpMap("PCMU", 8000), 8: RtpMap("PCMA", 8000), 101: RtpMap("telephone-event", 8000)}
    assert m.fmtp == {101: "0-15"}
    assert (m.ptime, m.direction) == (20, "sendrecv")
    assert m.attributes == [("label", "1"), ("rtcp-rsize", None),
                            ("ssrc", "26440812 cname:sip:alice@127.0.0.1:5199"), ("minptime", "20")]


def test_parse_linphone_offer_keeps_channels_fmtp_without_rtpmap_and_order():
    sd = parse(LINPHONE_OFFER)
    audio, video = sd.media
    assert audio.rtpmap[96] == RtpMap("opus", 48000, 2)
    assert audio.fmtp[18] == "annexb=yes" and 18 not in audio.rtpmap
    assert audio.codec(18) == RtpMap("G729", 8000)  # static table fallback
    assert [a[0] for a in audio.attributes] == ["rtcp", "rtcp-fb", "rtcp-fb"]
    assert video.formats == ["96"] and video.rtpmap[96] == RtpMap("VP8", 90000)
    assert sd.media_direction(audio) == "sendrecv"


def test_parse_accepts_str_and_bare_lf():
    assert parse(BARESIP_OFFER.decode().replace("\r\n", "\n")) == parse(BARESIP_OFFER)


@pytest.mark.parametrize("fixture", ALL_FIXTURES)
def test_round_trip_is_stable(fixture):
    sd = parse(fixture)
    assert parse(sd.encode()) == sd
    assert parse(sd.encode()).encode() == sd.encode()


@pytest.mark.parametrize("fixture", [LINPHONE_OFFER, SIPP_PCAP_OFFER, ASTERISK_OFFER, ASTERISK_HOLD,
                                     ASTERISK_T38, RFC4317_OFFER, RFC4317_ANSWER, RFC2543_HOLD])
def test_round_trip_is_byte_exact_for_canonical_layouts(fixture):
    assert parse(fixture).encode() == fixture


@pytest.mark.parametrize("text,line,reason", [
    ("", None, "empty session description"),
    ("o=- 1 1 IN IP4 1.2.3.4\ns=-", 1, "first line must be v="),
    ("v=1\no=- 1 1 IN IP4 1.2.3.4\ns=-", 1, "unsupported version"),
    ("v=0\no=- 1 1 IN IP4\ns=-", 2, "o= needs 6 fields"),
    ("v=0\no=- 1 x IN IP4 1.2.3.4\ns=-", 2, "session version is not a number"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\nm=audio 70000 RTP/AVP 0", 5, "port 70000 out of range"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 0 x", 5, "payload type is not a number"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 200", 5, "payload type 200 out of range"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP", 5, "m= line lists no formats"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nm=audio", 5, "m= needs"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 0\na=rtpmap:0 PCMU", 6, "rtpmap must be"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 0\na=rtpmap:0 PCMU/abc", 6, "clock rate"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 0\na=ptime:0", 6, "ptime 0 out of range"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 0\na=ptime:fast", 6, "ptime is not a number"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 0\na=sendonly\na=recvonly", 7,
     "conflicting direction"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n"
     "a=rtpmap:0 PCMA/8000", 7, "duplicate rtpmap"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nm=audio 5 RTP/AVP 0", 4, "no c= line"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4\nt=0 0", 4, "c= needs 3 fields"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0", 5, "t= needs 2 fields"),
    # c= addresses: each went on to a socket call (and leaked an RTP port pair) before
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 127.0.0.1;x=y", 4, "neither an IP4 address nor a host name"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 300.1.1.1", 4, "neither an IP4 address nor a host name"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 ::1", 4, "::1 is not an IP4 address"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP6 10.0.0.1", 4, "10.0.0.1 is not an IP6 address"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP5 10.0.0.1", 4, "address type 'IP5' is not IP4 or IP6"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=ATM NSAP 47.0091", 4, "network type 'ATM' is not IN"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 224.2.1.1/x", 4, "bad /ttl[/count] suffix"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 -host-.example", 4, "nor a host name"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 " + "a" * 64 + ".example", 4, "nor a host name"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nb=AS", 4, "b= must be"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nx=1", 4, "unknown line type 'x='"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 0\nt=0 0", 6, "session-level line"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\ns=again", 4, "more than one s= line"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\n\ns=-", 3, "expected '<type>=<value>'"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns =-", 3, "expected '<type>=<value>'"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\nr=7d 1h 0 25h\ns=-", 3, "r= without a preceding t="),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\na=: x", 4, "bad attribute name"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=a\x00b", 3, "stray CR or NUL"),
    ("v=0\ns=-", None, "missing o= line"),
    ("v=0\no=- 1 1 IN IP4 1.2.3.4", None, "missing s= line"),
])
def test_malformed_sdp_names_line_and_reason(text, line, reason):
    with pytest.raises(SdpError) as info:
        parse(text)
    assert info.value.line == line
    assert reason in info.value.reason
    assert str(info.value).startswith(f"line {line}: " if line else reason)


def test_invalid_utf8_reports_the_line():
    with pytest.raises(SdpError) as info:
        parse(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=caf\xe9\r\n")
    assert info.value.line == 3 and "UTF-8" in info.value.reason


def test_lone_surrogate_in_str_reports_the_line():
    with pytest.raises(SdpError) as info:
        parse("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=caf\udce9\n")
    assert info.value.line == 3


def test_sdp_error_is_a_value_error_and_no_common_codec_is_not_an_sdp_error():
    assert issubclass(SdpError, ValueError)
    assert issubclass(NoCommonCodec, ValueError) and not issubclass(NoCommonCodec, SdpError)


# --- offers ------------------------------------------------------------------------------------------

def test_make_offer_bytes():
    offer = make_offer("192.0.2.10", 16384, session_id=42, version=1)
    assert offer.encode() == crlf("""\
v=0
o=- 42 1 IN IP4 192.0.2.10
s=Earshot
c=IN IP4 192.0.2.10
t=0 0
m=audio 16384 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv""")


def test_make_offer_ipv6_hold_and_options():
    offer = make_offer("2001:db8::7", 20000, codecs=("PCMA",), telephone_event_pt=None, ptime=30,
                       direction="sendonly")
    assert offer.connection == Connection("IN", "IP6", "2001:db8::7")
    (m,) = offer.media
    assert (m.formats, m.ptime, m.direction) == (["8"], 30, "sendonly")
    assert offer.origin.session_id.isdigit()
    assert make_offer("192.0.2.1", 4000).origin.session_id != make_offer("192.0.2.1", 4000).origin.session_id


@pytest.mark.parametrize("kw", [{"codecs": ("OPUS",)}, {"codecs": ()}, {"port": 0}, {"port": 70000},
                                {"direction": "both"}, {"telephone_event_pt": 50}, {"ptime": 5},
                                {"addr": "bad addr"}])
def test_make_offer_rejects_bad_arguments(kw):
    args = {"addr": "192.0.2.1", "port": 4000, **kw}
    with pytest.raises(ValueError):
        make_offer(**args)


def test_bump_version_copies_and_increments():
    offer = make_offer("192.0.2.1", 4000, session_id=7, version=3)
    again = bump_version(offer)
    assert (again.origin.session_id, again.origin.version, offer.origin.version) == ("7", 4, 3)
    assert again.media == offer.media and again.media[0] is not offer.media[0]


# --- answering -------------------------------------------------------------------------------------

def test_answer_baresip_offer():
    answer, neg = negotiate(parse(BARESIP_OFFER), "192.0.2.10", 16384, session_id=9, version=1)
    assert neg == Negotiated("PCMU", 0, 8000, 101, 20, "127.0.0.1", 10044, "sendrecv", 0)
    assert answer.encode() == crlf("""\
v=0
o=- 9 1 IN IP4 192.0.2.10
s=Earshot
c=IN IP4 192.0.2.10
t=0 0
m=audio 16384 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv""")
    # The offerer's view of our answer agrees with ours.
    theirs = parse_answer(parse(BARESIP_OFFER), parse(answer.encode()))
    assert (theirs.codec, theirs.payload_type, theirs.telephone_event_pt, theirs.direction) == ("PCMU", 0, 101, "sendrecv")
    assert (theirs.remote_addr, theirs.remote_port) == ("192.0.2.10", 16384)


def test_supported_list_limits_the_choice():
    _, neg = negotiate(parse(BARESIP_OFFER), "192.0.2.10", 16384, supported=("PCMA",))
    assert (neg.codec, neg.payload_type) == ("PCMA", 8)


def test_answer_follows_offerer_preference_order():
    offer = offer_with_media("m=audio 5004 RTP/AVP 8 0\n")  # static types, no rtpmap at all
    answer, neg = negotiate(parse(offer), "192.0.2.10", 16384)
    assert (neg.codec, neg.payload_type, neg.clock_rate, neg.telephone_event_pt) == ("PCMA", 8, 8000, None)
    assert answer.media[0].formats == ["8"]


def test_answer_linphone_picks_g711_and_8k_telephone_event_and_rejects_video():
    offer = parse(LINPHONE_OFFER)
    answer, neg = negotiate(offer, "192.0.2.10", 16384)
    assert (neg.codec, neg.payload_type, neg.telephone_event_pt) == ("PCMU", 0, 100)
    assert (neg.remote_addr, neg.remote_port, neg.ptime) == ("192.168.1.20", 7078, 20)
    audio, video = answer.media
    assert audio.formats == ["0", "100"] and audio.fmtp == {100: "0-15"}
    assert (video.kind, video.port, video.proto, video.formats) == ("video", 0, "RTP/AVP", ["96"])


def test_answer_sipp_pcap_offer_pcma_with_dtmf():
    _, neg = negotiate(parse(SIPP_PCAP_OFFER), "127.0.0.1", 6000)
    assert (neg.codec, neg.payload_type, neg.telephone_event_pt, neg.remote_port) == ("PCMA", 8, 101, 16000)


def test_dynamic_telephone_event_matched_by_name_case_insensitively():
    offer = offer_with_media("m=audio 5004 RTP/AVP 0 96\na=rtpmap:96 TELEPHONE-EVENT/8000\n")
    _, neg = negotiate(parse(offer), "192.0.2.10", 16384)
    assert neg.telephone_event_pt == 96
    _, neg = negotiate(parse(offer), "192.0.2.10", 16384, telephone_event=False)
    assert neg.telephone_event_pt is None


def test_dynamic_codec_matched_by_name_and_rate_not_number():
    offer = offer_with_media("m=audio 5004 RTP/AVP 97 98\na=rtpmap:97 PCMU/16000\na=rtpmap:98 pcma/8000\n")
    _, neg = negotiate(parse(offer), "192.0.2.10", 16384)
    assert (neg.codec, neg.payload_type) == ("PCMA", 98)


def test_offered_ptime_is_what_we_send():
    offer = offer_with_media("m=audio 5004 RTP/AVP 0\na=ptime:30\n")
    answer, neg = negotiate(parse(offer), "192.0.2.10", 16384)
    assert neg.ptime == 30 and answer.media[0].ptime == 20


def test_rfc4317_audio_and_video_1():
    # the RFC's host names as addresses (the media plane takes IP literals; a host name is
    # refused with its reason, test_an_offer_naming_a_host_is_refused_with_the_reason)
    offer_text = RFC4317_OFFER.replace(b"host.atlanta.example.com", b"192.0.2.1")
    answer, neg = negotiate(parse(offer_text), "192.0.2.10", 49174)
    published = parse(RFC4317_ANSWER.replace(b"c=IN IP4 host.biloxi.example.com", b"c=IN IP4 192.0.2.2"))
    # Same audio choice as the RFC's Bob; we cannot do video, so it is refused in place.
    assert answer.media[0].formats == published.media[0].formats == ["0"]
    assert [(m.kind, m.port) for m in answer.media] == [("audio", 49174), ("video", 0)]
    assert answer.timing == parse(offer_text).timing
    ours = parse_answer(parse(offer_text), published)
    assert (ours.codec, ours.remote_addr, ours.remote_port) == ("PCMU", "192.0.2.2", 49174)
    with pytest.raises(NoCommonCodec, match="c= names host 'host.biloxi.example.com'"):
        parse_answer(parse(offer_text), parse(RFC4317_ANSWER))


@pytest.mark.parametrize("offered,answered", [("sendrecv", "sendrecv"), ("sendonly", "recvonly"),
                                              ("recvonly", "sendonly"), ("inactive", "inactive")])
def test_hold_directions_are_complemented(offered, answered):
    offer = offer_with_media(f"m=audio 5004 RTP/AVP 0\na={offered}\n")
    answer, neg = negotiate(parse(offer), "192.0.2.10", 16384)
    assert answer.media[0].direction == neg.direction == answered
    assert answer.media[0].port == 16384  # held, not rejected


def test_session_level_direction_applies_to_media():
    offer = offer_with_media("m=audio 5004 RTP/AVP 0\n", session_attr="a=sendonly\n")
    assert negotiate(parse(offer), "192.0.2.10", 16384)[1].direction == "recvonly"


def test_asterisk_hold_and_unhold():
    _, held = negotiate(parse(ASTERISK_HOLD), "192.0.2.10", 16384, version=2)
    assert (held.direction, held.sending, held.receiving) == ("recvonly", False, True)
    _, resumed = negotiate(parse(ASTERISK_OFFER), "192.0.2.10", 16384, version=3)
    assert (resumed.direction, resumed.sending) == ("sendrecv", True)


def test_rfc2543_hold_with_zero_address():
    answer, neg = negotiate(parse(RFC2543_HOLD), "192.0.2.10", 16384)
    assert (neg.direction, neg.remote_addr, neg.sending) == ("recvonly", "0.0.0.0", False)
    assert answer.media[0].direction == "recvonly"


@pytest.mark.parametrize("ours,theirs,result", [("sendonly", "sendrecv", "sendonly"),
                                                ("sendonly", "sendonly", "inactive"),
                                                ("inactive", "sendrecv", "inactive"),
                                                ("recvonly", "recvonly", "inactive")])
def test_local_hold_combines_with_offer(ours, theirs, result):
    offer = offer_with_media(f"m=audio 5004 RTP/AVP 0\na={theirs}\n")
    assert negotiate(parse(offer), "192.0.2.10", 16384, local_direction=ours)[1].direction == result


def test_port_zero_and_second_audio_streams_rejected_in_order():
    offer = offer_with_media("m=audio 0 RTP/AVP 0\n"           # disabled by the offerer
                             "m=audio 5006 RTP/AVP 18\na=rtpmap:18 G729/8000\n"  # no match
                             "m=audio 5008 RTP/AVP 8\n"          # ours
                             "m=audio 5010 RTP/AVP 0\n"          # a second usable audio: one stream only
                             "m=image 5012 udptl t38\n")
    answer, neg = negotiate(parse(offer), "192.0.2.10", 16384)
    assert neg.media_index == 2 and neg.codec == "PCMA"
    assert [(m.kind, m.port, m.formats) for m in answer.media] == [
        ("audio", 0, ["0"]), ("audio", 0, ["18"]), ("audio", 16384, ["8"]), ("audio", 0, ["0"]),
        ("image", 0, ["t38"])]
    assert parse(answer.encode()) == answer


@pytest.mark.parametrize("offer", [
    offer_with_media("m=audio 5004 RTP/AVP 18 4\na=rtpmap:18 G729/8000\n"),
    offer_with_media("m=audio 5004 RTP/AVP 96\na=rtpmap:96 opus/48000/2\n"),
    offer_with_media("m=audio 5004 RTP/AVP 97\n"),                       # dynamic without rtpmap
    offer_with_media("m=audio 5004 RTP/SAVP 0\n"),                       # SRTP only
    offer_with_media("m=audio 5004 RTP/AVP 0\n", conn="IN IP6 2001:db8::1"),  # other address family
    offer_with_media("m=audio 0 RTP/AVP 0\n"),
    offer_with_media("m=video 5004 RTP/AVP 96\na=rtpmap:96 VP8/90000\n"),
    ASTERISK_T38,
])
def test_no_acceptable_audio_raises_no_common_codec(offer):
    with pytest.raises(NoCommonCodec):
        negotiate(parse(offer), "192.0.2.10", 16384)


def test_ipv6_offer_with_ipv6_local_address():
    offer = offer_with_media("m=audio 5004 RTP/AVP 0\n", conn="IN IP6 2001:db8::1")
    answer, neg = negotiate(parse(offer), "2001:db8::10", 16384)
    assert neg.remote_addr == "2001:db8::1" and answer.connection == Connection("IN", "IP6", "2001:db8::10")


def test_answer_copies_the_offer_timing():
    offer = parse(RFC4317_OFFER.replace(b"t=0 0", b"t=3034423619 3042462419")
                  .replace(b"host.atlanta.example.com", b"192.0.2.1"))
    answer, _ = negotiate(offer, "192.0.2.10", 16384)
    assert answer.timing == [Timing(3034423619, 3042462419)]
    assert b"\r\nt=3034423619 3042462419\r\n" in answer.encode()


def test_reanswer_keeps_session_id_and_takes_version():
    offer = parse(ASTERISK_OFFER)
    first, _ = negotiate(offer, "192.0.2.10", 16384, session_id=77, version=1)
    second, _ = negotiate(parse(ASTERISK_HOLD), "192.0.2.10", 16384, session_id=77, version=2)
    assert (first.origin.session_id, first.origin.version) == ("77", 1)
    assert (second.origin.session_id, second.origin.version) == ("77", 2)


def test_negotiate_rejects_bad_local_arguments():
    offer = parse(ASTERISK_OFFER)
    for kw in ({"supported": ("AMR",)}, {"local_direction": "hold"}, {"local_port": 0}, {"ptime": 1000}):
        args = {"offer": offer, "local_addr": "192.0.2.10", "local_port": 16384, **kw}
        with pytest.raises(ValueError):
            negotiate(**args)


# --- answers to our offers --------------------------------------------------------------------------

ASTERISK_ANSWER = crlf("""\
v=0
o=- 1733000100 1733000101 IN IP4 10.20.30.40
s=Asterisk
c=IN IP4 10.20.30.40
t=0 0
m=audio 15000 RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
a=sendrecv""")


def test_parse_answer_from_asterisk():
    neg = parse_answer(make_offer("192.0.2.10", 16384), parse(ASTERISK_ANSWER))
    assert neg == Negotiated("PCMA", 8, 8000, 101, 20, "10.20.30.40", 15000, "sendrecv", 0)


def test_parse_answer_without_our_telephone_event_offer():
    neg = parse_answer(make_offer("192.0.2.10", 16384, telephone_event_pt=None), parse(ASTERISK_ANSWER))
    assert neg.telephone_event_pt is None


@pytest.mark.parametrize("ours,theirs,result", [("sendonly", "recvonly", "sendonly"),
                                                ("sendrecv", "sendonly", "recvonly"),
                                                ("sendrecv", "inactive", "inactive"),
                                                ("recvonly", "sendonly", "recvonly")])
def test_parse_answer_directions(ours, theirs, result):
    answer = parse(ASTERISK_ANSWER.replace(b"a=sendrecv", f"a={theirs}".encode()))
    assert parse_answer(make_offer("192.0.2.10", 16384, direction=ours), answer).direction == result


def test_parse_answer_zero_address_means_do_not_send():
    answer = parse(ASTERISK_ANSWER.replace(b"c=IN IP4 10.20.30.40", b"c=IN IP4 0.0.0.0"))
    assert parse_answer(make_offer("192.0.2.10", 16384), answer).direction == "recvonly"


def test_parse_answer_rejections():
    offer = make_offer("192.0.2.10", 16384)
    with pytest.raises(NoCommonCodec):
        parse_answer(offer, parse(ASTERISK_ANSWER.replace(b"m=audio 15000", b"m=audio 0")))
    with pytest.raises(NoCommonCodec):  # answered a codec we never offered
        parse_answer(make_offer("192.0.2.10", 16384, codecs=("PCMU",)), parse(ASTERISK_ANSWER))
    with pytest.raises(SdpError, match="media sections"):
        parse_answer(offer, parse(RFC4317_ANSWER))
    with pytest.raises(SdpError, match="is video"):
        parse_answer(offer, parse(ASTERISK_ANSWER.replace(b"m=audio", b"m=video")))


# --- properties ---------------------------------------------------------------------------------------

_word = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._"), min_size=1, max_size=12)
_line_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30).map(str.strip)
_attr = st.tuples(_word.filter(lambda w: w not in sdp.DIRECTIONS + ("rtpmap", "fmtp", "ptime")),
                  st.none() | _line_text)
_hostname = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9](\.[a-z]{2,6}){0,2}", fullmatch=True)
_conn = st.one_of(
    st.builds(Connection, st.just("IN"), st.just("IP4"), st.ip_addresses(v=4).map(str) | _hostname),
    st.builds(Connection, st.just("IN"), st.just("IP6"), st.ip_addresses(v=6).map(str) | _hostname))


@st.composite
def _media(draw) -> Media:
    pts = draw(st.lists(st.integers(0, 127), min_size=1, max_size=6, unique=True))
    m = Media(kind=draw(st.sampled_from(["audio", "video", "text"])), port=draw(st.integers(0, 65535)),
              proto=draw(st.sampled_from(["RTP/AVP", "RTP/AVPF", "RTP/SAVP"])), formats=[str(p) for p in pts],
              port_count=draw(st.none() | st.integers(1, 4)), connection=draw(_conn),
              bandwidths=draw(st.lists(st.sampled_from(["AS:64", "TIAS:64000"]), max_size=2)))
    for pt in draw(st.lists(st.sampled_from(pts), unique=True)):
        m.rtpmap[pt] = RtpMap(draw(_word), draw(st.integers(1, 96000)), draw(st.none() | st.integers(1, 8)))
    for pt in draw(st.lists(st.sampled_from(pts), unique=True)):
        m.fmtp[pt] = draw(_line_text)
    m.ptime = draw(st.none() | st.integers(1, 1000))
    m.direction = draw(st.none() | st.sampled_from(sdp.DIRECTIONS))
    m.attributes = draw(st.lists(_attr, max_size=4))
    return m


_session = st.builds(
    SessionDescription,
    origin=st.builds(Origin, _word, st.integers(0, 2**64).map(str), st.integers(0, 2**64), st.just("IN"),
                     st.sampled_from(["IP4", "IP6"]), _word),
    name=_line_text, info=st.none() | _line_text, connection=st.none() | _conn,
    timing=st.lists(st.builds(Timing, st.integers(0, 2**32), st.integers(0, 2**32)), max_size=2),
    direction=st.none() | st.sampled_from(sdp.DIRECTIONS), attributes=st.lists(_attr, max_size=3),
    media=st.lists(_media(), max_size=3))


@settings(max_examples=200, deadline=None)
@given(_session)
def test_property_encode_parse_round_trip(sd):
    assert parse(sd.encode()) == sd


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_property_garbage_raises_only_sdp_error(data):
    try:
        parse(data)
    except SdpError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ALL_FIXTURES), st.data())
def test_property_mangled_fixture_lines_raise_only_sdp_error(fixture, data):
    lines = fixture.decode().split("\r\n")
    i = data.draw(st.integers(0, len(lines) - 1))
    lines[i] = data.draw(st.text(max_size=40))
    try:
        sd = parse("\r\n".join(lines))
    except SdpError:
        return
    try:
        negotiate(sd, "192.0.2.10", 16384)
    except NoCommonCodec:
        pass


@pytest.mark.parametrize("address", ["1.2.3.4", "224.2.1.1/127", "224.2.1.1/127/3", "host.atlanta.example.com",
                                     "host.example.com.", "localhost", "pbx"])
def test_good_connection_addresses_parse(address):
    sd = parse(f"v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 {address}\nt=0 0")
    assert sd.connection.address == address and sd.connection.host == address.split("/")[0]


def test_an_offer_naming_a_host_is_refused_with_the_reason():
    offer = parse(RFC4317_OFFER)                      # c=IN IP4 host.atlanta.example.com
    with pytest.raises(NoCommonCodec, match="c= names host 'host.atlanta.example.com'; only IP addresses"):
        negotiate(offer, "127.0.0.1", 4000)
