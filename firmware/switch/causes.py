"""Q.850 hangup causes by FreeSWITCH name, and their mapping to and from SIP final responses
(FreeSWITCH's sofia tables)."""
from __future__ import annotations

from enum import IntEnum


class HangupCause(IntEnum):
    """Q.850 causes by FreeSWITCH name (values above 127 are FreeSWITCH's own)."""

    NONE = 0
    UNALLOCATED_NUMBER = 1
    NO_ROUTE_TRANSIT_NET = 2
    NO_ROUTE_DESTINATION = 3
    CHANNEL_UNACCEPTABLE = 6
    CALL_AWARDED_DELIVERED = 7
    NORMAL_CLEARING = 16
    USER_BUSY = 17
    NO_USER_RESPONSE = 18
    NO_ANSWER = 19
    SUBSCRIBER_ABSENT = 20
    CALL_REJECTED = 21
    NUMBER_CHANGED = 22
    REDIRECTION_TO_NEW_DESTINATION = 23
    EXCHANGE_ROUTING_ERROR = 25
    DESTINATION_OUT_OF_ORDER = 27
    INVALID_NUMBER_FORMAT = 28
    FACILITY_REJECTED = 29
    RESPONSE_TO_STATUS_ENQUIRY = 30
    NORMAL_UNSPECIFIED = 31
    NORMAL_CIRCUIT_CONGESTION = 34
    NETWORK_OUT_OF_ORDER = 38
    NORMAL_TEMPORARY_FAILURE = 41
    SWITCH_CONGESTION = 42
    ACCESS_INFO_DISCARDED = 43
    REQUESTED_CHAN_UNAVAIL = 44
    PRE_EMPTED = 45
    FACILITY_NOT_SUBSCRIBED = 50
    OUTGOING_CALL_BARRED = 52
    INCOMING_CALL_BARRED = 54
    BEARERCAPABILITY_NOTAUTH = 57
    BEARERCAPABILITY_NOTAVAIL = 58
    SERVICE_UNAVAILABLE = 63
    BEARERCAPABILITY_NOTIMPL = 65
    CHAN_NOT_IMPLEMENTED = 66
    FACILITY_NOT_IMPLEMENTED = 69
    SERVICE_NOT_IMPLEMENTED = 79
    INVALID_CALL_REFERENCE = 81
    INCOMPATIBLE_DESTINATION = 88
    INVALID_MSG_UNSPECIFIED = 95
    MANDATORY_IE_MISSING = 96
    MESSAGE_TYPE_NONEXIST = 97
    WRONG_MESSAGE = 98
    IE_NONEXIST = 99
    INVALID_IE_CONTENTS = 100
    WRONG_CALL_STATE = 101
    RECOVERY_ON_TIMER_EXPIRE = 102
    MANDATORY_IE_LENGTH_ERROR = 103
    PROTOCOL_ERROR = 111
    INTERWORKING = 127
    SUCCESS = 142
    ORIGINATOR_CANCEL = 487
    CRASH = 500
    SYSTEM_SHUTDOWN = 501
    LOSE_RACE = 502
    MANAGER_REQUEST = 503
    BLIND_TRANSFER = 600
    ATTENDED_TRANSFER = 601
    ALLOTTED_TIMEOUT = 602
    USER_CHALLENGE = 603
    MEDIA_TIMEOUT = 604
    PICKED_OFF = 605
    USER_NOT_REGISTERED = 606
    PROGRESS_TIMEOUT = 607
    INVALID_GATEWAY = 608
    GATEWAY_DOWN = 609
    INVALID_URL = 610
    INVALID_PROFILE = 611
    NO_PICKUP = 612

    @classmethod
    def parse(cls, text: str) -> HangupCause:
        """A cause by name (any case) or number; ValueError when unknown."""
        t = text.strip()
        if t.isdigit():
            try:
                return cls(int(t))
            except ValueError:
                raise ValueError(f"unknown hangup cause number {t}") from None
        try:
            return cls[t.upper()]
        except KeyError:
            raise ValueError(f"unknown hangup cause {text!r}") from None


