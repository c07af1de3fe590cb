"""Provisioning as it runs on the appliance: `provision` as root writes the config, the *installed*
firmware reads it as an unprivileged user (here `nobody` in group `nogroup`, standing in for the
service's `earshot` user and group). A test as root alone would pass where the appliance fails:
before, provisioning made /etc/earshot/sets root:root 0750, the service died on its first
provisioned config with an uncaught PermissionError (exit 1, a restart loop) and provisioning
rolled back after 30 s.

Needs root (to provision as root and to drop to another user); elsewhere it says so and skips."""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from firmware import provision

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: provisions as root and runs "
                                "the installed service as the unprivileged user nobody")

SERVICE_USER, SERVICE_GROUP = "nobody", "nogroup"


class Service:
    """The installed firmware run the way earshot.service runs it: its own user and group, the
    config found through CONFIGURATION_DIRECTORY, state and runtime directories it owns."""

    def __init__(self, staged: Path, base: Path) -> None:
        self.python = staged / "opt/earshot/venv/bin/python"
        self.base = base
        self.conf = base / "etc" / "earshot"
        self.run_dir = base / "run"
        self.state = base / "state"
        uid, gid = pwd.getpwnam(SERVICE_USER).pw_uid, grp.getgrnam(SERVICE_GROUP).gr_gid
        self.ids = (uid, gid)
        for d in (self.run_dir, self.state):
            d.mkdir(mode=0o755)
            os.chown(d, uid, gid)
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        uid, gid = self.ids
        env = {"PATH": "/usr/bin:/bin", "CONFIGURATION_DIRECTORY": str(self.conf),
               "EARSHOT_STATE_DIR": str(self.state), "EARSHOT_RUNTIME_DIR": str(self.run_dir),
               "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(self.state)}
        self.log = self.base / f"service-{self.runs}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                                          str(self.python), "-m", "firmware", "run"],
                                         cwd=self.run_dir, env=env, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def restart(self) -> None:          # what systemd does for `systemctl restart`
        self.stop()
        self.start()

    def reload(self) -> None:
        provision.sighup_from_status(self.run_dir)

    def output(self) -> str:
        return self.log.read_text()

    def wait_ready(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = provision.read_status(self.run_dir) or {}
            if st.get("state") == "ready" and self.proc is not None and st.get("pid") == self.proc.pid:
                return st
            assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{self.output()}"
            time.sleep(0.05)
        raise AssertionError(f"not ready:\n{self.output()}")


@pytest.fixture
def service(staged_install: Path):
    base = Path(tempfile.mkdtemp(prefix="earshot-svc-"))
    base.chmod(0o755)
    (base / "etc").mkdir(mode=0o755)
    svc = Service(staged_install, base)
    try:
        yield svc
    finally:
        svc.stop()
        shutil.rmtree(base, ignore_errors=True)


def stick(base: Path) -> Path:
    d = base / "stick"
    d.mkdir()
    (d / "earshot.toml").write_text(textwrap.dedent("""\
        [sip]
        listen = "127.0.0.1:0"
        [control]
        listen = "127.0.0.1:0"
        password = "pw-control"
        [[users]]
        id = "1001"
        password = "pw-1001"
        [dialplan]
        file = "dialplan.xml"
        """))
    (d / "dialplan.xml").write_text('<include><context name="default"><extension name="echo">'
                                    '<condition field="destination_number" expression="^9196$">'
                                    '<action application="echo"/></condition></extension></context></include>\n')
    return d


def test_the_service_user_runs_what_provisioning_wrote(service: Service) -> None:
    service.start()
    assert service.wait_ready()["config"] == "<embedded default>"    # no config yet: /etc/earshot empty
    s = stick(service.base)
    rc = provision.main(str(s), config_dir=service.conf, runtime_dir=service.run_dir, group=SERVICE_GROUP,
                        reload=service.reload, restart=service.restart, timeout=30)
    result = (s / "earshot-result.txt").read_text()
    assert rc == 0 and result.startswith("earshot provisioning: applied"), result + service.output()
    st = service.wait_ready()
    assert st["config"] == str(service.conf / "earshot.toml")
    assert st["config_sha256"] == provision.ConfigSet({"earshot.toml": (s / "earshot.toml").read_bytes()}).sha256
    # and it stays readable for the next boot: a fresh start of the service reads it again
    service.restart()
    assert service.wait_ready()["config_sha256"] == st["config_sha256"]
    assert "Traceback" not in service.output()


def test_a_config_the_service_cannot_read_is_one_line_and_exit_78(service: Service) -> None:
    s = stick(service.base)
    service.conf.mkdir(mode=0o755)
    provision.install(service.conf, provision.read_stick(s), gid=grp.getgrnam(SERVICE_GROUP).gr_gid)
    (service.conf / "sets").chmod(0o700)           # what the old provisioning left behind
    service.start()
    assert service.proc.wait(timeout=60) == 78      # EX_CONFIG: the unit does not restart-loop on it
    out = service.output()
    assert "Traceback" not in out
    assert (f"config rejected: {service.conf / 'earshot.toml'}: cannot read: Permission denied "
            f"(this process runs as user {SERVICE_USER}, group {SERVICE_GROUP}") in out, out
