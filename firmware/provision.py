"""USB-stick provisioning: find ``earshot.toml`` on a stick, validate it, apply it atomically,
reload the service, roll back if it does not become ready, and report the outcome.

``python -m firmware provision DEVICE_OR_DIR`` (the ``earshot-provision@.service`` unit runs it for
each new USB partition). A block device is mounted read-only in a private temp dir; a directory is
used as is.

On-disk layout of the config directory (``/etc/earshot``)::

    earshot.toml       -> sets/<id>/earshot.toml   the running config set (a symlink)
    earshot.toml.prev  -> sets/<old>/earshot.toml  the rollback copy
    sets/<id>/         earshot.toml plus the files it names (dialplan, sounds), one complete set

A new set is written and fsynced in a staging directory, renamed into ``sets/``, and then one
``os.replace`` of the ``earshot.toml`` symlink switches everything at once: a crash at any step
leaves either the old set or the new one, never a mix. A hand-installed regular ``earshot.toml``
(first provisioning) becomes the rollback copy by a hard link, so its relative paths still work.

Outcomes: applying / applied / rejected / rolled back / ignored, each logged (journal), written to
``<runtime dir>/provision.json`` (for the panel's LEDs) and, when the stick can be written, to
``earshot-result.txt`` on it. Passwords never appear in any of them.

Control plane: plain synchronous code (os, subprocess); no asyncio or threads.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import wave
import xml.etree.ElementTree as ET
from xml.parsers import expat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from firmware import config as cfgmod

log = logging.getLogger("earshot.provision")

CONFIG_NAME = "earshot.toml"
PREV_NAME = "earshot.toml.prev"
# While a new set is on trial, the entries as they were before it (removed once it is decided).
UNDO = ((CONFIG_NAME, ".provision-current.undo"), (PREV_NAME, ".provision-prev.undo"))
SETS_DIR = "sets"
RESULT_NAME = "earshot-result.txt"
STATUS_NAME = "status.json"
REPORT_NAME = "provision.json"
SERVICE = "earshot.service"

OUTCOMES = ("applying", "applied", "rejected", "rolled back", "ignored")
# The panel's LED pattern per outcome (the panel module draws them; docs/provisioning.md shows how).
LED_PATTERNS = {
    "applying": "provision-applying",
    "applied": "provision-applied",
    "rejected": "provision-rejected",
    "rolled back": "provision-rolled-back",
    "ignored": "",  # a stick without earshot.toml changes nothing, not even the LEDs
}
EXIT_CODES = {"applied": 0, "ignored": 0, "rejected": 1, "rolled back": 2}
EXIT_USAGE = 64  # not a block device or directory

# Bounds: a stick is untrusted input (a 100 MB "config" is rejected, not read).
MAX_CONFIG_BYTES = 1 << 20
MAX_DIALPLAN_BYTES = 4 << 20
MAX_SOUND_BYTES = 16 << 20
SOUND_KEYS = ("indicate_new", "indicate_idle", "indicate_failed")

FILE_MODE = 0o640  # earshot.toml holds SIP passwords: root and the service's group only
DIR_MODE = 0o750   # sets/ and each set: root and the service's group
CONFIG_DIR_MODE = 0o755  # /etc/earshot itself holds only links (tmpfiles and the unit say the same)
MOUNT_OPTIONS = "ro,nosuid,nodev,noexec"

Hook = Callable[[str], None]  # called with the name of each step just done (crash tests)


class Rejected(Exception):
    """The stick's config cannot be used; ``lines`` are "file:line: key: reason" (no secrets)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


@dataclass
class ConfigSet:
    """earshot.toml and the files it names, as bytes keyed by their path relative to the set."""

    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.files[CONFIG_NAME]).hexdigest()


def _step(hook: Hook | None, name: str) -> None:
    if hook is not None:
        hook(name)


def default_config_dir(explicit: str | None = None) -> Path:
    """--config-dir, systemd's $CONFIGURATION_DIRECTORY, else /etc/earshot."""
    d = explicit or os.environ.get("CONFIGURATION_DIRECTORY", "").split(":")[0]
    return Path(d or "/etc/earshot")


