"""The control socket: FreeSWITCH's inbound event socket on ``[control] listen`` (127.0.0.1:8021).

Per connection: the ACL is checked before anything is sent (``text/rude-rejection`` otherwise),
then the ``auth/request`` greeting; the client has ``auth_timeout_ms`` to log in. After a wrong
password the connection is closed and its source address is blocked for a back-off that doubles
with each further failure (any ``auth`` from it is refused meanwhile, whatever the password).

No client can hold up another: each connection runs in its own task, every write is bounded by
``write_timeout_ms`` (a client that stops reading is disconnected), and events reach a connection
through a bounded mailbox filled synchronously by the event bus; when a client lags, the oldest
events are dropped and the loss is logged instead of the buffer growing.

The password is compared with ``hmac.compare_digest`` and never logged. An empty configured
password means the generated one in ``<state dir>/control.secret``.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import uuid as _uuid
from collections.abc import Callable
from typing import Any

from firmware import aio
from firmware import config as cfgmod
from firmware.switch import events as ev
from firmware.switch.core import Switch

from . import protocol as p
from .commands import Commands

log = logging.getLogger(__name__)

# FreeSWITCH's event names (switch_event.c EVENT_NAMES): all may be subscribed to, even those
# Earshot never fires, so existing scripts' ``event`` commands succeed.
FS_EVENT_NAMES = frozenset("""
CUSTOM CLONE CHANNEL_CREATE CHANNEL_DESTROY CHANNEL_STATE CHANNEL_CALLSTATE CHANNEL_ANSWER CHANNEL_HANGUP
CHANNEL_HANGUP_COMPLETE CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE CHANNEL_HOLD CHANNEL_UNHOLD CHANNEL_BRIDGE
CHANNEL_UNBRIDGE CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_OUTGOING CHANNEL_PARK CHANNEL_UNPARK
CHANNEL_APPLICATION CHANNEL_ORIGINATE CHANNEL_UUID API LOG INBOUND_CHAN OUTBOUND_CHAN STARTUP SHUTDOWN PUBLISH
UNPUBLISH TALK NOTALK SESSION_CRASH MODULE_LOAD MODULE_UNLOAD DTMF MESSAGE PRESENCE_IN NOTIFY_IN PRESENCE_OUT
PRESENCE_PROBE MESSAGE_WAITING MESSAGE_QUERY ROSTER CODEC BACKGROUND_JOB DETECTED_SPEECH DETECTED_TONE
PRIVATE_COMMAND HEARTBEAT TRAP ADD_SCHEDULE DEL_SCHEDULE EXE_SCHEDULE RE_SCHEDULE RELOADXML NOTIFY PHONE_FEATURE
PHONE_FEATURE_SUBSCRIBE SEND_MESSAGE RECV_MESSAGE REQUEST_PARAMS CHANNEL_DATA GENERAL COMMAND SESSION_HEARTBEAT
CLIENT_DISCONNECTED SERVER_DISCONNECTED SEND_INFO RECV_INFO RECV_RTCP_MESSAGE SEND_RTCP_MESSAGE CALL_SECURE NAT
RECORD_START RECORD_STOP PLAYBACK_START PLAYBACK_STOP CALL_UPDATE FAILURE SOCKET_DATA MEDIA_BUG_START
MEDIA_BUG_STOP CONFERENCE_DATA_QUERY CONFERENCE_DATA CALL_SETUP_REQ CALL_SETUP_RESULT CALL_DETAIL DEVICE_STATE
TEXT SHUTDOWN_REQUESTED ALL
""".split())

LOG_LEVELS = {"console": 0, "alert": 1, "crit": 2, "err": 3, "error": 3, "warning": 4, "notice": 5,
              "info": 6, "debug": 7}
DISCONNECTED = "Disconnected, goodbye.\n"


def _event_name(token: str) -> str | None:
    """FreeSWITCH's switch_name_event: case-insensitive, ``SWITCH_EVENT_`` prefix allowed."""
    name = token.upper()
    if name.startswith("SWITCH_EVENT_"):
        name = name[len("SWITCH_EVENT_"):]
    return name if name in FS_EVENT_NAMES else None


