"""Helpers for the control-socket tests: a switch whose ``user/`` calls are answered by a test
factory over ``LoopbackEndpoint``, a server on a free loopback port, and a raw socket client."""
from __future__ import annotations

import asyncio

from firmware.config import Config, ControlConfig, User
from firmware.control import ControlServer
from firmware.switch import HangupCause, LoopbackEndpoint, OriginateError, Switch

PASSWORD = "t0p-s3cret"


def make_config(allow: tuple[str, ...] = ("127.0.0.0/8",), password: str = PASSWORD) -> Config:
    users = (User("1001", "x", "Agent 1001", "sales"), User("1002", "x", "Agent 1002", "sales"),
             User("1000", "x", "Supervisor", "", True), User("1099", "x", "Offline"))
    return Config(users=users, control=ControlConfig(listen="127.0.0.1:0", password=password, allow=allow))


async def user_factory(sw: Switch, dial, variables: dict, a_leg):
    """``user/<id>``: a phone that answers at once (1099 is not registered)."""
    if dial.user == "1099":
        raise OriginateError(HangupCause.USER_NOT_REGISTERED, "1099 is offline")
    ours, phone = LoopbackEndpoint.pair(f"sofia/internal/{dial.user}@earshot.local", f"phone/{dial.user}")
    ch = sw.new_channel(ours, direction="outbound", **variables)
    ch.mark_ringing()
    ch.mark_answered()
    return ch


def make_switch(config: Config | None = None) -> Switch:
    sw = Switch(config or make_config())
    sw.register_endpoint("user", user_factory)
    return sw


async def start_server(config: Config | None = None, **kwargs) -> tuple[Switch, ControlServer]:
    cfg = config or make_config()
    sw = make_switch(cfg)
    srv = ControlServer(sw, lambda: cfg, **kwargs)
    await srv.start()
    return sw, srv


async def stop_server(sw: Switch, srv: ControlServer) -> None:
    await srv.stop()
    await sw.close()


class RawClient:
    """A bare TCP client that reads the server's frames exactly as sent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def frame(self, timeout: float = 5.0) -> tuple[dict[str, str], bytes]:
        """One frame: its headers and the raw body bytes (Content-Length of them)."""
        async def read() -> tuple[dict[str, str], bytes]:
            headers: dict[str, str] = {}
            while True:
                line = await self.reader.readline()
                if not line:
                    raise EOFError("connection closed")
                text = line.decode().rstrip("\n")
                if not text:
                    if headers:
                        break
                    continue
                k, _, v = text.partition(": ")
                headers[k] = v
            body = b""
            if "Content-Length" in headers:
                body = await self.reader.readexactly(int(headers["Content-Length"]))
            return headers, body
        return await asyncio.wait_for(read(), timeout)

    async def send(self, text: str) -> None:
        self.writer.write(text.encode())
        await self.writer.drain()

    async def command(self, text: str) -> tuple[dict[str, str], bytes]:
        await self.send(text + "\n\n")
        return await self.frame()

    async def login(self, password: str = PASSWORD) -> dict[str, str]:
        greeting, _ = await self.frame()
        assert greeting == {"Content-Type": "auth/request"}
        headers, _ = await self.command(f"auth {password}")
        return headers

    async def closed(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the connection (remaining bytes are discarded)."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except (ConnectionError, OSError):
            pass
        return True

    def close(self) -> None:
        self.writer.close()
