"""The control socket: FreeSWITCH's inbound event-socket protocol (mod_event_socket) on
``[control] listen``, so existing ESL scripts and libraries drive Earshot as written."""

from .commands import Commands, split_args
from .protocol import Packet, ProtocolError, event_frame, read_packet, url_encode
from .server import ControlServer, filters_pass

__all__ = ["Commands", "ControlServer", "Packet", "ProtocolError", "event_frame", "filters_pass", "read_packet",
           "split_args", "url_encode"]