def _get_header(event: ev.Event, name: str) -> str | None:
    value = event.headers.get(name)
    if value is not None:
        return value
    low = name.lower()
    for k, v in event.headers.items():
        if k.lower() == low:
            return v
    return None


def filters_pass(filters: list[tuple[str, str]], event: ev.Event) -> bool:
    """mod_event_socket's filter rule: with filters set, an event is sent when a positive filter
    matches (``+`` or no sign) and no negative one (``-``) matches after it; a filter whose header
    the event lacks is skipped; ``/regex/`` values are regular expressions, others compare
    case-insensitively. (So negative filters alone let nothing through, as in FreeSWITCH.)"""
    if not filters:
        return True
    send = False
    for name, raw in filters:
        value = _get_header(event, name)
        if value is None:
            continue
        i, positive = 0, True
        while i < len(raw) and raw[i] in "+- ":
            if raw[i] != " ":
                positive = raw[i] == "+"
            i += 1
        needle = raw[i:]
        if (send and positive) or not needle:
            continue
        if needle.startswith("/"):
            body = needle[1:-1] if needle.endswith("/") and len(needle) > 1 else needle[1:]
            try:
                matched = re.search(body, value) is not None
            except re.error:
                matched = False
        else:
            matched = value.lower() == needle.lower()
        if matched:
            if not positive:
                return False
            send = True
    return send


class _Closed(Exception):
    """The connection is gone (peer closed, write timed out, or we hung up)."""


