"""The configuration model: ``earshot.toml`` (DESIGN §4) and the embedded default.

A config is parsed whole and validated whole: every error names the file, the line, the key and
the reason, unknown keys are errors (they are usually typos), and nothing is applied unless the
whole file is good. Passwords never appear in errors, reprs or logs.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECRET_KEYS = frozenset({"password"})


class ConfigError(ValueError):
    """A config file that cannot be used; ``problems`` lists every (line, key, reason) found."""

    def __init__(self, path: str, problems: list[tuple[int | None, str, str]]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        out = []
        for line, key, reason in self.problems:
            where = f"{self.path}:{line}" if line else self.path
            out.append(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")
        return out


def _secret_repr() -> Any:
    return field(default="", repr=False)


@dataclass(frozen=True)
class SipConfig:
    listen: str = "127.0.0.1:5060"
    domain: str = "earshot.local"
    rtp_ports: str = "16384-16999"
    external_address: str = ""
    digest_algorithms: tuple[str, ...] = ("MD5",)  # add "SHA-256" (RFC 8760) for phones that support it
    tls_listen: str = ""          # e.g. "0.0.0.0:5061"; "" = no SIP over TLS
    tls_cert: str = ""            # PEM certificate (chain); "" = self-signed, made on first start
    tls_key: str = ""             # its PEM key; set both or neither
    tls_verify_clients: bool = False  # require a client certificate signed by tls_ca
    tls_ca: str = ""
    # an authenticated user's INVITE whose From names someone else: "replace" (the caller id is
    # the authenticated user) or "refuse" (403)
    caller_id_mismatch: str = "replace"

    @property
    def listen_host(self) -> str:
        return split_hostport(self.listen, 5060, True)[0]

    @property
    def listen_port(self) -> int:
        return split_hostport(self.listen, 5060, True)[1]

    @property
    def rtp_range(self) -> tuple[int, int]:
        lo, _, hi = self.rtp_ports.partition("-")
        return int(lo), int(hi)


@dataclass(frozen=True)
class User:
    id: str
    password: str = _secret_repr()
    caller_id_name: str = ""
    eavesdrop_group: str = ""
    may_eavesdrop: bool = False
    srtp: str = "off"          # SRTP policy of calls to/from this user: off | offer | require
    may_set_caller_id_name: bool = False   # the phone's From display name is shown, not caller_id_name


@dataclass(frozen=True)
class Gateway:
    name: str
    host: str
    username: str = ""
    password: str = _secret_repr()
    register: bool = True
    realm: str = ""
    expires: int = 3600
    srtp: str = "off"          # SRTP policy of calls through this gateway: off | offer | require
    transport: str = "udp"  # "udp", "tcp" or "tls"
    tls_verify: bool = True  # check the gateway's certificate and host name (TLS only)


@dataclass(frozen=True)
class DialplanConfig:
    file: str = ""  # absent: the built-in dialplan


@dataclass(frozen=True)
class EavesdropConfig:
    """Defaults for the ``eavesdrop_*`` channel variables (a channel's own variables win)."""

    require_group: str = ""
    enable_dtmf: bool = True
    bridge_aleg: bool = False
    bridge_bleg: bool = False
    whisper_aleg: bool = False
    whisper_bleg: bool = False
    indicate_new: str = ""
    indicate_idle: str = ""
    indicate_failed: str = ""
    confirm_tones: bool = True


@dataclass(frozen=True)
class PanelConfig:
    backend: str = "sim"  # "sim" or "gpio"
    active_low: bool = True
    spy: str = "handset"  # whose spy channel the buttons steer: "handset" or "user/<id>"
    buttons: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_BUTTONS))
    leds: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LEDS))


@dataclass(frozen=True)
class HandsetConfig:
    device: str = ""  # pyaudio device name; "" = the simulated twin
    rate: int = 8000
    hook: str = "sim"  # "sim", "gpio", "hid" or "always"
    destination: str = "779"


@dataclass(frozen=True)
class ControlConfig:
    listen: str = "127.0.0.1:8021"
    password: str = _secret_repr()  # "" = generated on first start and stored in the state directory
    allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    audit_file: str = ""  # "" = <state dir>/audit.sqlite


@dataclass(frozen=True)
class Config:
    sip: SipConfig = field(default_factory=SipConfig)
    users: tuple[User, ...] = ()
    gateways: tuple[Gateway, ...] = ()
    dialplan: DialplanConfig = field(default_factory=DialplanConfig)
    eavesdrop: EavesdropConfig = field(default_factory=EavesdropConfig)
    panel: PanelConfig = field(default_factory=PanelConfig)
    handset: HandsetConfig = field(default_factory=HandsetConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source: str = "<embedded default>"  # where it came from, for logs
    base_dir: str = ""  # relative paths (dialplan file, sounds) resolve against this

    def user(self, user_id: str) -> User | None:
        for u in self.users:
            if u.id == user_id:
                return u
        return None

    def password_for(self, user_id: str) -> str | None:
        u = self.user(user_id)
        return u.password if u else None

    def gateway(self, name: str) -> Gateway | None:
        for g in self.gateways:
            if g.name == name:
                return g
        return None

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir or ".") / p


