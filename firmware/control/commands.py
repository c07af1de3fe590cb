"""The API commands behind ``api`` / ``bgapi``, with FreeSWITCH's reply texts (mod_commands).

Each command takes its argument string and returns the response body, newline-terminated the
way FreeSWITCH writes it (``+OK <uuid>\\n``, ``-ERR NO_ANSWER\\n``, ``-ERR No such channel!\\n``,
``-USAGE: …\\n``). An unknown command gives ``-ERR <name> Command not found!\\n``; APIs the switch
registered (``db``, ``user_exists``, …) are reachable too.

Seams to other parts of Earshot (all optional attributes of the switch):

- ``switch.eavesdrop`` (``firmware.switch.eavesdrop.Eavesdrop``): its ``sessions`` (spy uuid →
  session with ``spy``, ``target``, ``mode``, ``listen``, ``started_ms``) feed ``show eavesdrops``;
  the server steers one with ``send_command(spy_uuid, text)`` (``eavesdrop-command``).
- ``switch.secure_media_supported``: true once SRTP exists; until then ``sip_secure_media=true``
  in a dial string is refused with a clear ``-ERR``.
- ``reload``: the app's callback for ``reloadxml`` (sync or async).
"""
from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from firmware.switch import events as ev
from firmware.switch.channel import Channel, ChannelHungUp, HangupCause, is_true
from firmware.switch.core import OriginateError, Switch, parse_dial_string

log = logging.getLogger(__name__)

VERSION = "0.1.0"
ORIGINATE_USAGE = ("-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] [<context>] "
                   "[<cid_name>] [<cid_num>] [<timeout_sec>]\n")
NO_CHANNEL = "-ERR No such channel!\n"

CHANNEL_COLUMNS = (
    "uuid", "direction", "created", "created_epoch", "name", "state", "cid_name", "cid_num", "ip_addr", "dest",
    "application", "application_data", "dialplan", "context", "read_codec", "read_rate", "read_bit_rate",
    "write_codec", "write_rate", "write_bit_rate", "secure", "hostname", "presence_id", "presence_data",
    "accountcode", "callstate", "callee_name", "callee_num", "callee_direction", "call_uuid", "sent_callee_name",
    "sent_callee_num", "initial_cid_name", "initial_cid_num", "initial_ip_addr", "initial_dest",
    "initial_dialplan", "initial_context",
)
_CALL_A = ("uuid", "direction", "created", "created_epoch", "name", "state", "cid_name", "cid_num", "ip_addr",
           "dest", "presence_id", "presence_data", "accountcode", "callstate", "callee_name", "callee_num",
           "callee_direction", "call_uuid", "hostname", "sent_callee_name", "sent_callee_num")
_CALL_B = ("uuid", "direction", "created", "created_epoch", "name", "state", "cid_name", "cid_num", "ip_addr",
           "dest", "presence_id", "presence_data", "accountcode", "callstate", "callee_name", "callee_num",
           "callee_direction", "sent_callee_name", "sent_callee_num")
CALL_COLUMNS = _CALL_A + tuple("b_" + c for c in _CALL_B) + ("call_created_epoch",)
EAVESDROP_COLUMNS = ("spy_uuid", "spy_name", "spy_user", "target_uuid", "target_name", "peer_uuid", "mode",
                     "mode_name", "listen", "duration_ms")
MODE_NAMES = {0: "listen", 1: "whisper-peer", 2: "whisper-target", 3: "three-way"}  # eavesdrop.MODE_NAMES

_APP = re.compile(r"&([\w-]+)(?:\((.*)\))?\Z", re.S)