# ---------------------------------------------------------------- reading and validating the stick

def _line_of(text: str, key: str) -> int | None:
    for n, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return n
    return None


def _read_bounded(root: Path, rel: str, limit: int) -> bytes:
    """A regular file inside ``root``, at most ``limit`` bytes; ValueError says why not."""
    path = root / rel
    real_root = os.path.realpath(root)
    if not os.path.realpath(path).startswith(real_root + os.sep):
        raise ValueError(f"{rel} leads outside the stick")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ValueError(f"file not found: {rel}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {rel}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{rel} is not a regular file")
        if st.st_size > limit:
            raise ValueError(f"{rel} is too large ({st.st_size} bytes; the limit is {limit})")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{rel} is too large (more than {limit} bytes)")
    return data


def _relative_name(value: str) -> str | None:
    """The normalised stick-relative path of a named file; None for an absolute (appliance) path."""
    p = PurePosixPath(value)
    if p.is_absolute():
        return None
    if ".." in p.parts or not p.parts:
        raise ValueError(f"must be a path inside the stick (got {value!r})")
    rel = str(p)
    if rel in (CONFIG_NAME, PREV_NAME, RESULT_NAME) or p.parts[0] == SETS_DIR:
        raise ValueError(f"{rel!r} is a reserved name")
    return rel


def _check_dialplan(rel: str, data: bytes) -> None:
    if rel.endswith(".xml"):
        try:
            ET.fromstring(data)
        except ET.ParseError as exc:
            line, col = exc.position
            raise ValueError(f"{rel}: not well-formed XML at line {line}, column {col} "
                             f"({expat.ErrorString(exc.code)})") from None


def _check_sound(rel: str, data: bytes) -> None:
    try:
        with wave.open(io.BytesIO(data)) as w:
            w.getnframes()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{rel} is not a WAV file ({exc})") from None


def read_stick(root: Path) -> ConfigSet | None:
    """Read and validate earshot.toml and every file it names; None when there is no earshot.toml.

    Raises Rejected with every problem found; nothing is written by this function.
    """
    root = Path(root)
    if not os.path.lexists(root / CONFIG_NAME):
        return None
    try:
        raw = _read_bounded(root, CONFIG_NAME, MAX_CONFIG_BYTES)
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # (a ValueError too, so first)
        raise Rejected([f"{CONFIG_NAME}: not UTF-8 text (bad byte at offset {exc.start})"]) from None
    except ValueError as exc:
        raise Rejected([f"{CONFIG_NAME}: {exc}"]) from None
    try:
        cfg = cfgmod.parse(text, CONFIG_NAME, str(root))
    except cfgmod.ConfigError as exc:
        # errors name files relative to the stick, as the integrator sees them on their PC
        raise Rejected([ln.replace(f"{root}{os.sep}", "") for ln in exc.lines()]) from None

    files = {CONFIG_NAME: raw}
    problems: list[str] = []
    named = [("dialplan.file", "file", cfg.dialplan.file, MAX_DIALPLAN_BYTES, _check_dialplan)]
    named += [(f"eavesdrop.{k}", k, getattr(cfg.eavesdrop, k), MAX_SOUND_BYTES, _check_sound)
              for k in SOUND_KEYS]
    for label, key, value, limit, check in named:
        if not value or "://" in value:  # unset, or a tone_stream:// style spec rather than a file
            continue
        where = f"{CONFIG_NAME}:{_line_of(text, key) or '?'}: {label}"
        try:
            rel = _relative_name(value)
            if rel is None:  # an absolute path names a file on the appliance itself
                if not Path(value).is_file():
                    raise ValueError(f"file not found on the appliance: {value}")
                continue
            data = _read_bounded(root, rel, limit)
            check(rel, data)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        files[rel] = data
    if problems:
        raise Rejected(problems)
    return ConfigSet(files)


# ---------------------------------------------------------------- atomic writes

