"""Earshot itself as a child process (`python -m firmware run`), the way systemd runs it:
its sd_notify socket is ours, so a test awaits READY=1 instead of sleeping, and its status file
tells which SIP port it bound."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def loopback_config(*users: str, rtp_pairs: int = 20, user_keys: dict[str, str] | None = None,
                    extra: str = "") -> str:
    """An earshot.toml on loopback with free ports: users ``pw-<id>``, a control socket with
    password "pw". ``user_keys`` adds TOML lines per user (``{"1000": "may_eavesdrop = true"}``)."""
    from tests.peers.ports import rtp_range   # noqa: PLC0415 - keeps this module's imports light
    lo, hi = rtp_range(rtp_pairs)
    text = (f'[sip]\nlisten = "127.0.0.1:0"\ndomain = "127.0.0.1"\nrtp_ports = "{lo}-{hi}"\n'
            '[control]\nlisten = "127.0.0.1:0"\npassword = "pw"\n')
    for u in users:
        text += f'[[users]]\nid = "{u}"\npassword = "pw-{u}"\n' + ((user_keys or {}).get(u, "") + "\n").lstrip("\n")
    return text + extra


class Appliance:
    def __init__(self, workdir: Path, *args: str, config: str | None = None,
                 python: str | os.PathLike = sys.executable, cwd: str | os.PathLike = ROOT) -> None:
        """``python``/``cwd``: an installed firmware runs from its own venv, outside the checkout."""
        self.dir = workdir
        self.state_dir = workdir / "state"
        if config is not None:
            self.config_path = workdir / "earshot.toml"
            self.config_path.write_text(config)
            args = ("--config", str(self.config_path), *args)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(workdir / "notify.sock"))
        self.notify.settimeout(0.5)
        env = dict(os.environ, EARSHOT_STATE_DIR=str(self.state_dir),
                   NOTIFY_SOCKET=str(workdir / "notify.sock"), PYTHONUNBUFFERED="1")
        env.pop("EARSHOT_CONFIG", None)
        env.pop("PYTHONPATH", None)   # the firmware under test is the one `python` imports, nothing else
        self.log_path = workdir / "earshot.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([str(python), "-m", "firmware", "run", *args], cwd=cwd, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, text=True)

    def wait_notify(self, what: str, timeout: float = 60) -> str:
        """The next sd_notify datagram that carries `what` (e.g. READY=1)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.notify.recv(4096).decode()
            except TimeoutError:  # the short socket timeout lets us notice a process that died
                if self.proc.poll() is not None:
                    raise AssertionError(f"exited with {self.proc.returncode}:\n{self.log()}")
                continue
            if what in msg.split("\n"):
                return msg
        raise AssertionError(f"no {what} within {timeout}s:\n{self.log()}")

    def status(self) -> dict:
        return json.loads((self.state_dir / "status.json").read_text())

    @property
    def sip_port(self) -> int:
        return self.status()["sip_port"]

    @property
    def control_port(self) -> int:
        return self.status()["control_port"]

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def wait_log(self, text: str, timeout: float = 30) -> None:
        """Until `text` appears in the log (the appliance's own report of an event)."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged:\n{self.log()}")
            time.sleep(0.05)

    def secret(self, name: str) -> str:
        return (self.state_dir / f"{name}.secret").read_text().strip()

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()
        self._log.close()
        return self.proc.returncode, self.log_path.read_text()