def split_args(text: str) -> list[str]:
    """Split on blanks outside ``'…'`` and outside ``{…}``, ``[…]``, ``(…)`` (quotes are removed at
    the top level only, so ``{name='A B'}`` keeps its quotes for the dial-string parser)."""
    tokens: list[str] = []
    cur: list[str] = []
    started = False
    depth = 0
    quoted = False
    for c in text:
        if quoted:
            if c == "'":
                quoted = False
            else:
                cur.append(c)
            continue
        if c == "'" and depth == 0:
            quoted = started = True
            continue
        if c in "{[(":
            depth += 1
        elif c in "}])":
            depth = max(0, depth - 1)
        if c.isspace() and depth == 0:
            if started:
                tokens.append("".join(cur))
                cur, started = [], False
            continue
        cur.append(c)
        started = True
    if quoted:
        raise ValueError("unterminated quote")
    if started:
        tokens.append("".join(cur))
    return tokens


class ChannelTracker:
    """What the channel table does not keep: creation time and the running application, plus the
    session counters of ``status``. Fed by the event bus."""

    def __init__(self, switch: Switch) -> None:
        self.switch = switch
        self.started = time.time()
        self.created: dict[str, float] = {}
        self.application: dict[str, tuple[str, str]] = {}
        self.sessions_since_start = 0
        self.peak = len(switch)
        self._token = switch.events.subscribe(
            [ev.CHANNEL_CREATE, ev.CHANNEL_EXECUTE, ev.CHANNEL_HANGUP_COMPLETE], self._on_event)

    def close(self) -> None:
        self.switch.events.unsubscribe(self._token)

    def _on_event(self, e: ev.Event) -> None:
        uuid = e.uuid
        if not uuid:
            return
        if e.name == ev.CHANNEL_CREATE:
            self.created[uuid] = time.time()
            self.sessions_since_start += 1
            self.peak = max(self.peak, len(self.switch))
        elif e.name == ev.CHANNEL_EXECUTE:
            self.application[uuid] = (e.get("Application", ""), e.get("Application-Data", ""))
        else:
            self.created.pop(uuid, None)
            self.application.pop(uuid, None)

    def created_at(self, uuid: str) -> float:
        return self.created.setdefault(uuid, time.time())


def _local_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def format_rows(columns: tuple[str, ...], rows: list[dict[str, str]], as_json: bool) -> str:
    """``show``'s two formats: comma-separated with a header line and ``N total.``, or
    ``{"row_count":N,"rows":[…]}`` (just ``{"row_count":0}`` when empty), as mod_commands does."""
    if as_json:
        obj: dict[str, Any] = {"row_count": len(rows)}
        if rows:
            obj["rows"] = [{c: r.get(c, "") for c in columns} for r in rows]
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"
    if not rows:
        return "\n0 total.\n"
    lines = [",".join(columns)]
    lines += [",".join(r.get(c, "") for c in columns) for r in rows]
    return "\n".join(lines) + f"\n\n{len(rows)} total.\n"