def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes, mode: int, gid: int | None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        if gid is not None:
            os.fchown(fd, -1, gid)
        os.fchmod(fd, mode)  # the umask must not widen or narrow it
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = FILE_MODE, gid: int | None = None,
                 hook: Hook | None = None) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old file or the new one, whole.

    Temp file in the same directory, write + fsync, os.replace, fsync the directory.
    Steps reported to ``hook``: "written" (data written and fsynced), "renamed", "dir-synced".
    """
    path = Path(path)
    tmp = path.parent / f".provision-{path.name}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        _write_synced(tmp, data, mode, gid)
        _step(hook, "written")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _step(hook, "renamed")
    fsync_dir(path.parent)
    _step(hook, "dir-synced")


def _replace_link(config_dir: Path, name: str, *, target: str | None = None, hardlink_of: Path | None = None,
                  hook: Hook | None = None, step: str) -> None:
    """Atomically make ``config_dir/name`` a symlink to ``target`` or a hard link of ``hardlink_of``."""
    tmp = config_dir / f".provision-{name}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        if target is not None:
            os.symlink(target, tmp)
        else:
            os.link(hardlink_of, tmp, follow_symlinks=False)
        os.replace(tmp, config_dir / name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _step(hook, f"{step}:renamed")
    fsync_dir(config_dir)
    _step(hook, f"{step}:dir-synced")


def _service_dir(path: Path, mode: int, gid: int | None) -> None:
    """Create or repair a directory on the path to the running config so the service (which runs
    as its own user, in group ``gid``) can enter it: mode set explicitly (the umask must not narrow
    it) and the group given. Before, ``sets/`` was made root:root 0750 and the service died on
    its first provisioned config with EACCES."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode)
    if not stat.S_ISDIR(os.lstat(path).st_mode):     # a file or a link in the way: not ours to chmod
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))
    if gid is not None:
        os.chown(path, -1, gid)
    os.chmod(path, mode)


def _enterable_by_service(path: Path, gid: int | None) -> None:
    """An existing config directory the service cannot enter gets the service's group and g+rx
    (never narrower than it was)."""
    st = os.stat(path)
    if st.st_mode & 0o005 == 0o005 or gid is None or (st.st_gid == gid and st.st_mode & 0o050 == 0o050):
        return
    os.chown(path, -1, gid)
    os.chmod(path, (st.st_mode & 0o7777) | 0o050)


def _copy_entry(config_dir: Path, src: str, dst: str, hook: Hook | None, step: str) -> None:
    """Make ``dst`` the same as ``src`` (a symlink is copied as a symlink, a file by a hard link)."""
    s = config_dir / src
    if s.is_symlink():
        _replace_link(config_dir, dst, target=os.readlink(s), hook=hook, step=step)
    else:
        _replace_link(config_dir, dst, hardlink_of=s, hook=hook, step=step)


def _set_of(config_dir: Path, name: str) -> str | None:
    """The set id an entry points into (``sets/<id>/earshot.toml``), if it is such a symlink."""
    p = config_dir / name
    if not p.is_symlink():
        return None
    parts = PurePosixPath(os.readlink(p)).parts
    return parts[1] if len(parts) == 3 and parts[0] == SETS_DIR else None


