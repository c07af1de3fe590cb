"""Media: RTP sessions per leg, the 20 ms clock, bridged-call relay (over ``cython_mixer``).

- ``rtp``: RFC 3550 packets (the slow path and the tests' model); ``rfc4733``: telephone-events.
- ``ports``: the RTP port range; ``stream``: one leg's RTP session; ``clock``: the media clock.
- ``relay``: a bridged call's media (pass-through / transcode, and the tap seam for eavesdrop).
"""
from .clock import ManualTime, MediaClock
from .ports import PortAllocator, PortsExhausted
from .relay import CrossTap, Relay, Tap
from .rfc4733 import DtmfReceiver, DtmfSender, TelephoneEvent
from .rtp import RtpError, RtpPacket
from .stream import RtpStream

__all__ = ["ManualTime", "MediaClock", "PortAllocator", "PortsExhausted", "CrossTap", "Relay", "Tap",
           "DtmfReceiver", "DtmfSender", "TelephoneEvent", "RtpError", "RtpPacket", "RtpStream"]
