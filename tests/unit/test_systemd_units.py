"""The systemd units, udev rule and tmpfiles: `systemd-analyze verify` silent (it exits 0 on most
mistakes, so any output fails), a hardening score that may not regress, and the keys that matter."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
VENV_PYTHON = "/opt/earshot/venv/bin/python"
# Exposure measured with systemd 252 (Debian 12); a change may lower these, not raise them by more
# than 0.3 (bump them on purpose, with a reason, if a device really needs a looser sandbox).
SECURITY_BUDGET = {"earshot.service": 2.1 + 0.3, "earshot-provision@.service": 7.1 + 0.3}


def analyze() -> str:
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze is missing: install systemd (it ships with it on Debian)"
    return exe


def checkable_copy(tmp: Path, name: str, text: str | None = None) -> Path:
    """The unit as verify can check it here: ExecStart at an existing python, templates instantiated."""
    text = (UNITS / name).read_text() if text is None else text
    out = tmp / name.replace("@.", "@sda1.")
    out.write_text(text.replace(VENV_PYTHON, sys.executable))
    return out


def verify(unit: Path) -> str:
    r = subprocess.run([analyze(), "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       cwd=unit.parent, timeout=60)
    return (r.stdout + r.stderr).strip() + (f"\n(exit {r.returncode})" if r.returncode else "")


def entries(name: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; systemd allows repeated keys, so not a dict."""
    out, section = [], ""
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def values(name: str, key: str) -> list[str]:
    return [v for _, k, v in entries(name) if k == key]


@pytest.mark.parametrize("name", ["earshot.service", "earshot-provision@.service"])
def test_unit_verifies_without_any_output(tmp_path, name):
    # the unknown "earshot" user is not reported by verify (it is created at install time)
    assert verify(checkable_copy(tmp_path, name)) == ""


@pytest.mark.parametrize("mistake", [
    ("WatchdogSec=15s", "WatchdogSecs=15s"),  # misspelt key
    ("Type=notify", "Type=notfy"),  # bad value
    ("RestartSec=2s", "RestartSec=2s  # a trailing comment is part of the value"),
])
def test_the_checker_fails_on_a_misspelt_unit(tmp_path, mistake):
    good, bad = mistake
    text = (UNITS / "earshot.service").read_text()
    assert good in text
    assert verify(checkable_copy(tmp_path, "earshot.service", text.replace(good, bad))) != ""


@pytest.mark.parametrize("name", sorted(SECURITY_BUDGET))
def test_hardening_score_does_not_regress(tmp_path, name):
    unit = checkable_copy(tmp_path, name)
    r = subprocess.run([analyze(), "security", "--offline=true", "--no-pager", str(unit)], capture_output=True,
                       text=True, cwd=tmp_path, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= SECURITY_BUDGET[name], r.stdout


def test_service_unit_has_the_appliance_contract():
    n = "earshot.service"
    one = {k: v for _, k, v in entries(n)}
    assert one["Type"] == "notify" and one["WatchdogSec"] and one["Restart"] == "on-failure"
    assert one["StartLimitIntervalSec"] and one["StartLimitBurst"]
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["RestartPreventExitStatus"] == "78"  # the app's EX_CONFIG on a broken config
    assert one["ExecStart"] == f"{VENV_PYTHON} -m firmware run"
    assert one["User"] == "earshot"
    for d in ("StateDirectory", "RuntimeDirectory", "ConfigurationDirectory"):
        assert one[d] == "earshot"
    # the devices stay reachable: these would hide /dev/snd, /dev/gpiochip*, /dev/hidraw*
    keys = {k for _, k, _ in entries(n)}
    assert not keys & {"PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock", "PrivateUsers",
                       "RestrictRealtime", "ProcSubset"}
    assert {"audio", "gpio", "input"} <= set(one["SupplementaryGroups"].split())


def test_provision_unit_matches_the_service_and_the_rule():
    n = "earshot-provision@.service"
    one = {k: v for _, k, v in entries(n)}
    assert one["Type"] == "oneshot" and one["PrivateMounts"] == "yes" and one["TimeoutStartSec"]
    assert one["BindsTo"] == "dev-%i.device" and "dev-%i.device" in values(n, "After")
    assert one["ExecStart"] == f"{VENV_PYTHON} -m firmware provision /dev/%I"
    assert "RuntimeDirectory" not in one  # it would delete the service's /run/earshot when this unit stops
    env = dict(v.split("=", 1) for v in values(n, "Environment"))
    assert env["EARSHOT_RUNTIME_DIR"] == "/run/" + values("earshot.service", "RuntimeDirectory")[0]
    assert env["EARSHOT_STATE_DIR"] == "/var/lib/" + values("earshot.service", "StateDirectory")[0]
    assert one["ConfigurationDirectory"] == values("earshot.service", "ConfigurationDirectory")[0]
    # the provisioning timeout covers two bounded 30 s waits (new config, then the rollback)
    assert int(one["TimeoutStartSec"].rstrip("s")) >= 90


def test_udev_rule_starts_the_template_for_usb_filesystems():
    lines = [ln for ln in (UNITS / "90-earshot-provision.rules").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(lines) == 1 and not lines[0].rstrip().endswith("\\")
    pairs = re.findall(r'([A-Z_]+(?:\{[A-Z_]+\})?)\s*(==|!=|\+=|=)\s*"([^"]*)"', lines[0])
    # every token parsed: nothing left over that udev would choke on
    assert re.sub(r'([A-Z_]+(?:\{[A-Z_]+\})?)\s*(==|!=|\+=|=)\s*"([^"]*)"', "", lines[0]).strip(" ,") == ""
    assert set(pairs) == {("ACTION", "==", "add"), ("SUBSYSTEM", "==", "block"), ("ENV{ID_BUS}", "==", "usb"),
                          ("ENV{ID_FS_USAGE}", "==", "filesystem"), ("TAG", "+=", "systemd"),
                          ("ENV{SYSTEMD_WANTS}", "+=", "earshot-provision@%k.service")}
    assert (UNITS / "earshot-provision@.service").is_file()


def test_tmpfiles_create_the_directories(tmp_path):
    """Applied for real to a scratch root that knows the earshot user."""
    tool = shutil.which("systemd-tmpfiles")
    assert tool, "systemd-tmpfiles is missing"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("earshot:x:990:990::/nonexistent:/usr/sbin/nologin\n")
    (tmp_path / "etc" / "group").write_text("earshot:x:990:\n")
    r = subprocess.run([tool, "--create", f"--root={tmp_path}", str(UNITS / "earshot.tmpfiles")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    for path, mode, uid, gid in (("run/earshot", 0o755, 990, 990), ("var/lib/earshot", 0o750, 990, 990),
                                 ("etc/earshot", 0o755, 0, 990)):
        st = (tmp_path / path).stat()
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (mode, uid, gid), path
