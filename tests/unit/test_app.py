"""`python -m firmware run`: starts on the embedded default, tells systemd it is ready, stops cleanly."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.peers.appliance import Appliance

ROOT = Path(__file__).resolve().parents[2]


def Running(tmp_path: Path, *args: str) -> Appliance:
    return Appliance(tmp_path, *args)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_on_embedded_default_is_ready_then_stops_cleanly(tmp_path, sig):
    app = Running(tmp_path)
    assert "STATUS=serving" in app.wait_notify("READY=1")
    rc, out = app.stop(sig)
    assert rc == 0, out
    assert "config: <embedded default>" in out and "ready" in out and "stopped" in out
    assert "Traceback" not in out
    # the demo passwords exist on disk but never reach the log
    for secret in (tmp_path / "state").glob("*.secret"):
        assert secret.read_text().strip() not in out


def test_reload_rejects_a_broken_file_and_keeps_running(tmp_path):
    cfg = tmp_path / "earshot.toml"
    cfg.write_text('[sip]\nlisten = "127.0.0.1:0"\n[control]\nlisten = "127.0.0.1:0"\npassword = "pw"\n')
    app = Running(tmp_path, "--config", str(cfg))
    app.wait_notify("READY=1")
    cfg.write_text('[sip]\nlisten = "127.0.0.1:0"\nbogus = 1\n')
    app.proc.send_signal(signal.SIGHUP)
    # the process must still be alive and answer SIGTERM normally after a rejected reload
    rc, out = app.stop()
    assert rc == 0, out
    assert f"reload rejected: {cfg}:3: sip.bogus: unknown key" in out


def test_broken_config_at_start_exits_with_ex_config(tmp_path):
    cfg = tmp_path / "earshot.toml"
    cfg.write_text('[sip]\nlisten = 5060\n')
    r = subprocess.run([sys.executable, "-m", "firmware", "run", "--config", str(cfg)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, EARSHOT_STATE_DIR=str(tmp_path / "s")))
    assert r.returncode == 78
    assert f"{cfg}:2: sip.listen: must be a string (got 5060)" in r.stderr


def test_good_reload_publishes_the_new_config_in_the_status_file(tmp_path):
    import json
    from firmware.config import file_sha256
    cfg = tmp_path / "earshot.toml"
    cfg.write_text('[sip]\nlisten = "127.0.0.1:0"\n[control]\nlisten = "127.0.0.1:0"\npassword = "pw"\n')
    app = Running(tmp_path, "--config", str(cfg))
    app.wait_notify("READY=1")
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["state"] == "ready" and status["config_sha256"] == file_sha256(cfg)
    assert status["pid"] == app.proc.pid
    cfg.write_text('[sip]\nlisten = "127.0.0.1:0"\ndomain = "changed.example"\n[control]\nlisten = "127.0.0.1:0"\npassword = "pw"\n')
    app.proc.send_signal(signal.SIGHUP)
    app.wait_notify("RELOADING=1")
    app.wait_notify("READY=1")
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["state"] == "ready" and status["config_sha256"] == file_sha256(cfg)
    rc, out = app.stop()
    assert rc == 0 and "reload: applied" in out


def test_port_in_use_is_a_clear_error_not_a_traceback(tmp_path):
    import socket as s
    busy = s.socket(s.AF_INET, s.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    cfg = tmp_path / "earshot.toml"
    cfg.write_text(f'[sip]\nlisten = "127.0.0.1:{port}"\n[control]\nlisten = "127.0.0.1:0"\npassword = "pw"\n')
    try:
        r = subprocess.run([sys.executable, "-m", "firmware", "run", "--config", str(cfg)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, EARSHOT_STATE_DIR=str(tmp_path / "s")))
    finally:
        busy.close()
    assert r.returncode == 1
    assert f"cannot start the SIP: Address already in use (listen 127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_handset_device_is_named_and_the_rest_still_starts(tmp_path):
    cfg = tmp_path / "earshot.toml"
    cfg.write_text('[sip]\nlisten = "127.0.0.1:0"\n[control]\nlisten = "127.0.0.1:0"\npassword = "pw"\n'
                   '[handset]\ndevice = "No Such Card"\n')
    app = Running(tmp_path, "--config", str(cfg))
    app.wait_notify("READY=1")
    assert app.status()["sip_port"] > 0 and app.status()["control_port"] > 0
    rc, out = app.stop()
    assert rc == 0, out
    assert "[handset] device 'No Such Card': no such audio device" in out
    assert "running without a handset" in out and "handset: none" in out
