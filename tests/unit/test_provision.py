"""USB-stick provisioning against a real `python -m firmware run` child: applied, rejected, ignored,
rolled back; atomic writes; a provisioning process killed at every write step; a real loop device."""

from __future__ import annotations

import grp
import hashlib
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
import wave
from pathlib import Path

import pytest

from firmware import config as cfgmod
from firmware import provision

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Pw-SECRET-42"  # must never show up in a log, a result file or provision.json
DIALPLAN = b'<include>\n  <extension name="echo"><condition field="destination_number" expression="^9196$"/>' \
           b'</extension>\n</include>\n'


def toml(password: str = SECRET, *, domain: str = "earshot.local", extra: str = "") -> str:
    return textwrap.dedent(f"""\
        [sip]
        listen = "127.0.0.1:0"
        domain = "{domain}"
        [control]
        listen = "127.0.0.1:0"
        [[users]]
        id = "1001"
        password = "{password}"
        """) + extra


def wav_bytes(path: Path) -> bytes:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    return path.read_bytes()


def make_stick(d: Path, text: str, *, dialplan: bytes | None = DIALPLAN, sound: bool = True) -> Path:
    d.mkdir(parents=True)
    (d / "earshot.toml").write_text(text)
    if dialplan is not None:
        (d / "dialplan.xml").write_bytes(dialplan)
    if sound:
        (d / "sounds").mkdir()
        wav_bytes(d / "sounds" / "new.wav")
    return d


FULL = textwrap.dedent("""\
    [dialplan]
    file = "dialplan.xml"
    [eavesdrop]
    indicate_new = "sounds/new.wav"
    indicate_idle = "tone_stream://%(100,100,440)"
    """)


def tree(d: Path) -> dict[str, object]:
    """Every entry under d: symlink targets, file bytes, directories; for byte-for-byte comparisons."""
    out: dict[str, object] = {}
    for base, dirs, files in os.walk(d):
        for name in dirs + files:
            p = Path(base) / name
            rel = str(p.relative_to(d))
            if rel == ".provision.lock":  # the lock is no part of the config
                continue
            out[rel] = ("link", os.readlink(p)) if p.is_symlink() else \
                ("dir",) if p.is_dir() else ("file", p.read_bytes())
    return out


class App:
    """`python -m firmware run --config <config_dir>/earshot.toml` with state and runtime in tmp."""

    def __init__(self, tmp: Path, config_dir: Path) -> None:
        self.runtime = tmp / "run"
        env = dict(os.environ, EARSHOT_STATE_DIR=str(tmp / "state"), EARSHOT_RUNTIME_DIR=str(self.runtime))
        for k in ("EARSHOT_CONFIG", "NOTIFY_SOCKET", "CONFIGURATION_DIRECTORY"):
            env.pop(k, None)
        self.log = open(tmp / "app.log", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "firmware", "run", "--config",
                                      str(config_dir / "earshot.toml")], cwd=ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_status(lambda s: s.get("pid") == self.proc.pid and s.get("state") == "ready")

    def status(self) -> dict:
        return provision.read_status(self.runtime) or {}

    def wait_status(self, ok, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise AssertionError(f"app exited {self.proc.returncode}: {self.log.read()}")
            st = self.status()
            if ok(st):
                return st
            time.sleep(0.05)
        raise AssertionError(f"status never matched: {self.status()}")

    def reload(self) -> None:
        provision.sighup_from_status(self.runtime)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.seek(0)
        text = self.log.read()
        self.log.close()
        return text


@pytest.fixture
def env(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="earshot.provision")
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "earshot.toml").write_text(toml("Old-SECRET-7", domain="old.example"))  # hand-installed file
    return tmp_path, conf


@pytest.fixture
def app(env):
    tmp, conf = env
    a = App(tmp, conf)
    yield a
    assert "Traceback" not in a.stop()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def outputs(stick: Path, runtime: Path, caplog) -> str:
    parts = [caplog.text, (runtime / "provision.json").read_text() if (runtime / "provision.json").exists() else ""]
    if (stick / "earshot-result.txt").exists():
        parts.append((stick / "earshot-result.txt").read_text())
    return "\n".join(parts)


