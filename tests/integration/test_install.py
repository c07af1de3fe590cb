"""`./build.sh install --root DIR` lays out exactly what a Pi gets: a venv under /opt/earshot, on
the interpreter the target runs (Debian's /usr/bin/python3), that runs the firmware with its compiled
media core and its package data; the units, the udev rules, tmpfiles and sysusers. (The real install
also runs systemctl; the files it enables are the ones checked here.) The installed firmware is run
from outside the checkout, and a real phone registered to it hears 9197."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.peers import PeerGroup
from tests.peers.appliance import Appliance, loopback_config
from tests.peers.audio import has_tone, read_wav
from tests.peers.baresip import Account, Baresip

ROOT = Path(__file__).resolve().parents[2]
TARGET_PY = Path("/usr/bin/python3")


def install(root: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "build.sh"), "install", "--root", str(root)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, **env))


@pytest.fixture
def staged(staged_install: Path) -> Path:
    return staged_install


def test_install_into_a_staging_root(staged: Path, tmp_path: Path) -> None:
    root = staged
    for rel in ("etc/systemd/system/earshot.service", "etc/systemd/system/earshot-provision@.service",
                "etc/udev/rules.d/90-earshot-provision.rules", "etc/udev/rules.d/91-earshot-hidraw.rules",
                "usr/lib/tmpfiles.d/earshot.conf", "usr/lib/sysusers.d/earshot.conf", "opt/earshot/README.md",
                "opt/earshot/docs/provisioning.md", "opt/earshot/docs/architecture.md"):
        assert (root / rel).is_file(), rel
    python = root / "opt/earshot/venv/bin/python"
    # the installed firmware runs from the venv's site-packages (not from this checkout)
    probe = subprocess.run([str(python), "-c", "import cython_mixer.g711 as g, firmware.app as a; "
                            "print(g.__file__); print(a.__file__); print(g.ulaw_encode(b'\\xff\\xff').hex())"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.split()
    assert all("/opt/earshot/venv/" in p for p in lines[:2]) and lines[2] == "7f"
    cfg = tmp_path / "earshot.toml"
    cfg.write_text('[sip]\nlisten = "0.0.0.0:5060"\n')
    check = subprocess.run([str(python), "-m", "firmware", "check-config", str(cfg)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "OK" in check.stdout, check.stderr
    # the service user and its device groups resolve on a system that has none of them yet
    (tmp_path / "sys" / "etc").mkdir(parents=True)
    users = subprocess.run(["systemd-sysusers", f"--root={tmp_path / 'sys'}", "--dry-run",
                            str(root / "usr/lib/sysusers.d/earshot.conf")], capture_output=True, text=True, timeout=60)
    assert users.returncode == 0, users.stderr
    assert "Creating user 'earshot'" in users.stdout + users.stderr
    assert "Creating group 'gpio'" in users.stdout + users.stderr


def test_the_staged_venv_runs_the_targets_interpreter(staged: Path) -> None:
    cfg = (staged / "opt/earshot/venv/pyvenv.cfg").read_text()
    assert f"home = {TARGET_PY.parent}" in cfg.splitlines(), cfg
    probe = subprocess.run([str(staged / "opt/earshot/venv/bin/python"), "-c",
                            "import sys; print(sys._base_executable)"], capture_output=True, text=True, timeout=60)
    assert Path(probe.stdout.strip()).resolve() == TARGET_PY.resolve()


def test_install_refuses_a_target_interpreter_it_cannot_run(tmp_path: Path) -> None:
    r = install(tmp_path / "root", EARSHOT_TARGET_PYTHON=str(tmp_path / "no-python3"))
    assert r.returncode != 0
    assert f"the appliance runs {tmp_path / 'no-python3'}" in r.stderr and "EARSHOT_TARGET_PYTHON" in r.stderr
    assert not (tmp_path / "root" / "opt").exists()     # nothing half staged


@pytest.mark.peers
def test_the_installed_firmware_serves_a_real_phone_from_outside_the_checkout(staged: Path, tmp_path: Path) -> None:
    """What the service runs: the staged venv's python, in another directory, on a config file.
    Its built-in dialplan comes from the wheel's package data; 9197 is the dialplan's tone."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    app = Appliance(tmp_path, config=loopback_config("1001", rtp_pairs=10),
                    python=staged / "opt/earshot/venv/bin/python", cwd=outside)
    peers = PeerGroup(tmp_path)
    try:
        app.wait_notify("READY=1")
        reg = f"127.0.0.1:{app.sip_port}"
        phone = peers.add(Baresip(tmp_path, "a", Account("1001", registrar=reg, password="pw-1001"), source=440))
        phone.start()
        phone.wait_registered(10)
        phone.dial(f"sip:9197@{reg}")
        phone.await_event("CALL_ESTABLISHED", 10)
        time.sleep(2)                        # two seconds of audio to analyse, not synchronisation
        phone.hangup()
        phone.await_event("CALL_CLOSED", 10)
        rate, pcm = read_wav(phone.recordings()[-1].heard)
        assert has_tone(pcm, rate, 1000) and not has_tone(pcm, rate, 440)
    finally:
        peers.close()
        rc, log = app.stop()
    assert rc == 0, log
    assert "Traceback" not in log