def collect_garbage(config_dir: Path) -> None:
    """Remove sets no entry points to, staging leftovers and temp files of a killed run."""
    keep = {_set_of(config_dir, n) for pair in UNDO for n in pair}
    sets = config_dir / SETS_DIR
    if sets.is_dir():
        for d in sets.iterdir():
            if d.name not in keep and d.is_dir() and not d.is_symlink():
                shutil.rmtree(d, ignore_errors=True)
    for tmp in config_dir.glob(".provision-*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def current_files(config_dir: Path) -> dict[str, bytes] | None:
    """The running set's files as ``read_stick`` would return them (None when unreadable)."""
    try:
        cfg = cfgmod.load(config_dir / CONFIG_NAME)
        base = Path(cfg.base_dir)
        got = read_stick(base)
    except (cfgmod.ConfigError, Rejected, OSError):
        return None
    return got.files if got else None


def install(config_dir: Path, new: ConfigSet, *, gid: int | None = None, hook: Hook | None = None) -> str:
    """Write ``new`` as a complete set and switch ``earshot.toml`` to it; the old set becomes
    ``earshot.toml.prev``. Returns the new set's id. Steps are reported to ``hook``."""
    config_dir = Path(config_dir)
    sets = config_dir / SETS_DIR
    _service_dir(sets, DIR_MODE, gid)
    base_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + new.sha256[:12]
    set_id, n = base_id, 1
    while os.path.lexists(sets / set_id):  # the same config twice within a second
        n += 1
        set_id = f"{base_id}.{n}"
    staging = sets / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    _service_dir(staging, DIR_MODE, gid)
    for rel, data in sorted(new.files.items()):
        dest = staging / rel
        for parent in reversed(dest.relative_to(staging).parents[:-1]):
            _service_dir(staging / parent, DIR_MODE, gid)
        _write_synced(dest, data, FILE_MODE, gid)
        _step(hook, f"stage:{rel}:written")
        if dest.parent != staging:
            fsync_dir(dest.parent)
    fsync_dir(staging)
    _step(hook, "stage:dir-synced")
    os.rename(staging, sets / set_id)
    _step(hook, "stage:renamed")
    fsync_dir(sets)
    _step(hook, "stage:sets-synced")

    if os.path.lexists(config_dir / CONFIG_NAME):
        _copy_entry(config_dir, CONFIG_NAME, PREV_NAME, hook, "prev")
    elif os.path.lexists(config_dir / PREV_NAME):  # a stale rollback copy must not outlive "no config"
        _unlink_durably(config_dir, PREV_NAME)
        _step(hook, "prev:removed")
    # the commit point: one rename switches earshot.toml and every file it names
    _replace_link(config_dir, CONFIG_NAME, target=f"{SETS_DIR}/{set_id}/{CONFIG_NAME}", hook=hook, step="commit")
    return set_id


def _unlink_durably(config_dir: Path, name: str) -> None:
    if os.path.lexists(config_dir / name):
        os.unlink(config_dir / name)
        fsync_dir(config_dir)


def save_undo(config_dir: Path, *, hook: Hook | None = None) -> tuple[bool, ...]:
    """Keep earshot.toml and earshot.toml.prev as they are now, for ``undo``; says which existed."""
    had = []
    for name, undo in UNDO:
        _unlink_durably(config_dir, undo)
        had.append(os.path.lexists(config_dir / name))
        if had[-1]:
            _copy_entry(config_dir, name, undo, hook, f"save-{name}")
    return tuple(had)


def drop_undo(config_dir: Path) -> None:
    for _, undo in UNDO:
        _unlink_durably(config_dir, undo)


def undo(config_dir: Path, had: tuple[bool, ...], *, hook: Hook | None = None) -> None:
    """Put earshot.toml (first: it is what runs) and earshot.toml.prev back as ``save_undo`` found them."""
    for (name, saved), existed in zip(UNDO, had):
        if existed:
            _copy_entry(config_dir, saved, name, hook, f"undo-{name}")
        else:
            _unlink_durably(config_dir, name)
    drop_undo(config_dir)


# ---------------------------------------------------------------- the running service

def read_status(runtime_dir: Path) -> dict | None:
    try:
        return json.loads((Path(runtime_dir) / STATUS_NAME).read_text())
    except (OSError, ValueError):
        return None


def _status_identity(runtime_dir: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(Path(runtime_dir) / STATUS_NAME)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, just not ours
        pass
    return True


def wait_ready(runtime_dir: Path, sha256: str, *, since: tuple[int, int] | None, timeout: float,
               fresh_only: bool = True, poll: float = 0.1) -> tuple[bool, str]:
    """Wait until status.json says ready with ``sha256`` from a live pid. Returns (ready, detail).

    ``since`` is the status file's identity before we asked for a reload (the app replaces the
    file atomically, so every write is a new inode): with ``fresh_only`` only a newer status counts;
    a newer "reload-rejected" ends the wait early either way.
    """
    deadline = time.monotonic() + timeout
    last = "no status from the service"
    while True:
        ident = _status_identity(runtime_dir)
        fresh = ident is not None and ident != since
        st = read_status(runtime_dir) if ident is not None else None
        if st is not None and (fresh or not fresh_only):
            state = st.get("state")
            if state == "ready" and st.get("config_sha256") == sha256 and _alive(st.get("pid")):
                return True, "ready"
            if state == "reload-rejected" and fresh:
                return False, f"the service rejected the config ({st.get('detail', '')})"
            last = f"service state {state!r}, config sha256 {str(st.get('config_sha256'))[:12]}"
        left = deadline - time.monotonic()
        if left <= 0:
            return False, f"not ready within {timeout:g} s ({last})"
        time.sleep(min(poll, left))


def sighup_from_status(runtime_dir: Path) -> None:
    """Ask the running appliance to reload: SIGHUP to the pid in status.json (no systemd needed)."""
    st = read_status(runtime_dir)
    pid = st.get("pid") if st else None
    if not isinstance(pid, int) or pid <= 1:
        raise RuntimeError(f"no running service ({Path(runtime_dir) / STATUS_NAME} has no pid)")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise RuntimeError(f"the service (pid {pid}) is not running") from None


def systemctl(verb: str, unit: str = SERVICE) -> None:
    """``systemctl --no-block VERB unit``; we wait on status.json ourselves, bounded."""
    r = subprocess.run(["systemctl", "--no-block", verb, unit], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"systemctl {verb} {unit}: {r.stderr.strip() or r.returncode}")


def _reset_failed() -> None:
    """Forget earlier failed starts: after StartLimitBurst of them systemd refuses every start
    ("Start request repeated too quickly"), and a config provisioning brings (or rolls back to)
    deserves a fresh start limit."""
    subprocess.run(["systemctl", "reset-failed", SERVICE], capture_output=True, timeout=30)


def systemd_reload() -> None:
    """Reload the service, or start it when it is down."""
    _reset_failed()
    systemctl("reload-or-restart")


def systemd_restart() -> None:
    _reset_failed()
    systemctl("restart")


def systemd_active(timeout: float) -> str:
    """Wait (bounded) for the service to be active; returns ``systemctl is-active``'s last answer
    ("active", or "failed", "activating", … when it did not get there). A --no-block restart may
    not have begun yet, so any other state is polled again until the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(["systemctl", "is-active", SERVICE], capture_output=True, text=True, timeout=30)
        state = r.stdout.strip() or f"unknown ({r.returncode})"
        if state == "active" or time.monotonic() >= deadline:
            return state
        time.sleep(0.2)


def systemd_running() -> bool:
    return os.path.isdir("/run/systemd/system")  # sd_booted(3)


# ---------------------------------------------------------------- the stick and the report

def _is_mounted(device: Path) -> str | None:
    """Where the block device is mounted already (a system disk on USB), or None."""
    rdev = os.stat(device).st_rdev
    want = f"{os.major(rdev)}:{os.minor(rdev)}"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[2] == want:
                    return fields[4]
    except OSError:
        pass
    return None


def _mount(*args: str) -> None:
    r = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise OSError(r.stderr.strip() or f"mount exited {r.returncode}")


@contextlib.contextmanager
def mounted(device: Path) -> Iterator[Path]:
    """Mount a stick read-only in a private temp dir (PrivateMounts=yes keeps it in our namespace)."""
    mnt = Path(tempfile.mkdtemp(prefix="earshot-stick-"))
    try:
        _mount("-o", MOUNT_OPTIONS, str(device), str(mnt))
        try:
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True, timeout=60)
    finally:
        with contextlib.suppress(OSError):
            mnt.rmdir()


@dataclass
class Report:
    device: str
    runtime_dir: Path
    outcome: str = "applying"
    detail: str = ""
    errors: list[str] = field(default_factory=list)
    config_sha256: str = ""

    def publish(self, outcome: str, detail: str = "", errors: list[str] | None = None) -> None:
        """Journal + provision.json (for the panel's LEDs)."""
        self.outcome, self.detail, self.errors = outcome, detail, list(errors or [])
        level = logging.ERROR if outcome in ("rejected", "rolled back") else logging.INFO
        log.log(level, "%s %s%s", self.device, outcome, f": {detail}" if detail else "")
        for line in self.errors:
            log.log(level, "  %s", line)
        doc = {"outcome": outcome, "led": LED_PATTERNS[outcome], "device": self.device, "detail": detail,
               "errors": self.errors, "config_sha256": self.config_sha256, "time": int(time.time())}
        try:
            self.runtime_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.runtime_dir / REPORT_NAME, json.dumps(doc, indent=1).encode(), mode=0o644)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.runtime_dir / REPORT_NAME, exc)

    def text(self) -> str:
        lines = [f"earshot provisioning: {self.outcome}",
                 f"time: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
                 f"appliance: {os.uname().nodename}", f"device: {self.device}"]
        if self.config_sha256:
            lines.append(f"earshot.toml sha256: {self.config_sha256}")
        if self.detail:
            lines.append(f"detail: {self.detail}")
        lines += ["", *self.errors] if self.errors else []
        return "\n".join(lines) + "\n"


def write_result(root: Path, report: Report, *, remount: bool) -> None:
    """``earshot-result.txt`` on the stick: remount it read-write when it is a device, else best effort."""
    try:
        if remount:
            _mount("-o", "remount,rw,nosuid,nodev,noexec", str(root))
        path = Path(root) / RESULT_NAME
        # plain write + fsync: FAT has no atomic rename worth relying on, and this is only a receipt
        with open(path, "wb") as f:
            f.write(report.text().encode())
            f.flush()
            os.fsync(f.fileno())
        log.info("result written to %s on %s", RESULT_NAME, report.device)
    except OSError as exc:
        log.warning("stick %s not writable, no %s: %s", report.device, RESULT_NAME, exc)


def _gid_of(group: str | None) -> int | None:
    if not group:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


# ---------------------------------------------------------------- the whole job

def main(target: str, *, config_dir: Path, reload: Callable[[], None] | None = None,
         restart: Callable[[], None] | None = None, timeout: float = 30.0, runtime_dir: Path | None = None,
         group: str | None = "earshot", hook: Hook | None = None) -> int:
    """Provision from a block device or a directory. Returns 0 (applied, ignored), 1 (rejected),
    2 (rolled back) or 64 (target is neither a block device nor a directory).

    ``reload``/``restart`` ask the service to re-read its config (default: systemctl under systemd,
    else SIGHUP to the pid in status.json); ``hook`` sees each write step (crash tests).
    """
    path = Path(target)
    rdir = Path(runtime_dir) if runtime_dir else cfgmod.runtime_dir()
    if path.is_dir():
        return _provision(path, target, Path(config_dir), rdir, reload, restart, timeout, group, hook,
                          remount=False)
    try:
        is_block = stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        is_block = False
    if not is_block:
        log.error("%s is neither a block device nor a directory", target)
        return EXIT_USAGE
    where = _is_mounted(path)
    if where:
        log.info("%s is already mounted at %s (a system disk?): not a provisioning stick", target, where)
        Report(target, rdir).publish("ignored", f"already mounted at {where}")
        return EXIT_CODES["ignored"]
    try:
        with mounted(path) as root:
            return _provision(root, target, Path(config_dir), rdir, reload, restart, timeout, group, hook,
                              remount=True)
    except OSError as exc:
        Report(target, rdir).publish("rejected", f"cannot mount {target}: {exc}")
        return EXIT_CODES["rejected"]


def _provision(root: Path, device: str, config_dir: Path, rdir: Path, reload: Callable[[], None] | None,
               restart: Callable[[], None] | None, timeout: float, group: str | None, hook: Hook | None,
               *, remount: bool) -> int:
    if not os.path.lexists(root / CONFIG_NAME):
        log.info("no %s on %s: nothing to do", CONFIG_NAME, device)
        Report(device, rdir).publish("ignored", f"no {CONFIG_NAME}")
        return EXIT_CODES["ignored"]
    report = Report(device, rdir)
    report.publish("applying")
    try:
        new = read_stick(root)
        assert new is not None  # checked above
    except Rejected as exc:
        report.publish("rejected", "nothing was changed", exc.lines)
        write_result(root, report, remount=remount)
        return EXIT_CODES["rejected"]
    report.config_sha256 = new.sha256
    outcome, detail = _apply(new, config_dir, rdir, reload, restart, timeout, group, hook)
    report.publish(outcome, detail)
    write_result(root, report, remount=remount)
    return EXIT_CODES[outcome]


def _ask_and_wait(ask: Callable[[], None], rdir: Path, sha256: str, timeout: float) -> tuple[bool, str]:
    """Ask the service to reload or restart, then wait for it to run ``sha256``."""
    since = _status_identity(rdir)
    try:
        ask()
        return wait_ready(rdir, sha256, since=since, timeout=timeout)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return False, f"could not ask the service to reload: {exc}"


def _apply(new: ConfigSet, config_dir: Path, rdir: Path, reload: Callable[[], None] | None,
           restart: Callable[[], None] | None, timeout: float, group: str | None,
           hook: Hook | None) -> tuple[str, str]:
    if reload is None:
        reload = systemd_reload if systemd_running() else (lambda: sighup_from_status(rdir))
    if restart is None:
        restart = systemd_restart if systemd_running() else reload
    gid = _gid_of(group)
    if not config_dir.exists():
        config_dir.parent.mkdir(parents=True, exist_ok=True)
        _service_dir(config_dir, CONFIG_DIR_MODE, gid)
    _enterable_by_service(config_dir, gid)
    with open(config_dir / ".provision.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two partitions or two sticks: one at a time
        drop_undo(config_dir)  # left by a run killed mid-way: whatever earshot.toml is now, it is whole
        collect_garbage(config_dir)
        status = read_status(rdir) or {}
        if status.get("state") == "ready" and status.get("config_sha256") == new.sha256 \
                and current_files(config_dir) == new.files:
            return "applied", "unchanged: this config is already running"
        had = save_undo(config_dir, hook=hook)  # a failed attempt leaves everything as it was
        try:
            set_id = install(config_dir, new, gid=gid, hook=hook)
        except OSError as exc:
            undo(config_dir, had, hook=hook)
            collect_garbage(config_dir)
            return "rolled back", f"cannot write {config_dir}: {exc}; nothing was changed"
        log.info("installed set %s; asking the service to reload", set_id)
        # a service on the embedded default has no file to re-read: it needs a restart to pick one up
        ask = restart if status.get("config") == "<embedded default>" else reload
        ok, why = _ask_and_wait(ask, rdir, new.sha256, timeout)
        later = (read_status(rdir) or {}).get("restart_needed") if ok else None
        if later:
            # a reload that leaves part of the file for "a restart" has not applied it: restart
            # now, so the config that runs (and survives the next boot) is the one that was checked
            log.info("the service needs a restart for %s; restarting it", ", ".join(later))
            ok, why = _ask_and_wait(restart, rdir, new.sha256, timeout)
            if not ok:
                why = f"after a restart for {', '.join(later)}: {why}"
        if ok:
            drop_undo(config_dir)
            collect_garbage(config_dir)
            return "applied", f"running set {set_id}"

        log.error("new config not taken up (%s): rolling back", why)
        undo(config_dir, had, hook=hook)
        collect_garbage(config_dir)
        since = _status_identity(rdir)
        # after "reload-rejected" the old config is still running and a reload suffices; a service
        # that did not answer in time may be wedged: restart it
        again = reload if why.startswith("the service rejected") else restart
        ok2, why2 = True, ""
        try:
            again()
            if had[0]:
                prev_sha = cfgmod.file_sha256(config_dir / CONFIG_NAME)
                ok2, why2 = wait_ready(rdir, prev_sha, since=since, timeout=timeout, fresh_only=False)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            ok2, why2 = False, str(exc)
        if ok2 and systemd_running():      # the status file may be an old one; systemd must agree
            state = systemd_active(timeout)
            if state != "active":
                ok2, why2 = False, f"{SERVICE} is {state}"
        if not had[0]:
            after = "there was no previous config: removed the new one" + \
                ("" if ok2 else f", but the service: {why2}")
        else:
            after = "previous config running again" if ok2 else f"previous config restored, but the service: {why2}"
        return "rolled back", f"{why}; {after}"
