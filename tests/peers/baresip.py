"""baresip 1.0.0 as a headless, scripted SIP phone.

One instance = one config dir under `workdir/name`, one process (`baresip -f DIR -t LIFETIME`),
one persistent ctrl_tcp connection. ctrl_tcp sends events only to its most recent client, so
commands and events share that single socket; a reader thread files responses by token and
queues events, and callers wait on a Condition (no sleeps).

Audio: the player is `aubridge` (cheap, no sound card), the source is an 8 kHz mono WAV via
`aufile` or a sine via `ausine` (48 kHz stereo only, baresip resamples), and the `sndfile` filter
records every call into `rec/dump-<time>-dec.wav` (what this phone heard) and `-enc.wav` (what
it sent). sndfile names have 1 s resolution: two calls on one phone within a second collide.
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import PeerError, end_process, log_tail, require
from .audio import read_wav
from .ports import free_port, rtp_range

HOST = "127.0.0.1"
MODULE_PATH = "/usr/lib/baresip/modules"
CODECS = ("pcmu", "pcma")
ANSWERMODES = ("manual", "auto", "early")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
DTMF_DIGITS = re.compile(r"^[0-9*#A-Da-d]+$")
# Characters that would break baresip's account-line parser (params are ;-separated, <>-quoted).
_UNSAFE = re.compile(r"[\s;<>\",@:]")


@dataclass(frozen=True)
class Account:
    """One SIP account (one baresip user agent).

    Without `registrar` the phone does not register and is reached directly at
    `sip:USER@127.0.0.1:SIP_PORT`. With `registrar` ("host:port") it REGISTERs there every
    `regint` s; the AOR domain is `domain` (default: the registrar), with the registrar as
    outbound proxy when they differ. With answermode "auto", baresip 1.0.0 answers at once and
    raises no CALL_INCOMING event (CALL_ESTABLISHED still comes).
    """

    user: str
    registrar: str | None = None
    password: str | None = None
    auth_user: str | None = None
    domain: str | None = None
    answermode: str = "manual"
    codecs: Sequence[str] = ("pcmu",)
    regint: int = 60
    transport: str = "udp"
    mediaenc: str | None = None   # "srtp" (best effort, RTP/AVP + a=crypto) or "srtp-mand" (RTP/SAVP)

    def __post_init__(self) -> None:
        for label, value in (("user", self.user), ("password", self.password),
                             ("auth_user", self.auth_user)):
            if value is not None and (not value or _UNSAFE.search(value)):
                raise ValueError(f"account {label} {value!r} is empty or has a character "
                                 f"baresip cannot parse (space ; < > \" , @ :)")
        if self.answermode not in ANSWERMODES:
            raise ValueError(f"answermode {self.answermode!r} not in {ANSWERMODES}")
        bad = [c for c in self.codecs if c.lower() not in CODECS]
        if not self.codecs or bad:
            raise ValueError(f"codecs {list(self.codecs)!r}: need a non-empty subset of {CODECS}")
        if self.transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"transport {self.transport!r} not in ('udp', 'tcp', 'tls')")
        if self.mediaenc not in (None, "srtp", "srtp-mand", "srtp-mandf"):
            raise ValueError(f"mediaenc {self.mediaenc!r} not in (None, 'srtp', 'srtp-mand', 'srtp-mandf')")
        if self.registrar is None and (self.password or self.domain):
            raise ValueError("password/domain need a registrar")
        if self.regint < 1:
            raise ValueError(f"regint must be >= 1 s, got {self.regint}")

    def aor(self, sip_port: int) -> str:
        host = (self.domain or self.registrar) if self.registrar else f"{HOST}:{sip_port}"
        return f"sip:{self.user}@{host}"

    def line(self, sip_port: int) -> str:
        parts = [f"<{self.aor(sip_port)};transport={self.transport}>"]
        if self.registrar:
            parts.append(f"regint={self.regint}")
            if self.domain and self.domain != self.registrar:
                parts.append(f'outbound="sip:{self.registrar};transport={self.transport}"')
        else:
            parts.append("regint=0")
        if self.password is not None:
            parts.append(f"auth_user={self.auth_user or self.user}")
            parts.append(f"auth_pass={self.password}")
        parts.append(f"answermode={self.answermode}")
        parts.append("audio_codecs=" + ",".join(c.lower() for c in self.codecs))
        if self.mediaenc:
            parts.append(f"mediaenc={self.mediaenc}")
        return ";".join(parts)


@dataclass(frozen=True)
class Recording:
    """One call's recording: `heard` = the decoded received audio, `sent` = the encoded source."""

    heard: Path
    sent: Path


@dataclass
class _Conn:
    sock: socket.socket
    cond: threading.Condition = field(default_factory=threading.Condition)
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False