def test_led_pattern_for_every_outcome():
    assert set(provision.LED_PATTERNS) == set(provision.OUTCOMES)
    assert all(provision.LED_PATTERNS[o] for o in provision.OUTCOMES if o != "ignored")


def test_good_stick_is_applied_and_the_service_runs_it(env, app, caplog):
    tmp, conf = env
    old = (conf / "earshot.toml").read_bytes()
    stick = make_stick(tmp / "stick", toml(extra=FULL))
    rc = provision.main(str(stick), config_dir=conf, runtime_dir=app.runtime, reload=app.reload, timeout=30)
    assert rc == 0, caplog.text
    new = (stick / "earshot.toml").read_bytes()
    st = app.status()
    assert st["state"] == "ready" and st["config_sha256"] == sha(new) and st["pid"] == app.proc.pid
    # the set: earshot.toml and the files it names, next to each other; the old file is the rollback copy
    assert (conf / "earshot.toml").read_bytes() == new
    cfg = cfgmod.load(conf / "earshot.toml")
    assert cfg.resolve(cfg.dialplan.file).read_bytes() == DIALPLAN
    assert cfg.resolve(cfg.eavesdrop.indicate_new).read_bytes() == (stick / "sounds" / "new.wav").read_bytes()
    assert (conf / "earshot.toml.prev").read_bytes() == old
    assert oct((conf / "earshot.toml").stat().st_mode & 0o777) == "0o640"
    result = (stick / "earshot-result.txt").read_text()
    assert result.startswith("earshot provisioning: applied\n") and sha(new) in result
    report = json.loads((app.runtime / "provision.json").read_text())
    assert report["outcome"] == "applied" and report["led"] == "provision-applied"
    assert SECRET not in outputs(stick, app.runtime, caplog)

    # a second stick: the first set becomes the rollback copy and older sets are removed
    stick2 = make_stick(tmp / "stick2", toml(domain="two.example", extra=FULL))
    assert provision.main(str(stick2), config_dir=conf, runtime_dir=app.runtime, reload=app.reload) == 0
    assert (conf / "earshot.toml").read_bytes() == (stick2 / "earshot.toml").read_bytes()
    assert (conf / "earshot.toml.prev").read_bytes() == new
    assert len(list((conf / "sets").iterdir())) == 2
    assert app.status()["config_sha256"] == sha((stick2 / "earshot.toml").read_bytes())

    # the same stick again: nothing to change, the rollback copy is kept
    before = tree(conf)
    assert provision.main(str(stick2), config_dir=conf, runtime_dir=app.runtime, reload=app.reload) == 0
    assert tree(conf) == before
    assert "unchanged" in (stick2 / "earshot-result.txt").read_text()


def test_bad_stick_is_rejected_and_the_running_config_stays(env, app, caplog):
    tmp, conf = env
    before = tree(conf)
    status_before = (app.runtime / "status.json").read_bytes()
    stick = make_stick(tmp / "stick", toml().replace("[sip]\n", "[sip]\nbogus = 1\n", 1))
    rc = provision.main(str(stick), config_dir=conf, runtime_dir=app.runtime, reload=app.reload, timeout=5)
    assert rc == 1
    result = (stick / "earshot-result.txt").read_text()
    assert result.startswith("earshot provisioning: rejected\n")
    assert "earshot.toml:2: sip.bogus: unknown key" in result
    assert tree(conf) == before  # byte for byte, nothing added
    assert (app.runtime / "status.json").read_bytes() == status_before  # no reload was even asked for
    assert json.loads((app.runtime / "provision.json").read_text())["led"] == "provision-rejected"
    assert SECRET not in outputs(stick, app.runtime, caplog)


def _never_reload() -> None:
    raise AssertionError("a rejected stick must not reload the service")


