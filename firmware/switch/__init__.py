"""The switch: channels, the XML dialplan, applications, db and events (FreeSWITCH's model)."""

from .causes import HangupCause, cause_to_sip, sip_to_cause
from .channel import Channel, ChannelHungUp, ChannelState, DtmfDigit, InvalidTransition, parse_dtmf_string
from .clock import SystemClock, VirtualClock
from .endpoint import Endpoint, LoopbackEndpoint, Media, NullEndpoint, NullMedia
from .core import DialString, OriginateError, Switch, parse_dial_string, parse_leg
from .db import Db
from .dialplan import Dialplan, DialplanError, DialplanHolder
from .events import Event, EventBus, Subscription

__all__ = [
    "Channel", "ChannelHungUp", "ChannelState", "Db", "DialString", "Dialplan", "DialplanError",
    "DialplanHolder", "DtmfDigit", "Endpoint", "Event", "EventBus", "HangupCause", "InvalidTransition",
    "LoopbackEndpoint", "Media", "NullEndpoint", "NullMedia", "OriginateError", "Subscription", "Switch",
    "SystemClock", "VirtualClock", "cause_to_sip", "parse_dial_string", "parse_dtmf_string", "parse_leg",
    "sip_to_cause",
]