# RFC 4497-style tables, as mod_sofia applies them (sofia.c hangup_cause_to_sip,
# sofia_glue_sip_cause_to_freeswitch).
_CAUSE_TO_SIP: dict[HangupCause, int] = {}
for _codes, _sip in (
    (("UNALLOCATED_NUMBER", "NO_ROUTE_TRANSIT_NET", "NO_ROUTE_DESTINATION"), 404),
    (("USER_BUSY",), 486),
    (("NO_USER_RESPONSE",), 408),
    (("NO_ANSWER", "SUBSCRIBER_ABSENT", "NORMAL_UNSPECIFIED", "USER_NOT_REGISTERED"), 480),
    (("CALL_REJECTED",), 603),
    (("NUMBER_CHANGED", "REDIRECTION_TO_NEW_DESTINATION"), 410),
    (("DESTINATION_OUT_OF_ORDER", "INVALID_PROFILE"), 502),
    (("INVALID_NUMBER_FORMAT", "INVALID_URL", "INVALID_GATEWAY"), 484),
    (("FACILITY_REJECTED", "FACILITY_NOT_IMPLEMENTED", "SERVICE_NOT_IMPLEMENTED"), 501),
    (("REQUESTED_CHAN_UNAVAIL", "NORMAL_CIRCUIT_CONGESTION", "NETWORK_OUT_OF_ORDER",
      "NORMAL_TEMPORARY_FAILURE", "SWITCH_CONGESTION", "GATEWAY_DOWN", "BEARERCAPABILITY_NOTAVAIL"), 503),
    (("OUTGOING_CALL_BARRED", "INCOMING_CALL_BARRED", "BEARERCAPABILITY_NOTAUTH"), 403),
    (("BEARERCAPABILITY_NOTIMPL", "INCOMPATIBLE_DESTINATION"), 488),
    (("RECOVERY_ON_TIMER_EXPIRE",), 504),
    (("ORIGINATOR_CANCEL",), 487),
    (("EXCHANGE_ROUTING_ERROR",), 483),
):
    for _name in _codes:
        _CAUSE_TO_SIP[HangupCause[_name]] = _sip

_SIP_TO_CAUSE: dict[int, HangupCause] = {200: HangupCause.NORMAL_CLEARING}
for _statuses, _name in (
    ((401, 402, 403, 407, 603), "CALL_REJECTED"),
    ((404,), "UNALLOCATED_NUMBER"),
    ((485, 604), "NO_ROUTE_DESTINATION"),
    ((408, 504), "RECOVERY_ON_TIMER_EXPIRE"),
    ((410,), "NUMBER_CHANGED"),
    ((413, 414, 416, 420, 421, 423, 505, 513), "INTERWORKING"),
    ((480,), "NO_USER_RESPONSE"),
    ((400, 481, 500, 503), "NORMAL_TEMPORARY_FAILURE"),
    ((486, 600), "USER_BUSY"),
    ((484,), "INVALID_NUMBER_FORMAT"),
    ((488, 606), "INCOMPATIBLE_DESTINATION"),
    ((502,), "NETWORK_OUT_OF_ORDER"),
    ((405,), "SERVICE_UNAVAILABLE"),
    ((406, 415, 501), "SERVICE_NOT_IMPLEMENTED"),
    ((482, 483), "EXCHANGE_ROUTING_ERROR"),
    ((487,), "ORIGINATOR_CANCEL"),
):
    for _status in _statuses:
        _SIP_TO_CAUSE[_status] = HangupCause[_name]


def cause_to_sip(cause: HangupCause | int) -> int:
    """The final SIP response for a call refused with ``cause`` (480 when there is no mapping)."""
    try:
        return _CAUSE_TO_SIP.get(HangupCause(cause), 480)
    except ValueError:
        return 480


def sip_to_cause(status: int) -> HangupCause:
    """The hangup cause for a SIP final response (NORMAL_UNSPECIFIED when there is no mapping)."""
    if not 100 <= status <= 699:
        raise ValueError(f"not a SIP status code: {status}")
    return _SIP_TO_CAUSE.get(status, HangupCause.NORMAL_UNSPECIFIED)