@pytest.mark.parametrize("name, write, expect", [
    ("truncated", lambda d: (d / "earshot.toml").write_text(toml()[:-12]), "earshot.toml: not valid TOML: Unterminated string"),
    ("not utf-8", lambda d: (d / "earshot.toml").write_bytes(b'[sip]\ndomain = "\xff\xfe"\n'), "not UTF-8"),
    ("wrong type", lambda d: (d / "earshot.toml").write_text(toml(extra="[handset]\nrate = \"fast\"\n")),
     "earshot.toml:10: handset.rate: must be an integer"),
    ("secret of the wrong type", lambda d: (d / "earshot.toml").write_text(toml().replace(f'"{SECRET}"', "987654321")),
     "earshot.toml:8: users[0].password: must be a string"),
    ("duplicate user", lambda d: (d / "earshot.toml").write_text(toml() + '[[users]]\nid = "1001"\npassword = "x"\n'),
     "users[1].id: duplicate user '1001'"),
    ("port out of range", lambda d: (d / "earshot.toml").write_text(toml().replace("127.0.0.1:0\"\ndomain",
                                                                                   "127.0.0.1:70000\"\ndomain")),
     "earshot.toml:2: sip.listen: port out of range"),
    ("missing dialplan", lambda d: (d / "dialplan.xml").unlink(), "dialplan.file: file not found: dialplan.xml"),
    ("broken dialplan", lambda d: (d / "dialplan.xml").write_text("<include><x></include>"),
     "earshot.toml:10: dialplan.file: dialplan.xml: not well-formed XML at line 1"),
    ("missing sound", lambda d: (d / "sounds" / "new.wav").unlink(),
     "earshot.toml:12: eavesdrop.indicate_new: file not found: sounds/new.wav"),
    ("sound not a wav", lambda d: (d / "sounds" / "new.wav").write_bytes(b"ID3 mp3 really"),
     "eavesdrop.indicate_new: sounds/new.wav is not a WAV file"),
    ("path outside the stick", lambda d: (d / "earshot.toml").write_text(
        toml(extra=FULL.replace("sounds/new.wav", "../new.wav"))), "must be a path inside the stick"),
    ("symlink out of the stick", lambda d: ((d / "sounds" / "new.wav").unlink(),
                                            (d / "sounds" / "new.wav").symlink_to("/etc/passwd")),
     "sounds/new.wav leads outside the stick"),
    ("100 MB", lambda d: os.truncate(d / "dialplan.xml", 100 << 20), "dialplan.xml is too large (104857600 bytes"),
    ("100 MB config", lambda d: os.truncate(d / "earshot.toml", 100 << 20), "earshot.toml: earshot.toml is too large"),
])
def test_each_class_of_bad_stick_is_rejected_whole(env, caplog, name, write, expect):
    tmp, conf = env
    stick = make_stick(tmp / "stick", toml(extra=FULL))
    write(stick)
    before = tree(conf)
    rc = provision.main(str(stick), config_dir=conf, runtime_dir=tmp / "run", reload=_never_reload, timeout=1)
    result = (stick / "earshot-result.txt").read_text()
    assert rc == 1 and result.startswith("earshot provisioning: rejected"), result
    assert expect in result, result
    assert tree(conf) == before
    out = outputs(stick, tmp / "run", caplog)
    assert SECRET not in out and "987654321" not in out


def test_stick_without_config_is_ignored_politely(env, caplog):
    tmp, conf = env
    stick = tmp / "holiday-photos"
    stick.mkdir()
    (stick / "IMG_0001.JPG").write_bytes(b"\xff\xd8")
    before = tree(conf)
    assert provision.main(str(stick), config_dir=conf, runtime_dir=tmp / "run", reload=_never_reload) == 0
    assert f"no earshot.toml on {stick}: nothing to do" in caplog.text
    assert sorted(p.name for p in stick.iterdir()) == ["IMG_0001.JPG"]  # a foreign stick is not written to
    assert tree(conf) == before
    assert json.loads((tmp / "run" / "provision.json").read_text())["outcome"] == "ignored"


