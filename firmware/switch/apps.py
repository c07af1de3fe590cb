"""Dialplan applications (mod_dptools subset): ``async def app(switch, channel, data)``.

``data`` arrives expanded. A bad argument raises ``ValueError``: the switch logs it with the
extension name and the dialplan goes on, as FreeSWITCH does. Waits go through
``channel.guard`` so that every application ends when the channel hangs up.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .channel import Channel, ChannelState, HangupCause

if TYPE_CHECKING:
    from .core import Switch

log = logging.getLogger(__name__)

LOG_LEVELS = {
    "CONSOLE": logging.INFO, "ALERT": logging.CRITICAL, "CRIT": logging.CRITICAL, "ERR": logging.ERROR,
    "ERROR": logging.ERROR, "WARNING": logging.WARNING, "NOTICE": logging.INFO, "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
}
TONE_STREAM = "tone_stream://"
MAX_SLEEP_MS = 24 * 3600 * 1000


class Transfer(Exception):
    """Raised by ``transfer``: the switch hunts again with a new destination and context."""

    def __init__(self, destination: str, context: str | None) -> None:
        super().__init__(destination)
        self.destination = destination
        self.context = context


def _split_var(data: str) -> tuple[str, str | None]:
    name, eq, value = data.partition("=")
    name = name.strip()
    if not name:
        raise ValueError(f"expected var=value (got {data!r})")
    return name, (value if eq else None)


async def app_answer(sw: Switch, ch: Channel, data: str) -> None:
    await ch.answer()


async def app_pre_answer(sw: Switch, ch: Channel, data: str) -> None:
    await ch.pre_answer()


async def app_ring_ready(sw: Switch, ch: Channel, data: str) -> None:
    await ch.ring()


async def app_set(sw: Switch, ch: Channel, data: str) -> None:
    name, value = _split_var(data)
    ch.set_variable(name, value if value else None)  # "set x=" unsets, as in FreeSWITCH


async def app_unset(sw: Switch, ch: Channel, data: str) -> None:
    name = data.strip()
    if not name:
        raise ValueError("unset needs a variable name")
    ch.set_variable(name, None)


async def app_export(sw: Switch, ch: Channel, data: str) -> None:
    """Set here and on the bridged leg (now or when it is created); ``nolocal:`` skips this leg."""
    local = True
    if data.startswith("nolocal:"):
        local, data = False, data[len("nolocal:"):]
    name, value = _split_var(data)
    if local:
        ch.set_variable(name, value if value else None)
    else:
        ch.set_variable("nolocal:" + name, value if value else None)
    exported = [v for v in (ch.get_variable("export_vars") or "").split(",") if v]
    key = name if local else "nolocal:" + name
    if key not in exported:
        exported.append(key)
        ch.set_variable("export_vars", ",".join(exported))
    if ch.other_leg is not None and ch.other_leg.up:
        ch.other_leg.set_variable(name, value if value else None)


async def app_hangup(sw: Switch, ch: Channel, data: str) -> None:
    cause = HangupCause.NORMAL_CLEARING
    if data.strip():
        try:
            cause = HangupCause.parse(data)
        except ValueError:
            log.warning("%s: hangup: unknown cause %r, using NORMAL_CLEARING", ch.name, data)
    await ch.hangup(cause)


def _parse_ms(data: str, what: str) -> int:
    text = data.strip()
    if not text.isdigit() or int(text) > MAX_SLEEP_MS:
        raise ValueError(f"{what} needs milliseconds 0-{MAX_SLEEP_MS} (got {data!r})")
    return int(text)


async def app_sleep(sw: Switch, ch: Channel, data: str) -> None:
    ms = _parse_ms(data, "sleep")
    await ch.guard(ch.clock.sleep_ms(ms))


async def app_queue_dtmf(sw: Switch, ch: Channel, data: str) -> None:
    ch.queue_dtmf(data)  # returns at once; digits after a w/W pause follow in the background


async def app_send_dtmf(sw: Switch, ch: Channel, data: str) -> None:
    digits = data.split("@")[0].strip()
    if not digits:
        raise ValueError("send_dtmf needs digits")
    ch.send_dtmf(digits)


async def app_db(sw: Switch, ch: Channel, data: str) -> None:
    sw.db.app(data)


async def app_info(sw: Switch, ch: Channel, data: str) -> None:
    """Log every header and variable of the channel (``info [LEVEL]``). Without a level: one line
    at INFO and the dump at DEBUG — the seed's ``global`` extension runs it on every call, and
    ~36 lines a call at INFO buried the journal."""
    headers = ch.event_headers()
    dump = "\n".join(f"{k}: {v}" for k, v in headers.items())
    if data.strip():
        log.log(LOG_LEVELS.get(data.strip().upper(), logging.INFO), "%s: info\n%s", ch.name, dump)
        return
    log.info("%s: info: %s -> %s (%d headers at debug level)", ch.name, headers.get("Caller-Caller-ID-Number", ""),
             headers.get("Caller-Destination-Number", ""), len(headers))
    log.debug("%s: info\n%s", ch.name, dump)


async def app_log(sw: Switch, ch: Channel, data: str) -> None:
    first, _, rest = data.strip().partition(" ")
    level = LOG_LEVELS.get(first.upper())
    if level is None:
        level, rest = logging.DEBUG, data.strip()
    log.log(level, "%s: %s", ch.name, rest)


async def app_echo(sw: Switch, ch: Channel, data: str) -> None:
    media = ch.endpoint.media
    if media is None:
        raise ValueError("echo: this channel has no media")
    if ch.state is not ChannelState.ANSWERED:
        await ch.pre_answer()
    media.echo(True)
    try:
        await ch.guard(ch.hungup.wait())
    finally:
        media.echo(False)


def resolve_sound(sw: Switch, source: str) -> str | None:
    """A playable source: ``tone_stream://…`` as is, a WAV path made absolute; None if missing."""
    if source.startswith(TONE_STREAM):
        return source
    path = sw.config.resolve(source) if sw.config is not None else Path(source)
    return str(path) if path.is_file() else None


