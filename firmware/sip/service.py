"""The SIP side of the appliance, built from the config: transport, digest auth, registrar,
user-agent core and one registration per gateway with ``register = true``.

    sip = SipService(lambda: app.cfg)          # reads the *current* config on every lookup
    await sip.start()                          # listening on [sip] listen, UDP and TCP
    sip.registrar.lookup("1001")               # where phone 1001 is
    sip.gateway_states                         # {"pbx": "registered", …} (the REGISTERED LED)
    await sip.stop()

Users and passwords are looked up through the callable on every request, so a reloaded
``[[users]]`` takes effect without restarting anything; listen address and gateways need a restart
(``restart_needed`` says which).
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Callable

from firmware.config import Config, split_hostport

from .auth import DigestServer
from .registrar import Registrar
from .registration import GatewayRegistration
from .transport import Transport
from .ua import UserAgent

log = logging.getLogger("earshot.sip")

UNREGISTER_TIMEOUT = 3.0


class SipService:
    def __init__(self, config: Callable[[], Config]) -> None:
        self._config = config
        cfg = config()
        self.started_with = cfg
        host, port = split_hostport(cfg.sip.listen, 5060, allow_any_port=True)
        self.transport = Transport(host, port, advertised_host=cfg.sip.external_address or None)
        # MD5 only by default: most desk phones (and baresip 1.0) give up on a 401 that also offers
        # SHA-256, and a phone that cannot register is worse than a weaker hash on a LAN.
        self.auth = DigestServer(cfg.sip.domain, secrets.token_bytes(32), self._password,
                                 algorithms=tuple(cfg.sip.digest_algorithms))
        self.registrar = Registrar(cfg.sip.domain, self.auth)
        self.ua: UserAgent | None = None
        self.gateways: dict[str, GatewayRegistration] = {}
        self.gateway_states: dict[str, str] = {}
        self.on_gateway_state: Callable[[str, str], None] | None = None
        # What answers an incoming INVITE: the switch installs its SIP profile here
        # (firmware/switch/wiring.py); until then every call is refused cleanly.
        self.on_invite: Callable = self._no_switch_yet

    def _password(self, user: str) -> str | None:
        return self._config().password_for(user)

    @property
    def port(self) -> int:
        return self.transport.port

    async def start(self) -> None:
        cfg = self._config()
        await self.transport.start()
        trusted = {split_hostport(g.host, 5060)[0] for g in cfg.gateways}
        self.ua = UserAgent(self.transport, domain=cfg.sip.domain, digest_server=self.auth,
                            registrar=self.registrar, trusted_hosts=trusted)
        self.ua.on_invite = self.on_invite
        self.registrar.on_change = lambda user, contacts: log.info(
            "registration: %s has %d contact(s)", user, len(contacts))
        log.info("SIP listening on %s:%d (udp, tcp), domain %s",
                 self.transport.host, self.transport.port, cfg.sip.domain)
        for g in cfg.gateways:
            if g.register:
                reg = GatewayRegistration(self.ua, registrar=g.host, username=g.username or g.name,
                                          password=g.password, domain=g.realm or None, expires=g.expires,
                                          on_state=lambda state, r, name=g.name: self._gateway_state(name, state))
                self.gateways[g.name] = reg
                reg.start()

    def _gateway_state(self, name: str, state: str) -> None:
        if self.gateway_states.get(name) != state:
            log.info("gateway %s: %s", name, state)
        self.gateway_states[name] = state
        if self.on_gateway_state:
            self.on_gateway_state(name, state)

    @staticmethod
    def _no_switch_yet(call) -> None:
        call.reject(480, "Temporarily Unavailable")

    def reloaded(self, old: Config, new: Config) -> None:
        """Apply what applies live; users and passwords are read per request already."""
        if old.users != new.users:
            self.auth.reset_backoff()

    def restart_needed(self, new: Config) -> list[str]:
        """What of a new config only a restart applies (users apply live)."""
        old = self.started_with
        changed = []
        for key in ("listen", "domain", "external_address", "digest_algorithms"):
            if getattr(old.sip, key) != getattr(new.sip, key):
                changed.append(f"sip.{key}")
        if old.gateways != new.gateways:
            changed.append("gateways")
        return changed

    async def stop(self) -> None:
        # Unregister politely, but a PBX that no longer answers must not hold up shutdown
        # (systemd would kill us after TimeoutStopSec).
        for name, reg in self.gateways.items():
            try:
                await asyncio.wait_for(reg.stop(), UNREGISTER_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("gateway %s: no answer to un-REGISTER within %.0f s; leaving it to expire",
                            name, UNREGISTER_TIMEOUT)
                await reg.stop(unregister=False)
        if self.ua:
            await self.ua.close()
        await self.transport.close()