def test_config_that_never_becomes_ready_is_rolled_back(env, app, caplog):
    tmp, conf = env
    old = (conf / "earshot.toml").read_bytes()
    old_status = app.status()
    stick = make_stick(tmp / "stick", toml(domain="new.example", extra=FULL))
    # validates, but the service never takes it up (a reload hook that does nothing)
    rc = provision.main(str(stick), config_dir=conf, runtime_dir=app.runtime, reload=lambda: None, timeout=1)
    assert rc == 2
    assert (conf / "earshot.toml").read_bytes() == old and not (conf / "earshot.toml").is_symlink()
    assert list((conf / "sets").iterdir()) == []  # the failed set is gone
    assert app.status()["config_sha256"] == old_status["config_sha256"] == sha(old)
    result = (stick / "earshot-result.txt").read_text()
    assert result.startswith("earshot provisioning: rolled back\n") and "not ready within 1 s" in result
    assert "previous config running again" in result
    assert json.loads((app.runtime / "provision.json").read_text())["led"] == "provision-rolled-back"

    # from a provisioned set back to a provisioned set: the rollback keeps the whole set (dialplan too)
    good = make_stick(tmp / "good", toml(extra=FULL))
    assert provision.main(str(good), config_dir=conf, runtime_dir=app.runtime, reload=app.reload) == 0
    applied = tree(conf)
    assert provision.main(str(stick), config_dir=conf, runtime_dir=app.runtime, reload=lambda: None, timeout=1) == 2
    assert tree(conf) == applied
    cfg = cfgmod.load(conf / "earshot.toml")
    assert cfg.sip.domain == "earshot.local" and cfg.resolve(cfg.dialplan.file).read_bytes() == DIALPLAN
    assert SECRET not in outputs(stick, app.runtime, caplog)


def test_a_service_that_is_not_running_means_rolled_back(env, caplog):
    tmp, conf = env
    old = (conf / "earshot.toml").read_bytes()
    stick = make_stick(tmp / "stick", toml(extra=FULL))
    rc = provision.main(str(stick), config_dir=conf, runtime_dir=tmp / "run",
                        reload=lambda: provision.sighup_from_status(tmp / "run"), timeout=1)
    assert rc == 2 and (conf / "earshot.toml").read_bytes() == old
    assert "no running service" in (stick / "earshot-result.txt").read_text()


