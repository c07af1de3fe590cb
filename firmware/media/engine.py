"""The appliance's media engine: the RTP port range, the 20 ms clock and every open leg.

    engine = MediaEngine("16384-16999", "127.0.0.1")
    await engine.start()                 # the clock runs
    leg = await engine.open_rtp_leg()    # an RtpLeg on a free port pair (PortsExhausted when none)
    ...
    await engine.stop()                  # every leg closed, ports back, clock stopped
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket

from .clock import MediaClock
from .leg import LegStream, RtpLeg
from .ports import PortAllocator


def advertised_address(bind_ip: str, external: str = "") -> str:
    """The address to announce in SDP: ``external`` when set, else the bind address, else (bound
    to 0.0.0.0) the address of the interface that routes to the outside (no packet is sent)."""
    if external:
        return external
    if not ipaddress.ip_address(bind_ip).is_unspecified:
        return bind_ip
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))          # TEST-NET-1: only selects a route
        return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        s.close()


class MediaEngine:
    """``local_ip`` is where RTP sockets bind; ``advertised_ip`` is what SDP announces (defaults to
    ``local_ip``; set it when binding 0.0.0.0 or behind NAT)."""

    def __init__(self, rtp_ports: str, local_ip: str, advertised_ip: str | None = None,
                 clock: MediaClock | None = None) -> None:
        self.ports = PortAllocator.from_spec(rtp_ports)
        self.local_ip = str(ipaddress.ip_address(local_ip))
        advertised = advertised_ip or self.local_ip
        if ipaddress.ip_address(advertised).is_unspecified:
            raise ValueError(f"cannot announce {advertised} in SDP: give an advertised address")
        self.advertised_ip = advertised
        self.clock = clock or MediaClock()
        self._legs: set[RtpLeg] = set()
        self._closing: set[RtpLeg] = set()

    @property
    def legs(self) -> int:
        """Legs open now."""
        return len(self._legs)

    async def start(self) -> None:
        self.clock.start()

    async def stop(self) -> None:
        """Close every leg, wait for their ports, stop the clock."""
        for leg in list(self._legs):
            leg.close()
        await self.wait_idle()
        await self.clock.stop()

    async def wait_idle(self) -> None:
        """Until every closed leg's ports are back in the allocator."""
        for leg in list(self._closing):
            await leg.wait_closed()
            self._closing.discard(leg)
        await asyncio.sleep(0)   # let the done callbacks run

    async def open_rtp_leg(self, **stream_options) -> RtpLeg:
        """A new leg on the first bindable free port pair; PortsExhausted when there is none."""
        stream = await LegStream.open(self.ports, self.local_ip, **stream_options)
        leg = RtpLeg(self, stream)
        self._legs.add(leg)
        return leg

    def _closed(self, leg: RtpLeg) -> None:
        self._legs.discard(leg)
        self._closing.add(leg)
        # forget it once its sockets are gone, so a long-running engine keeps no dead legs
        task = asyncio.get_running_loop().create_task(leg.wait_closed())
        task.add_done_callback(lambda _t, leg=leg: self._closing.discard(leg))
