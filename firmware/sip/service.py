"""The SIP side of the appliance, built from the config: transport, digest auth, registrar,
user-agent core and one registration per gateway with ``register = true``.

    sip = SipService(lambda: app.cfg)          # reads the *current* config on every lookup
    await sip.start()                          # listening on [sip] listen, UDP and TCP (+ tls_listen)
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

from firmware.config import Config, split_hostport, state_dir

from . import tls

from .auth import DigestServer
from .dialog_event import AgentCall, DialogEvents
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
        self.tls_fingerprint: str | None = None
        self.tls_cert: str | None = None
        tls_kw = self._tls_settings(cfg)
        self.transport = Transport(host, port, advertised_host=cfg.sip.external_address or None, **tls_kw)
        for g in cfg.gateways:
            if g.transport == "tls" and not g.tls_verify:
                self.transport.tls_unverified.add(split_hostport(g.host, 5061)[0])
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
        # Busy lamps (SUBSCRIBE Event: dialog): the switch says what each agent's calls are
        # (firmware/switch/wiring.py); until then every agent reads as idle.
        self.agent_calls: Callable[[str], list[AgentCall]] = lambda agent: []
        self.blf: DialogEvents | None = None

    def _tls_settings(self, cfg: Config) -> dict:
        """Transport keywords for [sip] tls_*: the server context (the configured certificate or a
        self-signed one made once in the state directory) and the client context for gateways."""
        if not cfg.sip.tls_listen:
            return {}
        host, port = split_hostport(cfg.sip.tls_listen, 5061, allow_any_port=True)
        ca = str(cfg.resolve(cfg.sip.tls_ca)) if cfg.sip.tls_ca else ""
        if cfg.sip.tls_cert:
            cert, key = cfg.resolve(cfg.sip.tls_cert), cfg.resolve(cfg.sip.tls_key)
        else:
            names = ["localhost", "127.0.0.1"]
            for extra in (host, cfg.sip.external_address):
                if extra and extra not in ("0.0.0.0", "::") and extra not in names:
                    names.append(extra)
            cert, key = tls.ensure_self_signed(state_dir(), names=tuple(names))
        self.tls_cert = str(cert)
        self.tls_fingerprint = tls.fingerprint(cert)
        return {"tls": tls.server_context(cert, key, verify_clients=cfg.sip.tls_verify_clients, ca=ca),
                "tls_port": port, "tls_host": host, "tls_client": tls.client_context(ca=ca)}

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
        self.blf = DialogEvents(self.ua, self.auth, domain=cfg.sip.domain, may_watch=self._may_watch,
                                is_agent=lambda agent: self._config().user(agent) is not None,
                                state_of=lambda agent: self.agent_calls(agent))
        self.ua.on_request = self.blf.handle
        self.registrar.on_change = lambda user, contacts: log.info(
            "registration: %s has %d contact(s)", user, len(contacts))
        log.info("SIP listening on %s:%d (udp, tcp), domain %s",
                 self.transport.host, self.transport.port, cfg.sip.domain)
        if self.transport.tls_server_context is not None:
            log.info("SIP over TLS listening on %s:%d, certificate %s, SHA-256 fingerprint %s",
                     self.transport.tls_host, self.transport.tls_port, self.tls_cert, self.tls_fingerprint)
        for g in cfg.gateways:
            if g.register:
                registrar = g.host if g.transport == "udp" else f"{g.host};transport={g.transport}"
                reg = GatewayRegistration(self.ua, registrar=registrar, username=g.username or g.name,
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

    def _may_watch(self, watcher: str, agent: str) -> bool:
        """A supervisor (may_eavesdrop) watches any agent; anyone else only itself."""
        user = self._config().user(watcher)
        return user is not None and (watcher == agent or user.may_eavesdrop)

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
        for key in ("listen", "domain", "external_address", "digest_algorithms", "tls_listen", "tls_cert",
                    "tls_key", "tls_verify_clients", "tls_ca"):
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
        if self.blf is not None:
            self.blf.close()              # each watcher hears its subscription end
            await self.blf.drain(UNREGISTER_TIMEOUT)
        if self.ua:
            await self.ua.close()
        await self.transport.close()
