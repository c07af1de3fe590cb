"""SIPp 3.6.1 (Debian sip-tester) runs on 127.0.0.1: built-in or bundled XML scenarios, bounded.

Each run gets its own directory with the statistics CSV (-trace_stat), the unexpected-message
log (-trace_err), the SIP message trace (-trace_msg) and stdout. The result comes from the
final row of the statistics CSV and the exit code.

SIPp exit codes: 0 all calls succeeded, 1 some call failed, 97 stopped by an internal command,
99 ended without processing a call, 255/254 fatal (254: could not bind).
"""
from __future__ import annotations

import errno
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from . import PeerError, end_process, log_tail, require
from .ports import free_port, rtp_range

HOST = "127.0.0.1"
SCENARIOS = Path(__file__).with_name("scenarios")
BUILTIN = ("uac", "uas", "uac_pcap", "regexp", "branchc", "branchs")
TRANSPORTS = {"udp": "u1", "tcp": "t1"}


@dataclass(frozen=True)
class SippResult:
    """Counts from the final statistics row ("(C)" = cumulative columns)."""

    returncode: int
    successful: int
    failed: int
    retransmissions: int
    created: int
    stats: dict[str, str] = field(repr=False)
    errors: str = field(repr=False)   # -trace_err log: unexpected messages
    output: str = field(repr=False)   # tail of SIPp's stdout/stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0


def scenario_args(scenario: str | Path) -> list[str]:
    """`-sn NAME` for a built-in, `-sf FILE` for a bundled name (e.g. "uas_answer") or a path."""
    if isinstance(scenario, str) and scenario in BUILTIN:
        return ["-sn", scenario]
    if isinstance(scenario, str) and "/" not in scenario:
        bundled = SCENARIOS / (scenario if scenario.endswith(".xml") else scenario + ".xml")
        if bundled.exists():
            return ["-sf", str(bundled)]
    path = Path(scenario)
    if path.suffix == ".xml" and path.exists():
        return ["-sf", str(path.resolve())]
    known = sorted(p.stem for p in SCENARIOS.glob("*.xml"))
    raise ValueError(f"unknown SIPp scenario {scenario!r}: built-ins {BUILTIN}, bundled {known}, "
                     f"or an existing .xml path")