@pytest.mark.parametrize("crash_after, survivor", [("written", "old"), ("renamed", "new"), ("dir-synced", "new")])
def test_write_atomic_crash_between_steps(tmp_path, crash_after, survivor):
    target = tmp_path / "earshot.toml"
    target.write_bytes(b"old\n")

    def hook(step: str) -> None:
        if step == crash_after:
            raise KeyboardInterrupt(step)  # anything, even a BaseException, between two steps

    with pytest.raises(KeyboardInterrupt):
        provision.write_atomic(target, b"new\n" * 1000, hook=hook)
    assert target.read_bytes() == (b"old\n" if survivor == "old" else b"new\n" * 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earshot.toml"]  # no temp file left behind


def test_write_atomic_without_a_previous_file_never_leaves_an_empty_one(tmp_path):
    def hook(step: str) -> None:
        raise RuntimeError(step)

    with pytest.raises(RuntimeError, match="written"):
        provision.write_atomic(tmp_path / "x.json", b"{}", hook=hook)
    assert list(tmp_path.iterdir()) == []


def run_killed_at(n: int, stick: Path, conf: Path, runtime: Path) -> int:
    """Provision in a forked child that dies (os._exit: no cleanup, like SIGKILL) at the n-th step.
    The service never takes the new set up, so a run goes all the way: install, wait, roll back."""
    pid = os.fork()
    if pid == 0:
        try:
            seen = []

            def hook(step: str) -> None:
                seen.append(step)
                if len(seen) == n:
                    os._exit(9)

            provision.main(str(stick), config_dir=conf, runtime_dir=runtime, reload=lambda: None,
                           timeout=0.05, hook=hook)
        finally:
            os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_killed_at_every_step_leaves_the_old_or_the_new_set_complete(tmp_path):
    conf0 = tmp_path / "conf0"
    conf0.mkdir()
    a = make_stick(tmp_path / "a", toml(domain="a.example", extra=FULL), dialplan=DIALPLAN)
    b = make_stick(tmp_path / "b", toml(domain="b.example", extra=FULL), dialplan=DIALPLAN.replace(b"9196", b"9197"))
    provision.install(conf0, provision.read_stick(a))
    provision.install(conf0, provision.read_stick(a))  # so there is a rollback copy to keep, too
    steps: list[str] = []
    probe = tmp_path / "probe"
    shutil.copytree(conf0, probe, symlinks=True)
    assert provision.main(str(b), config_dir=probe, runtime_dir=tmp_path / "run", reload=lambda: None,
                          timeout=0.05, hook=steps.append) == 2
    assert tree(probe) == tree(conf0)
    assert {"commit:renamed", "prev:renamed", "undo-earshot.toml:renamed"} <= set(steps)
    outcomes = []
    for n in range(1, len(steps) + 1):
        conf = tmp_path / f"conf{n}"
        shutil.copytree(conf0, conf, symlinks=True)
        assert run_killed_at(n, b, conf, tmp_path / "run") == 9
        cfg = cfgmod.load(conf / "earshot.toml")  # never missing, never empty, never a mix:
        which = a if cfg.sip.domain == "a.example" else b
        assert (conf / "earshot.toml").read_bytes() == (which / "earshot.toml").read_bytes()
        assert cfg.resolve(cfg.dialplan.file).read_bytes() == (which / "dialplan.xml").read_bytes()
        assert cfgmod.load(conf / "earshot.toml.prev").sip.domain == "a.example"
        outcomes.append(which.name)
        # the next run cleans up what the killed one left, and rolls back to what was running
        running = tree(conf)["earshot.toml"]
        provision.main(str(b), config_dir=conf, runtime_dir=tmp_path / "run", reload=lambda: None, timeout=0.05)
        assert tree(conf)["earshot.toml"] == running
        assert [n for n in os.listdir(conf) if n.startswith(".")] == [".provision.lock"]  # no undo, no temp
        linked = {os.readlink(conf / e).split("/")[1] for e in ("earshot.toml", "earshot.toml.prev")}
        assert {d.name for d in (conf / "sets").iterdir()} == linked  # no staging dir, no orphan set
    # exactly one rename switches to the new set, and exactly one switches back
    first_b, last_b = outcomes.index("b"), len(outcomes) - 1 - outcomes[::-1].index("b")
    assert steps[first_b] == "commit:renamed" and steps[last_b + 1] == "undo-earshot.toml:renamed"
    assert outcomes[first_b:last_b + 1] == ["b"] * (last_b - first_b + 1)


def test_unwritable_config_directory_changes_nothing(env, caplog):
    tmp, conf = env
    (conf / "sets").write_text("in the way\n")  # mkdir sets/ fails like a full or read-only disk would
    before = tree(conf)
    stick = make_stick(tmp / "stick", toml(extra=FULL))
    assert provision.main(str(stick), config_dir=conf, runtime_dir=tmp / "run", reload=_never_reload) == 2
    assert tree(conf) == before
    assert "nothing was changed" in (stick / "earshot-result.txt").read_text()


def test_usb_partition_on_a_loop_device_end_to_end(env, app, caplog):
    """The stick as a real block device: mounted read-only in a private dir, result written back."""
    assert os.geteuid() == 0, "mounting a loop device needs root (CI runs as root)"
    tmp, conf = env
    content = make_stick(tmp / "content", toml(extra=FULL))
    image = tmp / "stick.img"
    subprocess.run(["truncate", "-s", "16M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(content), str(image)], check=True, capture_output=True)
    dev = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        rc = provision.main(dev, config_dir=conf, runtime_dir=app.runtime, reload=app.reload, timeout=30)
        assert rc == 0, caplog.text
        assert app.status()["config_sha256"] == sha((content / "earshot.toml").read_bytes())
        assert provision._is_mounted(Path(dev)) is None  # unmounted again
        check = tmp / "check"
        check.mkdir()
        subprocess.run(["mount", "-o", "ro", dev, str(check)], check=True)
        try:
            assert (check / "earshot-result.txt").read_text().startswith("earshot provisioning: applied")
        finally:
            subprocess.run(["umount", str(check)], check=True)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def test_neither_device_nor_directory_is_a_usage_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    assert provision.main(str(f), config_dir=tmp_path / "etc", runtime_dir=tmp_path / "run") == provision.EXIT_USAGE
    assert provision.main(str(tmp_path / "nope"), config_dir=tmp_path / "etc",
                          runtime_dir=tmp_path / "run") == provision.EXIT_USAGE


def test_every_directory_to_the_config_is_open_to_the_service_group(tmp_path, caplog):
    """The service runs as its own user in its own group: provisioning (as root, umask 0077 here
    to make the point) must give every directory on the path to the config, and every file of
    the set, that group and its read bits. Before, sets/ was made root:root 0750 (0700 under
    this umask) and the service died on its first provisioned config with EACCES.
    (test_provision_as_root_service_as_nobody runs the installed service as another user.)"""
    group = grp.getgrgid(os.getgid()).gr_name          # a group this process may chown to
    conf = tmp_path / "etc" / "earshot"                 # not there yet: provisioning makes it
    run = tmp_path / "run"
    run.mkdir()
    stick = make_stick(tmp_path / "stick", toml(extra=FULL))

    def service_takes_it_up() -> None:                  # this test is about files, not the service
        provision.write_atomic(run / "status.json", json.dumps(
            {"pid": os.getpid(), "state": "ready", "config_sha256": sha((stick / "earshot.toml").read_bytes())}
        ).encode(), mode=0o644)

    old = os.umask(0o077)
    try:
        rc = provision.main(str(stick), config_dir=conf, runtime_dir=run, group=group,
                            reload=service_takes_it_up, restart=service_takes_it_up, timeout=5)
    finally:
        os.umask(old)
    assert rc == 0, caplog.text
    assert stat.S_IMODE(conf.stat().st_mode) == 0o755
    target = conf / os.readlink(conf / "earshot.toml")  # sets/<id>/earshot.toml
    for d in (conf / "sets", target.parent):
        st = d.stat()
        assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (os.getgid(), 0o750), d
    for f in target.parent.rglob("*"):
        st = f.stat()
        assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (os.getgid(), 0o750 if f.is_dir() else 0o640), f


def test_a_change_only_a_restart_applies_makes_provisioning_restart_the_service(env, caplog):
    """A reload that says "[panel] changed; that takes a restart" has not applied the stick: the
    appliance would run the old panel until some later reboot (and a config that cannot start
    would only fail then, with no rollback). Provisioning restarts the service and waits again."""
    tmp, conf = env
    running = [App(tmp, conf)]

    def restart() -> None:                       # what `systemctl restart` does
        assert "Traceback" not in running[-1].stop()
        running.append(App(tmp, conf))

    stick = make_stick(tmp / "stick", toml(extra='[panel]\nspy = "user/1001"\n'))
    try:
        rc = provision.main(str(stick), config_dir=conf, runtime_dir=running[0].runtime,
                            reload=running[0].reload, restart=restart, timeout=30)
        assert rc == 0, caplog.text
        assert len(running) == 2 and "needs a restart for sip.domain, panel; restarting it" in caplog.text
        st = running[-1].status()
        assert st["config_sha256"] == sha((stick / "earshot.toml").read_bytes()) and st["restart_needed"] == []
    finally:
        assert "Traceback" not in running[-1].stop()