# BCM pin numbers of the reference front panel (hw/board.py documents the wiring).
DEFAULT_BUTTONS = {"listen": 5, "whisper_agent": 6, "whisper_caller": 13, "barge": 19, "next": 26,
                   "vol_up": 20, "vol_down": 21}
DEFAULT_LEDS = {"status": 17, "registered": 27, "listen": 22, "whisper": 23, "barge": 24, "active": 25}
PANEL_ACTIONS = frozenset(DEFAULT_BUTTONS) | {"hook", "agent"}   # optional: any free pin

_SECTIONS: dict[str, type] = {
    "sip": SipConfig, "dialplan": DialplanConfig, "eavesdrop": EavesdropConfig, "panel": PanelConfig,
    "handset": HandsetConfig, "control": ControlConfig, "log": LogConfig,
}
_LISTS: dict[str, type] = {"users": User, "gateways": Gateway}
_LOG_LEVELS = ("debug", "info", "warning", "error")
SRTP_POLICIES = ("off", "offer", "require")
CALLER_ID_MISMATCH = ("replace", "refuse")


def split_hostport(text: str, default_port: int, allow_any_port: bool = False) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or a bare host → (host, port); ValueError when malformed.

    ``allow_any_port`` admits port 0 (a listener on any free port: tests, side-by-side instances).
    """
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([^:\[\]\s]+)(?::(\d+))?", text.strip())
    if not m:
        raise ValueError(f"not host:port: {text!r}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4) or default_port)
    if not (0 if allow_any_port else 1) <= port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


class _Locator:
    """Finds the line of a key in the TOML text, so errors point at it (tomllib keeps no positions)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def line_of(self, section: str | None, key: str | None, index: int = 0) -> int | None:
        in_section = section is None
        seen = -1
        for n, raw in enumerate(self.lines, 1):
            line = raw.strip()
            header = re.fullmatch(r"\[\[?\s*([\w.-]+)\s*\]\]?.*", line)
            if header:
                if header.group(1) == section:
                    seen += 1
                    in_section = seen == index
                    if in_section and key is None:
                        return n
                else:
                    in_section = False
                continue
            if in_section and key and re.match(rf"{re.escape(key)}\s*=", line):
                return n
        return None