async def app_playback(sw: Switch, ch: Channel, data: str) -> None:
    source = data.strip()
    if not source:
        raise ValueError("playback needs a file or tone_stream://")
    media = ch.endpoint.media
    if media is None:
        raise ValueError("playback: this channel has no media")
    playable = resolve_sound(sw, source)
    if playable is None:
        log.warning("%s: playback: file not found, skipped: %s", ch.name, source)
        return
    if ch.state is not ChannelState.ANSWERED:
        await ch.pre_answer()  # FreeSWITCH plays as early media on an unanswered call
    try:
        await ch.guard(media.play(playable))
    except (FileNotFoundError, ValueError, OSError) as exc:
        log.warning("%s: playback of %s failed, skipped: %s", ch.name, source, exc)
    finally:
        if not ch.up:
            media.stop_playback()


async def app_transfer(sw: Switch, ch: Channel, data: str) -> None:
    parts = data.split()
    if not parts or len(parts) > 3:
        raise ValueError(f"usage: transfer <extension> [dialplan] [context] (got {data!r})")
    if len(parts) >= 2 and parts[1].upper() != "XML":
        raise ValueError(f"transfer: only the XML dialplan exists (got {parts[1]!r})")
    raise Transfer(parts[0], parts[2] if len(parts) == 3 else None)


async def app_bridge(sw: Switch, ch: Channel, data: str) -> None:
    await sw.bridge(ch, data)


def slot(name: str, cause: HangupCause = HangupCause.FACILITY_NOT_IMPLEMENTED):
    """An application that is not built yet: a clear error and a hangup."""

    async def unavailable(sw: Switch, ch: Channel, data: str) -> None:
        log.error("%s: %s(%s): the %s application is not available in this build", ch.name, name, data, name)
        await ch.hangup(cause)

    unavailable.__name__ = f"app_{name}_unavailable"
    return unavailable


# name -> (function, may run inline while hunting)
BUILTIN_APPS = {
    "answer": (app_answer, False),
    "pre_answer": (app_pre_answer, False),
    "ring_ready": (app_ring_ready, False),
    "set": (app_set, True),
    "unset": (app_unset, True),
    "export": (app_export, True),
    "hangup": (app_hangup, False),
    "sleep": (app_sleep, False),
    "queue_dtmf": (app_queue_dtmf, True),
    "send_dtmf": (app_send_dtmf, False),
    "db": (app_db, True),
    "info": (app_info, True),
    "log": (app_log, True),
    "echo": (app_echo, False),
    "playback": (app_playback, False),
    "transfer": (app_transfer, False),
    "bridge": (app_bridge, False),
    "eavesdrop": (slot("eavesdrop"), False),
    "three_way": (slot("three_way"), False),
    "userspy": (slot("userspy"), False),
}
