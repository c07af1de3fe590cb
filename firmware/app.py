"""Wiring: config → services → event loop, signals, readiness and the watchdog.

``main()`` is what ``python -m firmware run`` and the systemd unit call. It picks the config
(``--config``, ``$EARSHOT_CONFIG``, ``/etc/earshot/earshot.toml``, else the embedded default),
starts every service, reports READY=1 once they listen, pings the watchdog from the loop, applies
SIGHUP as a reload (a bad file is rejected and the running config stays), and stops cleanly on
SIGINT / SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from firmware import config as cfgmod
from firmware import sdnotify
from firmware.control import ControlServer
from firmware.devices import Devices
from firmware.media.engine import MediaEngine, advertised_address
from firmware.media.tap import TapHub
from firmware.sip.service import SipService
from firmware.switch import Db, Switch
from firmware.switch import eavesdrop_app
from firmware.switch.wiring import attach

log = logging.getLogger("earshot")

SYSTEM_CONFIG = Path("/etc/earshot/earshot.toml")


def find_config(explicit: str | None) -> Path | None:
    for candidate in (explicit, os.environ.get("EARSHOT_CONFIG")):
        if candidate:
            return Path(candidate)
    conf_dir = os.environ.get("CONFIGURATION_DIRECTORY")  # systemd ConfigurationDirectory=
    for p in ([Path(conf_dir) / "earshot.toml"] if conf_dir else []) + [SYSTEM_CONFIG]:
        try:
            if p.is_file():
                return p
        except PermissionError:   # there, but not ours to read: load() says so (exit 78), no traceback
            return p
    return None


def load_config(path: Path | None) -> cfgmod.Config:
    return cfgmod.load(path) if path else cfgmod.embedded_default()


def write_status(state: str, cfg: cfgmod.Config, config_path: Path | None, detail: str = "",
                 sip_port: int | None = None, control_port: int | None = None,
                 restart_needed: list[str] | None = None) -> None:
    """Publish what is running in ``<runtime dir>/status.json`` (atomically), so the provisioning
    tool can tell that a reload took effect: it compares ``config_sha256`` with the file it wrote."""
    d = cfgmod.runtime_dir()
    d.mkdir(parents=True, exist_ok=True)
    status = {"pid": os.getpid(), "state": state, "config": cfg.source, "detail": detail, "sip_port": sip_port,
              "control_port": control_port,
              # parts of the file that only a restart applies (provisioning restarts for them)
              "restart_needed": restart_needed or [],
              "config_sha256": cfgmod.file_sha256(config_path) if config_path and config_path.is_file() else ""}
    tmp = d / f".status.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(status))
    os.replace(tmp, d / "status.json")


class Appliance:
    """Owns the running services; ``start``/``reload``/``stop`` are the only entry points."""

    def __init__(self, cfg: cfgmod.Config, config_path: Path | None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.stopping = asyncio.Event()
        self.sip = SipService(lambda: self.cfg)
        self.switch: Switch | None = None
        self.media: MediaEngine | None = None
        self.control: ControlServer | None = None
        self.devices: Devices | None = None

    def status(self, state: str, detail: str = "", config_path: Path | None = None,
               restart_needed: list[str] | None = None) -> None:
        write_status(state, self.cfg, config_path, detail, self.sip.port,
                     self.control.port if self.control else None, restart_needed)

    async def start(self) -> None:
        cfg = self.cfg
        log.info("config: %s", cfg.source)
        state = cfgmod.state_dir()
        state.mkdir(parents=True, exist_ok=True)
        if cfg.source == "<embedded default>":
            log.info("embedded default: demo users %s; their passwords are in %s/demo-<id>.secret, "
                     "the control socket's in %s/control.secret",
                     ", ".join(u.id for u in cfg.users), state, state)
        # the switch, its media and eavesdrop exist before SIP listens, so no call is refused
        self.switch = Switch(cfg, db=Db(state / "earshot.db"))
        if cfg.dialplan.file:
            self.switch.dialplan.reload(cfg.resolve(cfg.dialplan.file))
        host = cfg.sip.listen_host
        self.media = MediaEngine(cfg.sip.rtp_ports, host, advertised_address(host, cfg.sip.external_address))
        await self.media.start()
        attach(self.switch, self.sip, self.media)
        eavesdrop_app.register(self.switch, TapHub(self.media.clock))
        await _listening("SIP", cfg.sip.listen, self.sip.start())
        self.control = ControlServer(self.switch, lambda: self.cfg, reload=self.reload)
        await _listening("control socket", cfg.control.listen, self.control.start())
        log.info("RTP ports %s, announced as %s", cfg.sip.rtp_ports, self.media.advertised_ip)
        log.info("users: %s", ", ".join(f"{u.id}{' (may eavesdrop)' if u.may_eavesdrop else ''}"
                                         for u in cfg.users) or "none")
        for g in cfg.gateways:
            log.info("gateway %s → %s%s", g.name, g.host, " (registering)" if g.register else "")
        self.devices = Devices(cfg, self.switch, self.media.clock, stop=self.stopping.set,
                               status=lambda: {"registrations": len(self.sip.registrar.users()),
                                               "gateways": dict(self.sip.gateway_states)})
        self.sip.on_gateway_state = self.devices.gateway_state
        await self.devices.start()
        self.devices.sip_up(True)
        handset = "none" if self.devices.handset is None else (cfg.handset.device or "simulated")
        log.info("panel: %s backend; handset: %s, off-hook dials %s",
                 cfg.panel.backend, handset, cfg.handset.destination)
        if cfg.users:
            log.info("softphones: register each as <id>@%s at %s:%d (UDP or TCP) with its password, then "
                     "dial another id (%s); 9196 echoes, 9197 plays a tone; a user allowed to eavesdrop "
                     "dials 88<id> to listen to that user's call, 779 for every call in its group",
                     cfg.sip.domain, self.media.advertised_ip, self.sip.port,
                     ", ".join(u.id for u in cfg.users))

    async def reload(self) -> str | None:
        """Apply a changed config file; a bad one is rejected whole and the running one stays.
        Returns "-ERR <reason>" when rejected (the control socket's ``reloadxml`` shows it)."""
        if self.config_path is None:
            # the first provisioning of an appliance on its embedded default lands here
            self.config_path = find_config(None)
            if self.config_path is None:
                log.info("reload: no config file anywhere, staying on the embedded default")
                return None
        sdnotify.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            new = cfgmod.load(self.config_path)
        except cfgmod.ConfigError as exc:
            for line in exc.lines():
                log.error("reload rejected: %s", line)
            self.status("reload-rejected", exc.lines()[0])
            sdnotify.notify("READY=1", "STATUS=serving (reload rejected)")
            return f"-ERR {exc.lines()[0]}"
        old, self.cfg = self.cfg, new
        self.sip.reloaded(old, new)
        if self.switch is not None:
            self.switch.apply_config(new)
            if not self.switch.dialplan.reload(new.resolve(new.dialplan.file) if new.dialplan.file else None):
                log.error("reload: dialplan rejected; the previous dialplan stays in force")
        log.info("reload: applied %s (users take effect now)", new.source)
        later = self.sip.restart_needed(new) + [
            key for key in ("panel", "handset", "control") if getattr(old, key) != getattr(new, key)]
        if later:
            log.warning("reload: %s changed; that takes a restart (systemctl restart earshot)", ", ".join(later))
        self.status("ready", config_path=self.config_path, restart_needed=later)
        sdnotify.notify("READY=1", "STATUS=serving")
        return None

    async def stop(self) -> None:
        log.info("stopping")
        if self.devices is not None:
            await self.devices.stop()
        if self.control is not None:
            await self.control.stop()
        if self.switch is not None:
            await self.switch.close()  # BYEs and final responses go out before SIP stops
        if self.media is not None:
            await self.media.stop()
        await self.sip.stop()


async def _listening(what: str, address: str, starting) -> None:
    """Start a listener; a port in use or an address not on this host ends the start with a
    message that names the service and the config key."""
    try:
        await starting
    except OSError as exc:
        log.error("cannot start the %s: %s (listen %s; is another Earshot or a PBX using it?)",
                  what, exc.strerror or exc, address)
        raise StartupFailed from None


class StartupFailed(Exception):
    """A service could not start; the reason is already logged."""


async def _watchdog(interval: float) -> None:
    while True:
        sdnotify.notify("WATCHDOG=1")
        await asyncio.sleep(interval)


async def serve(app: Appliance) -> None:
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task] = set()

    def on_hup() -> None:
        t = loop.create_task(app.reload())
        reloads.add(t)
        t.add_done_callback(reloads.discard)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, app.stopping.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        await app.start()
    except StartupFailed:
        await app.stop()
        raise
    app.status("ready", config_path=app.config_path)
    sdnotify.notify("READY=1", "STATUS=serving")
    log.info("ready (Ctrl-C or SIGTERM stops)")
    interval = sdnotify.watchdog_interval()
    dog = loop.create_task(_watchdog(interval)) if interval else None
    try:
        await app.stopping.wait()
    finally:
        sdnotify.notify("STOPPING=1")
        if dog:
            dog.cancel()
        await app.stop()


def setup_logging(level: str) -> None:
    # Under systemd the journal adds time and unit; on a terminal we add the time ourselves.
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr)


def main(config_path: str | None = None, log_level: str | None = None) -> int:
    path = find_config(config_path)
    try:
        cfg = load_config(path)
    except cfgmod.ConfigError as exc:
        setup_logging(log_level or "info")
        for line in exc.lines():
            log.error("config rejected: %s", line)
        return 78  # EX_CONFIG: systemd's RestartPreventExitStatus can keep a broken config from looping
    setup_logging(log_level or cfg.log.level)
    try:
        asyncio.run(serve(Appliance(cfg, path)))
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        pass
    except StartupFailed:
        return 1
    log.info("stopped")
    return 0
