"""`./build.sh install --root DIR` lays out exactly what a Pi gets: a venv under /opt/earshot that
runs the firmware with its compiled media core, the units, the udev rules, tmpfiles and sysusers.
(The real install also runs systemctl; the files it enables are the ones checked here.)"""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_install_into_a_staging_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    r = subprocess.run([str(ROOT / "build.sh"), "install", "--root", str(root)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"installed under {root}" in r.stderr
    for rel in ("etc/systemd/system/earshot.service", "etc/systemd/system/earshot-provision@.service",
                "etc/udev/rules.d/90-earshot-provision.rules", "etc/udev/rules.d/91-earshot-hidraw.rules",
                "usr/lib/tmpfiles.d/earshot.conf", "usr/lib/sysusers.d/earshot.conf", "opt/earshot/README.md"):
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
