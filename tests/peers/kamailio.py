"""kamailio 5.6 as a registrar/proxy on 127.0.0.1 (UDP and TCP on one port), usrloc in memory.

With `users`, REGISTER is challenged with digest auth (`www_challenge`) and checked against the
plaintext passwords written into the generated config (`pv_www_authenticate`, no database).
Other requests are never challenged. The process runs under `timeout`, so it dies with the
test run even if stop() is never reached.
"""
from __future__ import annotations

import glob
import re
import subprocess
import time
from pathlib import Path

from . import PeerError, end_process, log_tail, require
from .ports import free_port

HOST = "127.0.0.1"
_TOKEN = re.compile(r"^[A-Za-z0-9_.!~*'()%+-]+$")  # safe inside a cfg string and a SIP user

_MODULES = ["tm", "sl", "rr", "pv", "maxfwd", "textops", "siputils", "xlog", "sanity",
            "usrloc", "registrar", "ctl", "kex", "corex"]

_ROUTE = r"""
request_route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (!sanity_check("1511", "7")) { exit; }
    xlog("L_INFO", "REQ $rm $ru from $si:$sp\n");
    if (has_totag()) {
        if (loose_route()) { t_relay(); exit; }
        if (is_method("ACK")) { if (t_check_trans()) { t_relay(); } exit; }
        sl_send_reply("404", "Not here"); exit;
    }
    if (is_method("CANCEL")) { if (t_check_trans()) { t_relay(); } exit; }
    t_check_trans();
    if (is_method("REGISTER")) {
%(auth)s        if (!save("location")) { sl_reply_error(); }
        exit;
    }
    if (is_method("INVITE|SUBSCRIBE")) { record_route(); }
    if (!lookup("location")) { sl_send_reply("404", "Not Found"); exit; }
    if (!t_relay()) { sl_reply_error(); }
    exit;
}
"""


def _module_dir() -> str:
    for d in sorted(glob.glob("/usr/lib/*/kamailio/modules")) + ["/usr/lib/kamailio/modules"]:
        if Path(d, "tm.so").exists():
            return d + "/"
    raise PeerError("kamailio modules not found under /usr/lib/*/kamailio/modules")


class Kamailio:
    """A kamailio registrar/proxy. `users` maps user -> password and turns on REGISTER auth."""

    def __init__(self, workdir: Path, *, users: dict[str, str] | None = None,
                 realm: str = "earshot.test", lifetime: float = 60.0,
                 name: str = "kamailio") -> None:
        for value in [realm, *(users or {}), *(users or {}).values()]:
            if not _TOKEN.match(value):
                raise ValueError(f"{value!r}: users, passwords and realm must be non-empty "
                                 f"tokens of letters, digits and -_.!~*'()%+")
        if lifetime <= 0:
            raise ValueError(f"lifetime must be > 0 s, got {lifetime}")
        self.name = name
        self.users = dict(users or {})
        self.realm = realm
        self.lifetime = lifetime
        self.dir = Path(workdir) / name
        self.cfg_path = self.dir / "kamailio.cfg"
        self.log_path = self.dir / "kamailio.log"
        self.ctl_socket = self.dir / "ctl.sock"
        self.port = free_port(1)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        """host:port, for a phone's registrar or a SIP URI."""
        return f"{HOST}:{self.port}"

    def config(self) -> str:
        """The generated kamailio.cfg text."""
        mods = _MODULES + (["auth"] if self.users else [])
        auth = ""
        if self.users:
            cases = "".join(f'            case "{u}": $var(pw) = "{p}"; break;\n'
                            for u, p in self.users.items())
            auth = (
                '        $var(pw) = "";\n'
                '        switch ($au) {\n' + cases +
                '        }\n'
                '        if ($var(pw) == "" ||\n'
                f'            !pv_www_authenticate("{self.realm}", "$var(pw)", "0")) {{\n'
                f'            www_challenge("{self.realm}", "0"); exit;\n'
                '        }\n'
                '        consume_credentials();\n')
        return "\n".join([
            "#!KAMAILIO",
            "debug=2",
            "log_stderror=yes",
            "fork=yes",
            "children=1",
            "tcp_children=1",
            f"listen=udp:{HOST}:{self.port}",
            f"listen=tcp:{HOST}:{self.port}",
            f'alias="{HOST}:{self.port}"',
            "auto_aliases=no",
            f'mpath="{_module_dir()}"',
            *[f'loadmodule "{m}.so"' for m in mods],
            'modparam("usrloc", "db_mode", 0)',
            'modparam("rr", "enable_full_lr", 1)',
            f'modparam("ctl", "binrpc", "unix:{self.ctl_socket}")',
            _ROUTE % {"auth": auth},
        ])

    def start(self, timeout: float = 5.0) -> "Kamailio":
        """Write and check the config, start kamailio and wait for its RPC socket; returns self."""
        exe = require("kamailio", "kamailio")
        self.dir.mkdir(parents=True, exist_ok=True)
        run_dir = self.dir / "run"
        run_dir.mkdir(exist_ok=True)
        self.cfg_path.write_text(self.config())
        check = subprocess.run([exe, "-c", "-f", str(self.cfg_path)], capture_output=True,
                               text=True, timeout=15, stdin=subprocess.DEVNULL)
        if check.returncode != 0:
            raise PeerError(f"kamailio config check failed:\n{check.stdout}{check.stderr}")
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                ["timeout", "-k", "2", str(self.lifetime), exe, "-f", str(self.cfg_path),
                 "-DD", "-E", "-Y", str(run_dir), "-P", str(run_dir / "kamailio.pid")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise self._error(f"exited with {self._proc.returncode} while starting")
            if self.ctl_socket.exists():
                try:
                    self.rpc("core.uptime")
                    return self
                except PeerError:
                    pass
            if time.monotonic() > deadline:
                raise self._error(f"RPC socket not answering after {timeout}s")
            time.sleep(0.05)

    def rpc(self, *args: str) -> str:
        """Run one kamcmd RPC command and return its output."""
        exe = require("kamcmd", "kamailio")
        res = subprocess.run([exe, "-s", f"unix:{self.ctl_socket}", *args], capture_output=True,
                             text=True, timeout=10, stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise PeerError(f"kamcmd {' '.join(args)} failed ({res.returncode}): "
                            f"{res.stdout}{res.stderr}")
        return res.stdout

    def dump_locations(self) -> dict[str, list[str]]:
        """Registered AORs (user part, usrloc's key) -> their contact URIs (`ul.dump`)."""
        out: dict[str, list[str]] = {}
        aor = None
        for line in self.rpc("ul.dump").splitlines():
            m = re.match(r"\s*AoR:\s*(\S+)", line)
            if m:
                aor = m.group(1)
                out.setdefault(aor, [])
                continue
            m = re.match(r"\s*Address:\s*(\S+)", line)
            if m and aor is not None:
                out[aor].append(m.group(1))
        return out

    def stop(self) -> None:
        """Terminate kamailio (via its `timeout` wrapper, which passes the signal on)."""
        end_process(self._proc, grace=3.0)

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> "Kamailio":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    def _error(self, what: str) -> PeerError:
        return PeerError(f"kamailio: {what}\n--- log tail ---\n{self.log_tail()}")