class Connection:
    """One client of the control socket."""

    def __init__(self, server: ControlServer, reader: Any, writer: Any, peer: str) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.authed = False
        self.running = True
        self.format = "plain"
        self.all_events = False
        self.event_names: set[str] = set()
        self.custom: set[str] = set()
        self.filters: list[tuple[str, str]] = []
        self.logging = False
        self.outbox = aio.Mailbox(server.outbox_len)
        self._reported_drops = 0
        self._token: int | None = None
        self._pump: Any = None
        self._wlock = aio.Lock()
        self._dead = False

    # --- output -------------------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Write one frame; a client that does not take it within the write timeout is dropped."""
        if self._dead:
            raise _Closed()
        async with self._wlock:
            try:
                self.writer.write(data)
                await aio.wait_for_ms(self.writer.drain(), self.server.write_timeout_ms)
            except (aio.TimeoutError, OSError, ConnectionError):
                self._kill("write timed out or failed")
                raise _Closed() from None

    def _kill(self, why: str) -> None:
        if not self._dead:
            self._dead = True
            self.running = False
            log.info("control client %s disconnected: %s", self.peer, why)
            try:
                # a plain close() would wait to flush what a stalled client never reads
                transport = getattr(self.writer, "transport", None)
                if transport is not None and why != "closed":
                    transport.abort()
                else:
                    self.writer.close()
            except Exception:
                pass

    def wants(self, event: ev.Event) -> bool:
        if not self.all_events:
            if event.name not in self.event_names:
                return False
            if event.name == ev.CUSTOM and event.subclass and event.subclass not in self.custom:
                return False
        return filters_pass(self.filters, event)

    def on_event(self, event: ev.Event) -> None:
        """Bus callback (synchronous, on the firer's stack): filter and enqueue, never block."""
        if self.running and self.wants(event):
            self.outbox.put(event)

    async def _pump_events(self) -> None:
        try:
            while self.running:
                event = await self.outbox.get()
                if self.outbox.dropped != self._reported_drops:
                    log.warning("control client %s is not keeping up: %d events dropped so far",
                                self.peer, self.outbox.dropped)
                    self._reported_drops = self.outbox.dropped
                await self.send(p.event_frame(event, self.format))
        except (_Closed, aio.CancelledError):
            pass

    def _start_events(self) -> None:
        if self._token is None:
            self._token = self.server.switch.events.subscribe(ev.ALL, self.on_event)
        if self._pump is None:
            self._pump = self.server.spawn(self._pump_events())

    def _stop_events(self) -> None:
        if self._token is not None:
            self.server.switch.events.unsubscribe(self._token)
            self._token = None
        self.outbox.clear()

    # --- the session --------------------------------------------------------------------------------

    async def run(self) -> None:
        srv = self.server
        try:
            refusal = srv.refuse(self.peer)
            if refusal:
                log.warning("control connection from %s rejected: %s", self.peer, refusal)
                await self.send(p.rude_rejection("Access Denied, go away.\n"))
                await self.send(p.disconnect_notice(DISCONNECTED))
                return
            await self.send(p.AUTH_REQUEST)
            deadline = aio.ticks_add(srv.now_ms(), srv.auth_timeout_ms)
            while self.running:
                if self.authed:
                    packet = await p.read_packet(self.reader)
                else:
                    left = aio.ticks_diff(deadline, srv.now_ms())
                    if left <= 0:
                        raise aio.TimeoutError()
                    packet = await aio.wait_for_ms(p.read_packet(self.reader), left)
                if packet is None:
                    break
                await self.handle(packet)
            if not self._dead:
                await self.send(p.disconnect_notice(DISCONNECTED))
        except aio.TimeoutError:
            log.info("control client %s did not log in within %d ms", self.peer, srv.auth_timeout_ms)
            await self._try_send(p.disconnect_notice("Authentication timeout, goodbye.\n"))
        except p.ProtocolError as exc:
            log.warning("control client %s: %s; closing", self.peer, exc)
            await self._try_send(p.command_reply(f"-ERR {exc}"))
            await self._try_send(p.disconnect_notice(DISCONNECTED))
        except (_Closed, OSError, ConnectionError, EOFError):
            pass
        finally:
            self.close()

    async def _try_send(self, data: bytes) -> None:
        try:
            await self.send(data)
        except _Closed:
            pass

    def close(self) -> None:
        self.running = False
        self._stop_events()
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        self._kill("closed")
        self.server.forget(self)

    async def handle(self, packet: p.Packet) -> None:
        line = packet.command
        verb, _, rest = line.partition(" ")
        verb = verb.lower()
        if verb == "exit" or verb == "...":
            await self.send(p.command_reply("+OK bye"))
            self.running = False
            return
        if not self.authed:
            if verb == "auth":
                await self.auth(rest)
            else:
                await self.send(p.command_reply("-ERR command not found"))
            return
        handler = _HANDLERS.get(verb)
        if handler is None:
            await self.send(p.command_reply("-ERR command not found"))
            return
        await handler(self, rest, packet)

    async def auth(self, password: str) -> None:
        srv = self.server
        blocked = srv.blocked_ms(self.peer)
        if blocked > 0:
            log.warning("control login from %s refused: back-off after failed logins (%d ms left)",
                        self.peer, blocked)
            await self.send(p.command_reply("-ERR invalid"))
            self.running = False
            return
        expected = srv.password()
        if expected and hmac.compare_digest(password.encode("utf-8"), expected.encode("utf-8")):
            self.authed = True
            srv.login_succeeded(self.peer)
            log.info("control client %s logged in", self.peer)
            await self.send(p.command_reply("+OK accepted"))
            return
        failures, backoff = srv.login_failed(self.peer)
        log.warning("control login from %s failed (%d in a row; next attempt allowed in %d ms)",
                    self.peer, failures, backoff)
        await self.send(p.command_reply("-ERR invalid"))
        self.running = False

    # --- commands after auth ------------------------------------------------------------------------

    async def cmd_api(self, rest: str, packet: p.Packet) -> None:
        name, _, args = rest.strip().partition(" ")
        body = await self.server.commands.api(name, args)
        await self.send(p.api_response(body or "-ERR no reply\n"))

    async def cmd_bgapi(self, rest: str, packet: p.Packet) -> None:
        name, _, args = rest.strip().partition(" ")
        job = packet.header("Job-UUID") or str(_uuid.uuid4())
        if self.server.jobs >= self.server.max_jobs:
            await self.send(p.command_reply("-ERR too many background jobs, try again later"))
            return
        await self.send(p.command_reply(f"+OK Job-UUID: {job}", {"Job-UUID": job}))
        self.server.spawn(self.server.background_job(job, name, args))

    async def cmd_event(self, rest: str, packet: p.Packet) -> None:
        tokens = rest.split()
        if tokens and tokens[0].lower() in p.FORMATS:
            self.format = tokens.pop(0).lower()
        keys, custom = 0, False
        for token in tokens:
            if custom:
                self.custom.add(token)
                continue
            name = _event_name(token)
            if name is None:
                continue
            keys += 1
            if name == "ALL":
                self.all_events = True
            else:
                self.event_names.add(name)
            if name == "CUSTOM":
                custom = True
        if not keys:
            await self.send(p.command_reply("-ERR no keywords supplied"))
            return
        self._start_events()
        await self.send(p.command_reply(f"+OK event listener enabled {self.format}"))

    async def cmd_nixevent(self, rest: str, packet: p.Packet) -> None:
        keys, custom = 0, False
        for token in rest.split():
            if custom:
                self.custom.discard(token)
                continue
            name = _event_name(token)
            if name is None:
                continue
            keys += 1
            if name == "CUSTOM":
                custom = True
            elif name == "ALL":
                self.all_events = False
                self.event_names.clear()
            else:
                if self.all_events:  # "all but this one"
                    self.all_events = False
                    self.event_names = set(FS_EVENT_NAMES) - {"ALL"}
                self.event_names.discard(name)
        if not keys:
            await self.send(p.command_reply("-ERR no keywords supplied"))
            return
        await self.send(p.command_reply("+OK events nixed"))

    async def cmd_noevents(self, rest: str, packet: p.Packet) -> None:
        listening = self._token is not None
        self.all_events = False
        self.event_names.clear()
        self.custom.clear()
        self._stop_events()
        await self.send(p.command_reply("+OK no longer listening for events" if listening
                                        else "-ERR not listening for events"))

    async def cmd_filter(self, rest: str, packet: p.Packet) -> None:
        name, _, value = rest.strip().partition(" ")
        if name.lower() == "delete" and value:
            name, _, value = value.partition(" ")
            if name.lower() == "all":
                self.filters.clear()
            else:
                self.filters = [(n, v) for n, v in self.filters
                                if not (n.lower() == name.lower() and (not value or v == value))]
            await self.send(p.command_reply(f"+OK filter deleted. [{name}][{value}]"))
            return
        if value and name.lower() == "add":
            name, _, value = value.partition(" ")
        if not name or not value:
            await self.send(p.command_reply("-ERR invalid syntax"))
            return
        self.filters.append((name, value))
        await self.send(p.command_reply(f"+OK filter added. [{name}]=[{value}]"))

    async def cmd_sendevent(self, rest: str, packet: p.Packet) -> None:
        event_uuid = str(_uuid.uuid4())
        ok, error = self.server.send_event(rest.strip(), packet, event_uuid)
        await self.send(p.command_reply(f"+OK {event_uuid}" if ok else f"-ERR {error}"))

    async def cmd_log(self, rest: str, packet: p.Packet) -> None:
        # log lines are not forwarded (the journal has them); accepted so scripts carry on
        level = rest.strip().lower() or "debug"
        if level.isdigit() and int(level) <= 7:
            n = int(level)
        elif level in LOG_LEVELS:
            n = LOG_LEVELS[level]
        else:
            await self.send(p.command_reply("-ERR invalid log level"))
            return
        self.logging = True
        await self.send(p.command_reply(f"+OK log level {level} [{n}]"))

    async def cmd_nolog(self, rest: str, packet: p.Packet) -> None:
        was, self.logging = self.logging, False
        await self.send(p.command_reply("+OK no longer logging" if was else "-ERR not loging"))