def parse_stats(path: Path) -> dict[str, str]:
    """Header -> value of the last row of a SIPp -trace_stat CSV (';'-separated); {} if absent."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return {}
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(";"), lines[-1].split(";")))


def _count(stats: dict[str, str], key: str) -> int:
    try:
        return int(stats.get(key, "0") or 0)
    except ValueError:
        return 0


class Sipp:
    """One SIPp process. `remote` ("host:port") is required for a UAC, absent for a UAS.

    `calls` (-m) ends the run after that many calls; `timeout` (-timeout, -timeout_error) ends
    it as a failure. `keys` become `-key NAME VALUE` ([NAME] in scenarios); `service` is the
    request-URI user (-s); `auth` = (user, password) for digest challenges (-au/-ap);
    `auth_uri` overrides the digest uri (SIPp's default is sip:REMOTE, not the request-URI);
    `hold_ms` is the <pause/> length (-d); `rtp_echo` sends received RTP back (-rtp_echo).
    """

    def __init__(self, workdir: Path, scenario: str | Path, *, remote: str | None = None,
                 name: str | None = None, port: int | None = None, calls: int = 1,
                 rate: float = 10.0, limit: int = 10, timeout: float = 15.0,
                 recv_timeout: float | None = 10.0, service: str | None = None,
                 auth: tuple[str, str] | None = None, auth_uri: str | None = None,
                 keys: dict[str, str] | None = None,
                 hold_ms: int = 0, rtp_echo: bool = False, transport: str = "udp",
                 trace_msg: bool = True, extra_args: Sequence[str] = ()) -> None:
        self.scenario_args = scenario_args(scenario)
        if calls < 1 or limit < 1 or rate <= 0 or timeout <= 0 or hold_ms < 0:
            raise ValueError(f"need calls>=1, limit>=1, rate>0, timeout>0, hold_ms>=0; got "
                             f"calls={calls} limit={limit} rate={rate} timeout={timeout} "
                             f"hold_ms={hold_ms}")
        if transport not in TRANSPORTS:
            raise ValueError(f"transport {transport!r} not in {tuple(TRANSPORTS)}")
        if remote is not None and remote.count(":") != 1:
            raise ValueError(f"remote must be 'host:port', got {remote!r}")
        self.name = name or f"sipp-{Path(self.scenario_args[1]).stem}"
        self.dir = Path(workdir) / self.name
        self.remote = remote
        self.port = port if port is not None else free_port(1)
        self.media_port = rtp_range(4)[0]   # SIPp uses media_port and media_port + 2
        self.timeout = timeout
        self.transport = transport
        self.log_path = self.dir / "sipp.out"
        self.stat_path = self.dir / "stat.csv"
        self.err_path = self.dir / "errors.log"
        self.msg_path = self.dir / "messages.log"
        args = [*self.scenario_args, "-i", HOST, "-mi", HOST, "-p", str(self.port),
                "-mp", str(self.media_port), "-t", TRANSPORTS[transport],
                "-m", str(calls), "-r", f"{rate:g}", "-l", str(limit),
                "-timeout", f"{timeout:g}s", "-timeout_error", "-nostdin",
                "-trace_stat", "-stf", str(self.stat_path), "-fd", "1",
                "-trace_err", "-error_file", str(self.err_path)]
        if recv_timeout is not None:
            args += ["-recv_timeout", f"{int(recv_timeout * 1000)}"]
        if trace_msg:
            args += ["-trace_msg", "-message_file", str(self.msg_path)]
        if service is not None:
            args += ["-s", service]
        if auth is not None:
            args += ["-au", auth[0], "-ap", auth[1]]
        if auth_uri is not None:
            args += ["-auth_uri", auth_uri]
        for key, value in (keys or {}).items():
            args += ["-key", key, value]
        if hold_ms:
            args += ["-d", str(hold_ms)]
        if rtp_echo:
            args.append("-rtp_echo")
        args += list(extra_args)
        if remote is not None:
            args.append(remote)
        self.args = args
        self._proc: subprocess.Popen[bytes] | None = None
        self._result: SippResult | None = None

    @property
    def addr(self) -> str:
        """host:port this SIPp listens on."""
        return f"{HOST}:{self.port}"

    def start(self, timeout: float = 3.0) -> "Sipp":
        """Start SIPp and wait until it has bound its SIP port; returns self."""
        exe = require("sipp", "sip-tester")
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen([exe, *self.args], cwd=self.dir,
                                          stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._bound():
            if self._proc.poll() is not None:
                return self  # finished (or failed) already; wait() reports it
            if time.monotonic() > deadline:
                raise PeerError(f"{self.name}: port {self.port} not bound after {timeout}s\n"
                                f"{log_tail(self.log_path)}")
            time.sleep(0.02)
        return self

    def _bound(self) -> bool:
        kind = socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind((HOST, self.port))
            return False
        except OSError as e:
            return e.errno == errno.EADDRINUSE
        finally:
            s.close()

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to end (default: its own -timeout plus 5 s) and return the result."""
        if self._result is not None:
            return self._result
        if self._proc is None:
            raise PeerError(f"{self.name} was not started")
        try:
            self._proc.wait(self.timeout + 5.0 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            end_process(self._proc)
            raise PeerError(f"{self.name} did not end in time\n{log_tail(self.log_path)}")
        stats = parse_stats(self.stat_path)
        try:
            errors = self.err_path.read_text(errors="replace")
        except FileNotFoundError:
            errors = ""
        self._result = SippResult(
            returncode=self._proc.returncode,
            successful=_count(stats, "SuccessfulCall(C)"),
            failed=_count(stats, "FailedCall(C)"),
            retransmissions=_count(stats, "Retransmissions(C)"),
            created=_count(stats, "TotalCallCreated"),
            stats=stats, errors=errors, output=log_tail(self.log_path, 40))
        return self._result

    def run(self) -> SippResult:
        """start() then wait()."""
        return self.start().wait()

    def stop(self) -> None:
        """End SIPp if it is still running; idempotent."""
        end_process(self._proc)

    def __enter__(self) -> "Sipp":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