class Baresip:
    """A scripted baresip phone. Use as a context manager or via PeerGroup so stop() always runs.

    `source`: a path to an 8 kHz mono 16-bit WAV (played once through aufile, then silence;
    repeated instead with `loop_source`), a frequency in Hz (ausine), or None for silence.
    `lifetime` bounds the process (`-t`). `tls_cafile` (PEM) is the CA/certificate baresip trusts for
    `transport="tls"` accounts (`sip_cafile`), `tls_certificate` its own cert+key PEM (`sip_certificate`).
    """

    def __init__(self, workdir: Path, name: str,
                 accounts: Account | Sequence[Account] | None = None,
                 *, source: Path | str | float | None = None, loop_source: bool = False,
                 lifetime: float = 30.0, tls_cafile: Path | None = None,
                 tls_certificate: Path | None = None) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ValueError(f"name {name!r}: use letters, digits, - and _")
        if lifetime <= 0:
            raise ValueError(f"lifetime must be > 0 s, got {lifetime}")
        if accounts is None:
            accounts = [Account(name)]
        elif isinstance(accounts, Account):
            accounts = [accounts]
        if not accounts:
            raise ValueError("need at least one account")
        self.name = name
        self.accounts: list[Account] = list(accounts)
        self.dir = Path(workdir) / name
        self.rec_dir = self.dir / "rec"
        self.log_path = self.dir / "baresip.log"
        self.lifetime = lifetime
        self.source = source
        self.loop_source = loop_source
        self.tls_cafile = tls_cafile
        self.tls_certificate = tls_certificate
        self.sip_port = free_port(2)   # baresip binds SIP/TLS on sip_port + 1
        self.ctrl_port = free_port(1, udp=False)
        self.rtp_ports = rtp_range(20)
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: _Conn | None = None
        self._reader: threading.Thread | None = None
        self._token = 0
        self._consumed: set[int] = set()  # indexes of events handed out by await_event

    # ----- addresses
    @property
    def aor(self) -> str:
        """The first account's address of record."""
        return self.accounts[0].aor(self.sip_port)

    @property
    def uri(self) -> str:
        """Where to reach this phone directly, bypassing any registrar."""
        return f"sip:{self.accounts[0].user}@{HOST}:{self.sip_port}"

    # ----- config
    def _source_lines(self) -> list[str]:
        src = self.source
        if isinstance(src, bool):
            raise ValueError(f"source must be a WAV path, a frequency or None, got {src!r}")
        if isinstance(src, (int, float)):
            if not 20 <= src < 4000:
                raise ValueError(f"sine source {src} Hz is outside the G.711 band 20-3999 Hz")
            # ausine only produces 48 kHz stereo; baresip resamples to the codec's 8 kHz mono.
            return [f"audio_source\t\tausine,{int(round(src))}", "ausrc_srate\t\t48000",
                    "ausrc_channels\t\t2"]
        frames = 8000 * (int(self.lifetime) + 1)
        if src is None:
            silence = _write_pcm(self.dir / "source.wav", np.zeros(frames, np.int16))
            return [f"audio_source\t\taufile,{silence}"]
        path = Path(src).resolve()
        try:
            with wave.open(str(path), "rb") as w:
                fmt = (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes())
        except (OSError, wave.Error) as e:
            raise ValueError(f"{path}: not a readable PCM WAV ({e})") from None
        if fmt[:3] != (8000, 1, 2) or fmt[3] == 0:
            raise ValueError(f"{path}: aufile needs a non-empty 8 kHz mono 16-bit WAV for G.711, "
                             f"got rate={fmt[0]} channels={fmt[1]} width={fmt[2]} frames={fmt[3]}")
        if fmt[3] < frames:
            # aufile plays its file once and then the phone stops sending RTP: cover the lifetime.
            _, pcm = read_wav(path)
            if self.loop_source:
                pcm = np.resize(pcm, frames)
            else:
                pcm = np.concatenate([pcm, np.zeros(frames - len(pcm), np.int16)])
            path = _write_pcm(self.dir / "source.wav", pcm)
        return [f"audio_source\t\taufile,{path}"]

    def _write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rec_dir.mkdir(exist_ok=True)
        lo, hi = self.rtp_ports
        lines = [
            "poll_method\t\tepoll",
            f"sip_listen\t\t{HOST}:{self.sip_port}",
            f"net_interface\t\t{HOST}",  # 'lo' fails in 1.0.0
            "call_local_timeout\t120",
            "call_max_calls\t\t4",
            f"audio_player\t\taubridge,play_{self.name}",
            f"audio_alert\t\taubridge,alert_{self.name}",
            *self._source_lines(),
            "audio_buffer\t\t20-160",
            f"rtp_ports\t\t{lo}-{hi}",
            "rtcp_mux\t\tno",
            "jitter_buffer_delay\t5-10",
            "rtp_stats\t\tyes",
            f"module_path\t\t{MODULE_PATH}",
            "module\t\t\tg711.so",
            "module\t\t\taubridge.so",
            "module\t\t\taufile.so",
            "module\t\t\tausine.so",
            "module\t\t\tsndfile.so",
            *(["module\t\t\tsrtp.so"] if any(a.mediaenc for a in self.accounts) else []),
            "module_tmp\t\taccount.so",
            "module_app\t\tmenu.so",
            "module_app\t\tctrl_tcp.so",
            "statmode_default\toff",
            f"ctrl_tcp_listen\t\t{HOST}:{self.ctrl_port}",
            f"snd_path\t\t{self.rec_dir}",
        ]
        if self.tls_cafile is not None:
            lines.append(f"sip_cafile\t\t{Path(self.tls_cafile).resolve()}")
        if self.tls_certificate is not None:
            lines.append(f"sip_certificate\t\t{Path(self.tls_certificate).resolve()}")
        (self.dir / "config").write_text("\n".join(lines) + "\n")
        (self.dir / "accounts").write_text(
            "".join(a.line(self.sip_port) + "\n" for a in self.accounts))

    # ----- lifecycle
    def start(self, timeout: float = 5.0) -> "Baresip":
        """Write the config, start baresip and connect to ctrl_tcp; returns self."""
        exe = require("baresip", "baresip-core")
        self._write_config()
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [exe, "-f", str(self.dir), "-t", str(max(1, int(round(self.lifetime))))],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise self._error(f"exited with {self._proc.returncode} while starting")
            try:
                sock = socket.create_connection((HOST, self.ctrl_port), timeout=0.5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise self._error(f"ctrl_tcp {HOST}:{self.ctrl_port} not up after {timeout}s")
                time.sleep(0.02)
        sock.settimeout(None)
        self._conn = _Conn(sock)
        self._reader = threading.Thread(target=self._read_loop, args=(self._conn,),
                                        name=f"baresip-{self.name}", daemon=True)
        self._reader.start()
        return self

    def stop(self) -> None:
        """Ask baresip to quit, then terminate/kill it; idempotent."""
        conn = self._conn
        if conn is not None and not conn.closed and self.alive:
            try:
                self._send(conn, "quit", None)
            except OSError:
                pass
        if self._proc is not None:
            try:
                self._proc.wait(2.0)
            except subprocess.TimeoutExpired:
                end_process(self._proc)
        if conn is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.sock.close()
        if self._reader is not None:
            self._reader.join(2.0)
        self._conn = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> "Baresip":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    def _error(self, what: str) -> PeerError:
        return PeerError(f"baresip {self.name}: {what}\n--- log tail ---\n{self.log_tail()}")

    # ----- ctrl_tcp protocol: netstring-framed JSON
    def _read_loop(self, conn: _Conn) -> None:
        buf = b""
        try:
            while True:
                chunk = conn.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while True:
                    colon = buf.find(b":")
                    if colon < 0:
                        break
                    size = int(buf[:colon])
                    end = colon + 1 + size
                    if len(buf) < end + 1:
                        break
                    if buf[end:end + 1] != b",":
                        raise ValueError(f"bad netstring terminator {buf[end:end + 1]!r}")
                    msg = json.loads(buf[colon + 1:end])
                    buf = buf[end + 1:]
                    with conn.cond:
                        if msg.get("response"):
                            conn.responses[str(msg.get("token"))] = msg
                        elif msg.get("event"):
                            msg["t"] = time.monotonic()
                            conn.events.append(msg)
                        conn.cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with conn.cond:
                conn.closed = True
                conn.cond.notify_all()

    def _send(self, conn: _Conn, command: str, params: str | None) -> str:
        self._token += 1
        token = str(self._token)
        msg: dict[str, str] = {"command": command, "token": token}
        if params is not None:
            msg["params"] = params
        body = json.dumps(msg).encode()
        conn.sock.sendall(b"%d:%s," % (len(body), body))
        return token

    def _live_conn(self) -> _Conn:
        if self._conn is None:
            raise PeerError(f"baresip {self.name} is not started")
        return self._conn

    def cmd(self, command: str, params: str | None = None, *, timeout: float = 5.0,
            check: bool = True) -> dict[str, Any]:
        """Send a ctrl_tcp command and return its response {'ok', 'data', 'token', …}.

        With `check`, a response with ok=false raises PeerError."""
        conn = self._live_conn()
        token = self._send(conn, command, params)
        with conn.cond:
            if not conn.cond.wait_for(lambda: token in conn.responses or conn.closed, timeout):
                raise self._error(f"no response to {command!r} within {timeout}s")
            resp = conn.responses.pop(token, None)
        if resp is None:
            raise self._error(f"connection closed before the response to {command!r}")
        if check and not resp.get("ok"):
            raise self._error(f"{command} {params or ''} failed: {resp.get('data')!r}")
        return resp

    def await_event(self, type: str, timeout: float = 10.0, *,
                    param: str | None = None,
                    where: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """The oldest not yet awaited event of `type` (and `param`, and matching `where`),
        waiting up to `timeout` s. Each event is handed out once, so awaiting CALL_DTMF_START
        four times yields four digits in order. Raises PeerError on timeout."""
        conn = self._live_conn()

        def find() -> dict[str, Any] | None:
            for i, ev in enumerate(conn.events):
                if i in self._consumed or ev.get("type") != type:
                    continue
                if param is not None and ev.get("param") != param:
                    continue
                if where is not None and not where(ev):
                    continue
                self._consumed.add(i)
                return ev
            return None

        deadline = time.monotonic() + timeout
        with conn.cond:
            while (ev := find()) is None:
                left = deadline - time.monotonic()
                if conn.closed or left <= 0:
                    why = "connection closed" if conn.closed else f"timed out after {timeout}s"
                    seen = [(e.get("type"), e.get("param")) for e in conn.events]
                    raise self._error(f"no {type} event ({why}); events so far: {seen}")
                conn.cond.wait(left)
            return ev

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        """Every event received so far (of `type`, if given), awaited or not."""
        conn = self._live_conn()
        with conn.cond:
            return [e for e in conn.events if type is None or e.get("type") == type]

    # ----- phone actions
    def dial(self, uri: str, account: Account | None = None) -> dict[str, Any]:
        """Call `uri` from `account` (default: the current user agent, the first account)."""
        if not uri.startswith(("sip:", "sips:")):
            raise ValueError(f"dial needs a sip: URI, got {uri!r}")
        if account is not None:
            if account not in self.accounts:
                raise ValueError(f"{account.user!r} is not an account of {self.name}")
            self.cmd("uafind", account.aor(self.sip_port))
        return self.cmd("dial", uri)

    def accept(self) -> dict[str, Any]:
        return self.cmd("accept")

    def hangup(self) -> dict[str, Any]:
        return self.cmd("hangup")

    def send_dtmf(self, digits: str) -> dict[str, Any]:
        """Send RFC 4733 events for `digits` (0-9 * # A-D), back to back, ~240 ms each."""
        if not DTMF_DIGITS.match(digits):
            raise ValueError(f"DTMF digits must be 0-9, *, #, A-D; got {digits!r}")
        return self.cmd("sndcode", digits)

    def reg_status(self) -> dict[str, str]:
        """AOR -> 'OK' / 'ERR' / '' (no answer yet) for every account with a registrar."""
        data = _ANSI.sub("", str(self.cmd("reginfo").get("data", "")))
        status = {}
        for acc in self.accounts:
            if acc.registrar:
                aor = acc.aor(self.sip_port)
                m = re.search(re.escape(aor) + r"\s+(OK|ERR)\b", data)
                status[aor] = m.group(1) if m else ""
        return status

    def registered(self) -> bool:
        """True when every account that has a registrar is registered (per `reginfo`)."""
        return all(v == "OK" for v in self.reg_status().values())

    def wait_registered(self, timeout: float = 5.0, poll: float = 0.05) -> None:
        """Poll `reginfo` until registered() (REGISTER_OK may fire before we connect)."""
        deadline = time.monotonic() + timeout
        while not self.registered():
            if time.monotonic() > deadline:
                raise self._error(f"not registered after {timeout}s: "
                                  f"{self.cmd('reginfo').get('data')!r}")
            time.sleep(poll)

    def recordings(self, wait: float = 3.0) -> list[Recording]:
        """This phone's call recordings, oldest first.

        sndfile finalises a WAV header only when the call's audio is torn down, which can be a
        moment after CALL_CLOSED; this waits up to `wait` s for every file to be finalised and
        raises PeerError for one still being written (a call still up)."""
        deadline = time.monotonic() + wait
        decs = sorted(self.rec_dir.glob("dump-*-dec.wav"))
        out = [Recording(heard=d, sent=d.with_name(d.name[:-len("-dec.wav")] + "-enc.wav"))
               for d in decs]
        for path in [p for r in out for p in (r.heard, r.sent)]:
            while not _wav_finalised(path):
                if time.monotonic() > deadline:
                    raise self._error(f"{path.name} is still being written (call not closed?)")
                time.sleep(0.02)
        return out


def _write_pcm(path: Path, pcm: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


def _wav_finalised(path: Path) -> bool:
    """True when the RIFF data chunk's size matches the bytes on disk (sndfile writes 0 there
    until it closes the file)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return False
    i = raw.find(b"data", 12)
    if i < 0 or len(raw) < i + 8:
        return False
    return int.from_bytes(raw[i + 4:i + 8], "little") == len(raw) - (i + 8)