_HANDLERS = {
    "api": Connection.cmd_api, "bgapi": Connection.cmd_bgapi, "event": Connection.cmd_event,
    "events": Connection.cmd_event, "nixevent": Connection.cmd_nixevent, "noevents": Connection.cmd_noevents,
    "filter": Connection.cmd_filter, "sendevent": Connection.cmd_sendevent, "log": Connection.cmd_log,
    "nolog": Connection.cmd_nolog,
}


class ControlServer:
    """The event-socket server. ``config_getter()`` returns the current ``Config`` (password and
    ACL follow a reload; the listen address is read at ``start``)."""

    def __init__(self, switch: Switch, config_getter: Callable[[], cfgmod.Config], *,
                 reload: Callable[[], Any] | None = None, now_ms: Callable[[], int] = aio.ticks_ms,
                 auth_timeout_ms: int = 10_000, write_timeout_ms: int = 5_000, outbox_len: int = 1000,
                 backoff_base_ms: int = 1_000, backoff_max_ms: int = 60_000, max_connections: int = 32,
                 max_per_source: int = 8, max_jobs: int = 32) -> None:
        self.switch = switch
        self.config_getter = config_getter
        self.commands = Commands(switch, reload=reload)
        self.now_ms = now_ms
        self.auth_timeout_ms = auth_timeout_ms
        self.write_timeout_ms = write_timeout_ms
        self.outbox_len = outbox_len
        self.backoff_base_ms = backoff_base_ms
        self.backoff_max_ms = backoff_max_ms
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.max_jobs = max_jobs
        self.jobs = 0
        self.port: int | None = None
        self.connections: set[Connection] = set()
        self._failures: dict[str, tuple[int, int]] = {}  # source -> (consecutive failures, blocked until)
        self._server: Any = None
        self._tasks = aio.TaskSet("control")
        self._secret: str | None = None
        self._acl_key: tuple = ()
        self._acl: list = []

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config_getter().control
        host, port = cfgmod.split_hostport(cfg.listen, 8021, allow_any_port=True)
        self.password()  # create the generated secret now, so its location is logged at start
        self._server = await aio.start_server(self._accept, host, port)
        socks = getattr(self._server, "sockets", None) or []
        self.port = socks[0].getsockname()[1] if socks else port
        log.info("control socket listening on %s:%d (allowed: %s)", host, self.port,
                 ", ".join(cfg.allow) or "nobody")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.authed and not conn._dead:
                try:
                    await aio.wait_for_ms(conn.send(p.disconnect_notice("The system is being shut down.\n")), 200)
                except (aio.TimeoutError, _Closed):
                    pass
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            try:
                await aio.wait_for_ms(self._server.wait_closed(), 1000)
            except aio.TimeoutError:
                pass
            self._server = None
        self.commands.close()

    def spawn(self, coro: Any) -> Any:
        return self._tasks.spawn(coro)

    async def _accept(self, reader: Any, writer: Any) -> None:
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if peername else ""
        conn = Connection(self, reader, writer, peer)
        self.connections.add(conn)
        await conn.run()

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)

    # --- security -----------------------------------------------------------------------------------

    def password(self) -> str:
        configured = self.config_getter().control.password
        if configured:
            return configured
        if self._secret is None:
            directory = cfgmod.state_dir()
            self._secret = cfgmod.stored_secret(directory, "control.secret")
            log.info("control socket password: generated, stored in %s", directory / "control.secret")
        return self._secret

    def _networks(self) -> list:
        allow = tuple(self.config_getter().control.allow)
        if allow != self._acl_key:
            nets = []
            for text in allow:
                try:
                    nets.append(ipaddress.ip_network(text, strict=False))
                except ValueError:
                    log.error("control allow: not a network: %r (ignored)", text)
            self._acl_key, self._acl = allow, nets
        return self._acl

    def allowed(self, peer: str) -> bool:
        try:
            addr = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        mapped = getattr(addr, "ipv4_mapped", None)
        if mapped is not None:
            addr = mapped
        return any(addr.version == net.version and addr in net for net in self._networks())

    def refuse(self, peer: str) -> str:
        """Why a new connection from ``peer`` is turned away ("" = welcome)."""
        if not self.allowed(peer):
            return "not in [control] allow"
        if len(self.connections) > self.max_connections:
            return f"more than {self.max_connections} connections"
        if sum(1 for c in self.connections if c.peer == peer) > self.max_per_source:
            return f"more than {self.max_per_source} connections from this address"
        return ""

    def blocked_ms(self, peer: str) -> int:
        entry = self._failures.get(peer)
        if entry is None:
            return 0
        return max(0, aio.ticks_diff(entry[1], self.now_ms()))

    def login_failed(self, peer: str) -> tuple[int, int]:
        count = self._failures.get(peer, (0, 0))[0] + 1
        backoff = min(self.backoff_max_ms, self.backoff_base_ms << min(count - 1, 20))
        if len(self._failures) >= 1024 and peer not in self._failures:
            self._failures.pop(next(iter(self._failures)))  # bounded: forget the oldest source
        self._failures[peer] = (count, aio.ticks_add(self.now_ms(), backoff))
        return count, backoff

    def login_succeeded(self, peer: str) -> None:
        self._failures.pop(peer, None)

    # --- jobs and events ----------------------------------------------------------------------------

    async def background_job(self, job: str, name: str, args: str) -> None:
        self.jobs += 1
        try:
            body = await self.commands.api(name, args)
        finally:
            self.jobs -= 1
        headers = {"Job-UUID": job, "Job-Command": name}
        if args:
            headers["Job-Command-Arg"] = args
        self.switch.events.fire(ev.BACKGROUND_JOB, headers, body=body)

    def send_event(self, name_text: str, packet: p.Packet, event_uuid: str) -> tuple[bool, str]:
        """``sendevent``: an ``eavesdrop-command`` for a channel running eavesdrop steers it (the
        event is consumed, as FreeSWITCH queues it to that session); anything else is fired."""
        target = packet.header("Unique-ID")
        command = packet.header("eavesdrop-command")
        if target and command is not None:
            engine = self.switch.eavesdrop
            if engine is not None and engine.send_command(target, command):
                log.info("control: eavesdrop-command %r for %s", command, target)
                return True, ""
            log.warning("control: eavesdrop-command for %s, which is not running eavesdrop", target)
        name = _event_name(name_text.split(" ", 1)[0]) if name_text else None
        if name is None or name == "ALL":
            return False, f"unknown event name {name_text!r}"
        headers = {k: v for k, v in packet.headers if k.lower() not in ("event-name", "content-length")}
        headers["Event-UUID"] = event_uuid
        subclass = headers.pop("Event-Subclass", None)
        if name == ev.CUSTOM and not subclass:
            return False, "a CUSTOM event needs an Event-Subclass header"
        bus = self.switch.events
        if name in ev.EVENT_NAMES:
            bus.fire(name, headers, subclass=subclass, body=packet.body)
        else:
            base = {"Event-Name": name, "Core-UUID": bus.core_uuid, "FreeSWITCH-Hostname": bus.hostname}
            base.update(headers)
            bus.deliver(ev.Event(name, base, packet.body))
        return True, ""