class Commands:
    """``await commands.api(name, args)`` → the response body."""

    def __init__(self, switch: Switch, *, reload: Callable[[], Any] | None = None) -> None:
        self.switch = switch
        self.reload = reload
        self.tracker = ChannelTracker(switch)
        self._table: dict[str, Callable[[str], Awaitable[str]]] = {
            "originate": self.originate,
            "uuid_recv_dtmf": self.uuid_recv_dtmf,
            "uuid_kill": self.uuid_kill,
            "uuid_getvar": self.uuid_getvar,
            "uuid_setvar": self.uuid_setvar,
            "uuid_bridge": self.uuid_bridge,
            "uuid_exists": self.uuid_exists,
            "show": self.show,
            "status": self.status,
            "version": self.version,
            "reloadxml": self.reloadxml,
            "hupall": self.hupall,
        }

    def close(self) -> None:
        self.tracker.close()

    def names(self) -> list[str]:
        return sorted(set(self._table) | set(self.switch.apis.names()))

    async def api(self, name: str, args: str = "") -> str:
        fn = self._table.get(name)
        if fn is not None:
            try:
                return await fn(args.strip())
            except Exception as exc:  # a bug in one command must not take the connection down
                log.exception("api %s failed", name)
                return f"-ERR {name}: {exc}\n"
        if name in self.switch.apis:
            return self.switch.apis.call(name, args.strip(), None)
        return f"-ERR {name} Command not found!\n"

    # --- calls --------------------------------------------------------------------------------------

    async def originate(self, args: str) -> str:
        """``originate <dial string> <exten>|&app(args) [dialplan] [context] [cid_name] [cid_num]
        [timeout_sec]``: ``+OK <uuid>`` once a leg answers, ``-ERR <CAUSE>`` otherwise."""
        try:
            argv = split_args(args)
        except ValueError:
            return ORIGINATE_USAGE
        if len(argv) < 2:
            return ORIGINATE_USAGE
        dial, destination = argv[0], argv[1]
        dialplan = argv[2] if len(argv) > 2 and argv[2] else "XML"
        context = argv[3] if len(argv) > 3 and argv[3] else "default"
        variables: dict[str, str] = {}
        if len(argv) > 4 and argv[4]:
            variables["caller_id_name"] = argv[4]
        if len(argv) > 5 and argv[5]:
            variables["caller_id_number"] = argv[5]
        timeout_ms = None
        if len(argv) > 6:
            if not argv[6].isdigit() or int(argv[6]) == 0:
                return ORIGINATE_USAGE
            timeout_ms = int(argv[6]) * 1000
        if destination.startswith("&") and not _APP.match(destination):
            return ORIGINATE_USAGE
        try:
            legs = [leg for alt in parse_dial_string(dial) for leg in alt]
        except ValueError as exc:
            return f"-ERR INVALID_NUMBER_FORMAT ({exc})\n"
        if not self.switch.secure_media_supported and \
                any(is_true(leg.variables.get("sip_secure_media")) for leg in legs):
            return "-ERR BEARERCAPABILITY_NOTIMPL (sip_secure_media=true: SRTP is not available yet)\n"
        try:
            channel = await self.switch.originate(dial, destination, dialplan=dialplan, context=context,
                                                  variables=variables, timeout_ms=timeout_ms)
        except OriginateError as exc:
            return f"-ERR {exc.cause.name}\n"
        return f"+OK {channel.uuid}\n"

    def _channel(self, uuid: str) -> Channel | None:
        ch = self.switch.get(uuid)
        return ch if ch is not None and ch.up else None

    async def uuid_recv_dtmf(self, args: str) -> str:
        uuid, _, digits = args.partition(" ")
        digits = digits.strip()
        if not uuid or not digits:
            return "-USAGE: <uuid> <dtmf_data>\n"
        ch = self._channel(uuid)
        if ch is None:
            return NO_CHANNEL
        try:
            ch.queue_dtmf(digits, source="app")
        except ValueError as exc:
            return f"-ERR {exc}\n"
        return f"+OK {uuid} received DTMF {digits}.\n"

    async def uuid_kill(self, args: str) -> str:
        uuid, _, cause_text = args.partition(" ")
        if not uuid:
            return "-USAGE: <uuid> [cause]\n"
        ch = self._channel(uuid)
        if ch is None:
            return NO_CHANNEL
        cause = HangupCause.MANAGER_REQUEST
        if cause_text.strip():
            try:
                cause = HangupCause.parse(cause_text)
            except ValueError as exc:
                return f"-ERR {exc}\n"
        await ch.hangup(cause)
        return "+OK\n"

    async def uuid_getvar(self, args: str) -> str:
        parts = args.split()
        if len(parts) != 2:
            return "-USAGE: <uuid> <var>\n"
        ch = self._channel(parts[0])
        if ch is None:
            return NO_CHANNEL
        value = self.switch.variable(ch, parts[1])
        return value if value else "_undef_"

    async def uuid_setvar(self, args: str) -> str:
        parts = args.split(" ", 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            return "-USAGE: <uuid> <var> [value]\n"
        ch = self._channel(parts[0])
        if ch is None:
            return NO_CHANNEL
        value = parts[2] if len(parts) > 2 and parts[2] not in ("", "_undef_") else None
        try:
            ch.set_variable(parts[1], value)
        except ValueError as exc:
            return f"-ERR {exc}\n"
        return "+OK\n"

    async def uuid_exists(self, args: str) -> str:
        return "true" if self._channel(args.strip()) else "false"

    async def uuid_bridge(self, args: str) -> str:
        """Join two existing legs (answering them first); ``+OK <other uuid>``."""
        parts = args.split()
        if len(parts) != 2:
            return "-USAGE: <uuid> <other_uuid>\n"
        a, b = self._channel(parts[0]), self._channel(parts[1])
        if a is None or b is None:
            return f"-ERR Invalid uuid {parts[0] if a is None else parts[1]}\n"
        if a is b or a.other_leg is not None or b.other_leg is not None:
            return "-ERR channel already bridged\n"
        await a.answer()
        await b.answer()

        async def bridged() -> None:
            try:
                await self.switch.join(a, b)
            except ChannelHungUp:
                pass

        self.switch.spawn(bridged())
        return f"+OK {b.uuid}\n"

    async def hupall(self, args: str) -> str:
        cause = HangupCause.MANAGER_REQUEST
        if args.split():
            try:
                cause = HangupCause.parse(args.split()[0])
            except ValueError as exc:
                return f"-ERR {exc}\n"
        await self.switch.hangup_all(cause)
        return "+OK\n"

    # --- information --------------------------------------------------------------------------------

    def channel_row(self, ch: Channel) -> dict[str, str]:
        h = ch.event_headers()
        created = self.tracker.created_at(ch.uuid)
        app, app_data = self.tracker.application.get(ch.uuid, ("", ""))
        media = getattr(ch.endpoint, "media", None)
        codec = str(getattr(media, "codec", "") or "")
        rate = "8000" if codec else ""
        other = ch.other_leg
        call_uuid = ch.uuid
        if other is not None and self.tracker.created_at(other.uuid) < created:
            call_uuid = other.uuid
        v = ch.vars
        return {
            "uuid": ch.uuid, "direction": ch.direction, "created": _local_time(created),
            "created_epoch": str(int(created)), "name": ch.name, "state": h["Channel-State"],
            "cid_name": v.get("caller_id_name", ""), "cid_num": v.get("caller_id_number", ""),
            "ip_addr": v.get("network_addr", ""), "dest": v.get("destination_number", ""),
            "application": app, "application_data": app_data, "dialplan": "XML",
            "context": v.get("context", ""), "read_codec": codec, "read_rate": rate, "read_bit_rate": "",
            "write_codec": codec, "write_rate": rate, "write_bit_rate": "",
            "secure": "srtp" if getattr(media, "secure", False) else "", "hostname": self.switch.hostname,
            "presence_id": "", "presence_data": "", "accountcode": "", "callstate": h["Channel-Call-State"],
            "callee_name": other.vars.get("caller_id_name", "") if other else "",
            "callee_num": other.vars.get("caller_id_number", "") if other else "",
            "callee_direction": other.direction if other else "", "call_uuid": call_uuid,
            "sent_callee_name": "", "sent_callee_num": "",
            "initial_cid_name": v.get("caller_id_name", ""), "initial_cid_num": v.get("caller_id_number", ""),
            "initial_ip_addr": v.get("network_addr", ""), "initial_dest": v.get("destination_number", ""),
            "initial_dialplan": "XML", "initial_context": v.get("context", ""),
        }

    def channel_rows(self) -> list[dict[str, str]]:
        return [self.channel_row(ch) for ch in self.switch.channels() if ch.up]

    def call_rows(self) -> list[dict[str, str]]:
        """One row per call: a bridged pair once (the older leg first), an unbridged leg alone."""
        rows, seen = [], set()
        for ch in self.switch.channels():
            if not ch.up or ch.uuid in seen:
                continue
            a, b = ch, ch.other_leg if ch.other_leg is not None and ch.other_leg.up else None
            seen.add(a.uuid)
            row = {c: v for c, v in self.channel_row(a).items() if c in _CALL_A}
            if b is not None:
                seen.add(b.uuid)
                row.update({"b_" + c: v for c, v in self.channel_row(b).items() if c in _CALL_B})
            row["call_created_epoch"] = row["created_epoch"]
            rows.append(row)
        return rows

    def eavesdrop_rows(self) -> list[dict[str, str]]:
        """Who is spying on what, in which mode (``switch.eavesdrop.sessions``)."""
        engine = self.switch.eavesdrop
        sessions = dict(getattr(engine, "sessions", None) or {})
        clock = self.switch.clock
        rows = []
        for spy_uuid, s in sessions.items():
            spy, target = s.spy, s.target
            peer = target.other_leg
            rows.append({
                "spy_uuid": spy_uuid, "spy_name": spy.name,
                "spy_user": spy.get_variable("user_name") or spy.get_variable("caller_id_number") or "",
                "target_uuid": target.uuid, "target_name": target.name,
                "peer_uuid": peer.uuid if peer is not None else "", "mode": str(s.mode),
                "mode_name": MODE_NAMES.get(s.mode, str(s.mode)), "listen": str(getattr(s, "listen", "")),
                "duration_ms": str(max(0, clock.elapsed(s.started_ms))),
            })
        return rows

    async def show(self, args: str) -> str:
        words = args.split()
        as_json = len(words) >= 3 and words[-2].lower() == "as" and words[-1].lower() == "json"
        if as_json:
            words = words[:-2]
        what = words[0].lower() if words else ""
        count_only = len(words) == 2 and words[1].lower() == "count"
        if what in ("channels", "calls", "eavesdrops") and (len(words) == 1 or count_only):
            if what == "channels":
                columns, rows = CHANNEL_COLUMNS, self.channel_rows()
            elif what == "calls":
                columns, rows = CALL_COLUMNS, self.call_rows()
            else:
                columns, rows = EAVESDROP_COLUMNS, self.eavesdrop_rows()
            if count_only:
                return json.dumps({"row_count": len(rows)}) + "\n" if as_json else f"\n{len(rows)} total.\n"
            return format_rows(columns, rows, as_json)
        return "-USAGE: channels|calls|eavesdrops [count] [as json]\n"

    async def status(self, args: str) -> str:
        up = max(0.0, time.time() - self.tracker.started)
        secs, ms = int(up), int((up % 1) * 1000)
        days, rem = divmod(secs, 86400)
        years, days = divmod(days, 365)
        hours, rem = divmod(rem, 3600)
        minutes, seconds = divmod(rem, 60)
        n = len(self.switch)
        return (f"UP {years} years, {days} days, {hours} hours, {minutes} minutes, {seconds} seconds, "
                f"{ms} milliseconds, 0 microseconds\n"
                f"Earshot (Version {VERSION}) is ready\n"
                f"{self.tracker.sessions_since_start} session(s) since startup\n"
                f"{n} session(s) - peak {max(self.tracker.peak, n)}\n")

    async def version(self, args: str) -> str:
        return f"Earshot Version {VERSION}\n"

    async def reloadxml(self, args: str) -> str:
        if self.reload is None:
            return "-ERR reloadxml is not available\n"
        try:
            result = self.reload()
            if hasattr(result, "__await__"):
                result = await result
        except Exception as exc:
            log.warning("reloadxml failed: %s", exc)
            return f"-ERR {exc}\n"
        if isinstance(result, str) and result.startswith("-ERR"):
            return result if result.endswith("\n") else result + "\n"
        return "+OK [Success]\n"