def _check_type(value: Any, default: Any, hint: str) -> str | None:
    if "bool" in hint:
        return None if isinstance(value, bool) else "must be true or false"
    if hint == "int":
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if hint == "str":
        return None if isinstance(value, str) else "must be a string"
    if hint.startswith("dict"):
        if not isinstance(value, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                  for v in value.values()):
            return "must be a table of name = BCM pin number"
        return None
    if hint.startswith("tuple"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return "must be a list of strings"
        return None
    return None


def _build(cls: type, data: dict, section: str, index: int, loc: _Locator,
           problems: list[tuple[int | None, str, str]]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    label = section if index < 0 else f"{section}[{index}]"
    for key, value in data.items():
        line = loc.line_of(section, key, max(index, 0))
        if key not in fields:
            problems.append((line, f"{label}.{key}", f"unknown key (expected one of: {', '.join(fields)})"))
            continue
        f = fields[key]
        reason = _check_type(value, f.default, str(f.type))
        if reason:
            shown = "" if key in SECRET_KEYS else f" (got {value!r})"
            problems.append((line, f"{label}.{key}", reason + shown))
            continue
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    required = [n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for name in required:
        if name not in kwargs:
            problems.append((loc.line_of(section, None, max(index, 0)), f"{label}.{name}", "is required"))
    if any(name not in kwargs for name in required):
        return None
    return cls(**kwargs)


def _validate(cfg: Config, loc: _Locator, problems: list[tuple[int | None, str, str]]) -> None:
    def bad(section: str, key: str, reason: str, index: int = 0) -> None:
        problems.append((loc.line_of(section, key, index), f"{section}.{key}", reason))

    for key in ("listen",):
        try:
            split_hostport(cfg.sip.listen, 5060, allow_any_port=True)
        except ValueError as exc:
            bad("sip", key, str(exc))
    if cfg.sip.tls_listen:
        try:
            split_hostport(cfg.sip.tls_listen, 5061, allow_any_port=True)
        except ValueError as exc:
            bad("sip", "tls_listen", str(exc))
    if bool(cfg.sip.tls_cert) != bool(cfg.sip.tls_key):
        bad("sip", "tls_cert" if not cfg.sip.tls_cert else "tls_key",
            "tls_cert and tls_key go together: set both or neither")
    for key in ("tls_cert", "tls_key", "tls_ca"):
        value = getattr(cfg.sip, key)
        if value and not cfg.resolve(value).is_file():
            bad("sip", key, f"file not found: {cfg.resolve(value)}")
    if cfg.sip.tls_verify_clients and not cfg.sip.tls_ca:
        bad("sip", "tls_verify_clients", "needs tls_ca (the CA that signs the phones' certificates)")
    algos = cfg.sip.digest_algorithms
    if not algos or any(a not in ("MD5", "SHA-256") for a in algos) or len(set(algos)) != len(algos):
        bad("sip", "digest_algorithms", f"must list \"MD5\" and/or \"SHA-256\" once each (got {list(algos)})")
    if cfg.sip.caller_id_mismatch not in CALLER_ID_MISMATCH:
        bad("sip", "caller_id_mismatch", f"must be \"replace\" or \"refuse\" (got {cfg.sip.caller_id_mismatch!r})")
    m = re.fullmatch(r"(\d+)-(\d+)", cfg.sip.rtp_ports)
    if not m or not (1024 <= int(m.group(1)) < int(m.group(2)) <= 65535):
        bad("sip", "rtp_ports", f"must be LOW-HIGH within 1024-65535 (got {cfg.sip.rtp_ports!r})")
    elif (int(m.group(2)) - int(m.group(1))) < 3:
        bad("sip", "rtp_ports", "needs room for at least two RTP/RTCP port pairs")
    seen: set[str] = set()
    for i, u in enumerate(cfg.users):
        if not re.fullmatch(r"[A-Za-z0-9_.+-]{1,64}", u.id):
            problems.append((loc.line_of("users", "id", i), f"users[{i}].id",
                             f"must be 1-64 of letters, digits, _ . + - (got {u.id!r})"))
        if u.id in seen:
            problems.append((loc.line_of("users", "id", i), f"users[{i}].id", f"duplicate user {u.id!r}"))
        seen.add(u.id)
        if not u.password:
            problems.append((loc.line_of("users", None, i), f"users[{i}].password", "is required"))
        if u.srtp not in SRTP_POLICIES:
            problems.append((loc.line_of("users", "srtp", i), f"users[{i}].srtp",
                             f"must be \"off\", \"offer\" or \"require\" (got {u.srtp!r})"))
    names: set[str] = set()
    for i, g in enumerate(cfg.gateways):
        if g.name in names:
            problems.append((loc.line_of("gateways", "name", i), f"gateways[{i}].name", f"duplicate gateway {g.name!r}"))
        names.add(g.name)
        try:
            split_hostport(g.host, 5060)
        except ValueError as exc:
            problems.append((loc.line_of("gateways", "host", i), f"gateways[{i}].host", str(exc)))
        if g.srtp not in SRTP_POLICIES:
            problems.append((loc.line_of("gateways", "srtp", i), f"gateways[{i}].srtp",
                             f"must be \"off\", \"offer\" or \"require\" (got {g.srtp!r})"))
        if g.transport not in ("udp", "tcp", "tls"):
            problems.append((loc.line_of("gateways", "transport", i), f"gateways[{i}].transport",
                             f"must be \"udp\", \"tcp\" or \"tls\" (got {g.transport!r})"))
    if cfg.panel.backend not in ("sim", "gpio"):
        bad("panel", "backend", f"must be \"sim\" or \"gpio\" (got {cfg.panel.backend!r})")
    for table, pins in (("buttons", cfg.panel.buttons), ("leds", cfg.panel.leds)):
        for name, pin in pins.items():
            if table == "buttons" and name not in PANEL_ACTIONS:
                bad("panel", table, f"unknown button {name!r} (expected: {', '.join(sorted(PANEL_ACTIONS))})")
            if not 0 <= pin <= 27:
                bad("panel", table, f"{name}: BCM pin must be 0-27 (got {pin})")
    used = list(cfg.panel.buttons.values()) + list(cfg.panel.leds.values())
    dup = sorted({p for p in used if used.count(p) > 1})
    if dup:
        bad("panel", "buttons", f"pins used twice: {dup}")
    if not (cfg.panel.spy == "handset" or re.fullmatch(r"user/[\w.+-]+", cfg.panel.spy)):
        bad("panel", "spy", f"must be \"handset\" or \"user/<id>\" (got {cfg.panel.spy!r})")
    if cfg.handset.rate not in (8000, 16000, 48000):
        bad("handset", "rate", f"must be 8000, 16000 or 48000 (got {cfg.handset.rate})")
    if cfg.handset.hook not in ("sim", "gpio", "hid", "always"):
        bad("handset", "hook", f"must be sim, gpio, hid or always (got {cfg.handset.hook!r})")
    try:
        split_hostport(cfg.control.listen, 8021, allow_any_port=True)
    except ValueError as exc:
        bad("control", "listen", str(exc))
    for net in cfg.control.allow:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            bad("control", "allow", f"not a network: {net!r}")
    if cfg.log.level not in _LOG_LEVELS:
        bad("log", "level", f"must be one of {', '.join(_LOG_LEVELS)} (got {cfg.log.level!r})")
    if cfg.dialplan.file and not cfg.resolve(cfg.dialplan.file).is_file():
        bad("dialplan", "file", f"file not found: {cfg.resolve(cfg.dialplan.file)}")


def parse(text: str, path: str = "<string>", base_dir: str = "") -> Config:
    """Parse and validate one earshot.toml; ConfigError lists every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError(path, [(int(m.group(1)) if m else None, "", f"not valid TOML: {exc}")]) from None
    loc = _Locator(text)
    problems: list[tuple[int | None, str, str]] = []
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                problems.append((loc.line_of(None, key), key, "must be a table: [" + key + "]"))
                continue
            built = _build(_SECTIONS[key], value, key, -1, loc, problems)
            if built is not None:
                kwargs[key] = built
        elif key in _LISTS:
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                problems.append((loc.line_of(None, key), key, f"must be an array of tables: [[{key}]]"))
                continue
            items = [_build(_LISTS[key], v, key, i, loc, problems) for i, v in enumerate(value)]
            kwargs[key] = tuple(i for i in items if i is not None)
        else:
            known = ", ".join([*_SECTIONS, *_LISTS])
            problems.append((loc.line_of(key, None) or loc.line_of(None, key), key,
                             f"unknown section (expected one of: {known})"))
    if problems:
        raise ConfigError(path, problems)
    cfg = Config(**kwargs, source=path, base_dir=base_dir)
    _validate(cfg, loc, problems)
    if problems:
        raise ConfigError(path, problems)
    return cfg


def load(path: str | os.PathLike) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except PermissionError as exc:
        raise ConfigError(str(p), [(None, "", f"cannot read: {exc.strerror} (this process runs as "
                                    f"{_whoami()}: the file and every directory above it must be "
                                    "readable by it)")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [(None, "", f"cannot read: {exc}")]) from None
    return parse(text, str(p), str(p.resolve().parent))


def _whoami() -> str:
    import grp  # noqa: PLC0415 - only for this message
    import pwd  # noqa: PLC0415
    uid, gid = os.getuid(), os.getgid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return f"user {user}, group {group}"


def state_dir() -> Path:
    """Where runtime state lives: $EARSHOT_STATE_DIR, systemd's $STATE_DIRECTORY, or ~/.local/state/earshot."""
    d = os.environ.get("EARSHOT_STATE_DIR") or os.environ.get("STATE_DIRECTORY")
    if d:
        return Path(d.split(":")[0])
    return Path.home() / ".local" / "state" / "earshot"


def runtime_dir() -> Path:
    """Volatile runtime files (the status file): $EARSHOT_RUNTIME_DIR, systemd's $RUNTIME_DIRECTORY,
    else the state directory."""
    d = os.environ.get("EARSHOT_RUNTIME_DIR") or os.environ.get("RUNTIME_DIRECTORY")
    return Path(d.split(":")[0]) if d else state_dir()


def file_sha256(path: str | os.PathLike) -> str:
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def stored_secret(directory: Path, name: str) -> str:
    """A random secret kept in a 0600 file, created on first use; the same on every start."""
    path = directory / name
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    directory.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def embedded_default(directory: Path | None = None) -> Config:
    """The appliance with no config anywhere: a standalone registrar on loopback with demo users.

    Demo and control-socket passwords are generated once and stored under the state directory
    (never FreeSWITCH's famous ``ClueCon``, never printed); ``credentials_path`` says where.
    """
    d = directory or state_dir()
    users = (
        User("1001", stored_secret(d, "demo-1001.secret"), "Agent 1001", "sales"),
        User("1002", stored_secret(d, "demo-1002.secret"), "Agent 1002", "sales"),
        User("1000", stored_secret(d, "demo-1000.secret"), "Supervisor", "", True),
    )
    control = ControlConfig(password=stored_secret(d, "control.secret"))
    return Config(users=users, control=control, source="<embedded default>", base_dir=str(d))


def redacted(cfg: Config) -> dict:
    """The config as plain data with every secret replaced, for logs and `check-config`."""
    def scrub(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return {k: ("***" if k in SECRET_KEYS and v else scrub(v))
                    for k, v in dataclasses.asdict(obj).items()}
        if isinstance(obj, (list, tuple)):
            return [scrub(v) for v in obj]
        if isinstance(obj, dict):
            return {k: ("***" if k in SECRET_KEYS and v else scrub(v)) for k, v in obj.items()}
        return obj
    return scrub(cfg)
