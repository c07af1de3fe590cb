"""A real systemd (Debian 12's, as PID 1 under ``systemd-nspawn``) booting a root that holds the
installed appliance, for tests of what only systemd decides: users, groups and directories from
the units, Type=notify readiness, Restart= and the start limit.

The Debian root is made once with debootstrap and kept in ``CACHE`` (keyed by its package list);
each boot gets its own copy. A test puts a scenario script in the root, the scenario unit runs it
once the system is up and powers the machine off; the test then reads what it wrote in /root.
``unavailable()`` says why it cannot run here (not root, no nspawn, no Debian mirror).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

SUITE = "bookworm"
# the media core's runtime libraries and procps (the unit's ExecReload=/bin/kill)
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "procps", "libspandsp2", "libsoxr0")
CACHE = Path(os.environ.get("EARSHOT_NSPAWN_CACHE", "/var/tmp/earshot-nspawn"))
SCENARIO_UNIT = """[Unit]
Description=test scenario
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c '/root/scenario.sh > /root/scenario.log 2>&1; echo $? > /root/scenario.rc; sync; systemctl poweroff'

[Install]
WantedBy=multi-user.target
"""


def mirror() -> str:
    """The machine's Debian mirror (deb822 sources; /etc/apt/sources.list may not exist)."""
    for f in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in f.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    return "http://deb.debian.org/debian"


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "a systemd under systemd-nspawn needs root"
    for tool in ("systemd-nspawn", "debootstrap"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is missing (apt-get install systemd-container debootstrap; ./build.sh test does)"
    return None


def base_root() -> Path:
    """The cached Debian root, made on first use (≈ 50 s, ≈ 300 MB)."""
    key = hashlib.sha256(f"{SUITE} {' '.join(PACKAGES)}".encode()).hexdigest()[:12]
    root = CACHE / f"{SUITE}-{key}"
    if (root / "usr/bin/python3").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f".making-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    r = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                        str(work), mirror()], capture_output=True, text=True, timeout=900,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise RuntimeError(f"debootstrap failed ({r.returncode}): {(r.stdout + r.stderr)[-2000:]}")
    os.rename(work, root)
    return root


class Machine:
    """One boot of a copy of the base root with ``overlay`` (the installed tree) copied on top."""

    def __init__(self, workdir: Path, overlay: Path) -> None:
        self.root = workdir / "machine"
        subprocess.run(["cp", "-a", "--reflink=auto", f"{base_root()}/.", str(self.root)], check=True,
                       timeout=300)
        subprocess.run(["cp", "-a", f"{overlay}/.", str(self.root)], check=True, timeout=300)
        self.console = workdir / "console.log"

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def write(self, inside: str, text: str, mode: int = 0o644) -> None:
        p = self.path(inside)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)

    def boot(self, scenario: str, *units: str, timeout: float = 300) -> str:
        """Enable ``units``, run ``scenario`` (a shell script) once the system is up, power off.
        Returns the scenario's output; raises when the machine does not power off in time."""
        self.write("/root/scenario.sh", "#!/bin/sh\nset -x\n" + scenario, 0o755)
        self.write("/etc/systemd/system/scenario.service", SCENARIO_UNIT)
        subprocess.run(["chroot", str(self.root), "systemctl", "enable", "scenario.service", *units],
                       check=True, capture_output=True, timeout=60)
        with open(self.console, "w") as out:
            r = subprocess.run(["systemd-nspawn", "-D", str(self.root), "-b", "--register=no", "--keep-unit",
                                "--pipe", "--private-network"], stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, timeout=timeout)
        log = self.path("/root/scenario.log")
        if r.returncode != 0 or not self.path("/root/scenario.rc").exists():
            raise AssertionError(f"the machine did not run the scenario (nspawn {r.returncode}):\n"
                                 f"{self.console.read_text()[-4000:]}\n{log.read_text() if log.exists() else ''}")
        return log.read_text()
