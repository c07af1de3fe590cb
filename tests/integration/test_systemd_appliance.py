"""The installed appliance under a real systemd 252 (PID 1 in systemd-nspawn): the service runs as
its own user `earshot`, provisioning runs as root, and systemd — not a test double — decides
whether the service may start again.

One boot: the service comes up on the embedded default; a good stick is applied and the service,
as user earshot, runs it (before: EACCES on /etc/earshot/sets, a crash loop, a rollback); then a
stick whose config validates but cannot start (its SIP address is not on this machine) makes the
service crash until systemd's start limit stops it ("Start request repeated too quickly"), and the
rollback must bring the previous config back up — before, only the reload path ran
`systemctl reset-failed`, so the rolled-back appliance stayed down.

It needs root, systemd-nspawn and a Debian mirror (debootstrap, once, cached); where it cannot
run it says why and skips."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.peers import nspawn

pytestmark = pytest.mark.slow

GOOD = """\
[sip]
listen = "127.0.0.1:5070"
[control]
listen = "127.0.0.1:8022"
password = "pw-control"
[[users]]
id = "1001"
password = "pw-1001"
"""
# validates (check-config: OK), but the service cannot bind it: a start that fails every time
CRASHING = GOOD.replace('listen = "127.0.0.1:5070"', 'listen = "192.0.2.1:5070"')

SCENARIO = textwrap.dedent("""\
    # Type=notify: returns once the service said READY=1 (it was started at boot)
    systemctl start earshot.service
    systemctl is-active earshot.service > /root/boot-active.txt
    export EARSHOT_RUNTIME_DIR=/run/earshot EARSHOT_STATE_DIR=/var/lib/earshot
    for stick in good crashing; do
        /opt/earshot/venv/bin/python -m firmware provision /root/$stick --timeout 30 > /root/$stick.out 2>&1
        echo $? > /root/$stick.rc
        cp /root/$stick/earshot-result.txt /root/$stick-result.txt
        ps -o user= -p "$(systemctl show -p MainPID --value earshot.service)" > /root/$stick-user.txt
    done
    systemctl is-active earshot.service > /root/final-active.txt
    cp /run/earshot/status.json /root/status.json
    stat -c '%a %U:%G %n' /etc/earshot /etc/earshot/sets /etc/earshot/sets/* > /root/modes.txt
    journalctl -u earshot.service --no-pager > /root/journal.txt
    """)


@pytest.fixture(scope="module")
def booted(staged_install: Path, tmp_path_factory: pytest.TempPathFactory) -> nspawn.Machine:
    why = nspawn.unavailable()
    if why:
        pytest.skip(f"no real systemd here: {why}")
    try:
        nspawn.base_root()
    except RuntimeError as exc:
        pytest.skip(f"no Debian root for systemd-nspawn: {exc}")
    m = nspawn.Machine(tmp_path_factory.mktemp("systemd"), staged_install)
    for name, text in (("good", GOOD), ("crashing", CRASHING)):
        m.write(f"/root/{name}/earshot.toml", text)
    m.boot(SCENARIO, "earshot.service")
    return m


def read(m: nspawn.Machine, name: str) -> str:
    return m.path(f"/root/{name}").read_text()


def test_the_service_runs_a_provisioned_config_as_its_own_user(booted: nspawn.Machine) -> None:
    m = booted
    assert read(m, "boot-active.txt").strip() == "active", read(m, "journal.txt")
    assert read(m, "good.rc").strip() == "0", read(m, "good.out") + read(m, "journal.txt")
    assert read(m, "good-result.txt").startswith("earshot provisioning: applied")
    assert read(m, "good-user.txt").strip() == "earshot"
    modes = read(m, "modes.txt")
    assert "755 root:earshot /etc/earshot\n" in modes and "750 root:earshot /etc/earshot/sets\n" in modes, modes
    assert "PermissionError" not in read(m, "journal.txt")


def test_a_rollback_after_the_start_limit_brings_the_service_back(booted: nspawn.Machine) -> None:
    m = booted
    journal = read(m, "journal.txt")
    assert "Start request repeated too quickly" in journal, journal     # the start limit was hit
    assert read(m, "crashing.rc").strip() == "2", read(m, "crashing.out")
    result = read(m, "crashing-result.txt")
    assert result.startswith("earshot provisioning: rolled back") and "previous config running again" in result, \
        result
    assert read(m, "final-active.txt").strip() == "active", journal
    status = json.loads(read(m, "status.json"))
    good_sha = nspawn.hashlib.sha256(GOOD.encode()).hexdigest()
    assert (status["state"], status["config_sha256"]) == ("ready", good_sha)
    assert read(m, "crashing-user.txt").strip() == "earshot"
