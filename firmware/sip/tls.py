"""TLS for SIP (RFC 3261 §26): contexts, a self-signed certificate on first start, fingerprints.

    cert, key = ensure_self_signed(state_dir)          # generated once (openssl CLI), then reused
    server = server_context(cert, key)                  # for Transport(tls=...)
    client = client_context()                           # verification + hostname check on (default)
    fingerprint(cert)                                   # SHA-256, "AB:CD:…", for the log

Both contexts require TLS 1.2 or later. The client context verifies against the system CAs plus
`ca` when given; `verify=False` turns verification off (a gateway configured `tls_verify = false`).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
from pathlib import Path

CERT_NAME = "sip-tls.crt"
KEY_NAME = "sip-tls.key"


def server_context(cert: str | os.PathLike, key: str | os.PathLike, *,
                   verify_clients: bool = False, ca: str | os.PathLike = "") -> ssl.SSLContext:
    """A server context from a PEM certificate (chain) and key; with `verify_clients`, a client
    certificate signed by `ca` is required (ValueError without `ca`)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from None
    if verify_clients:
        if not ca:
            raise ValueError("verifying client certificates needs a CA file")
        ctx.verify_mode = ssl.CERT_REQUIRED
        _load_ca(ctx, ca)
    return ctx


def client_context(*, verify: bool = True, ca: str | os.PathLike = "",
                   cert: str | os.PathLike = "", key: str | os.PathLike = "") -> ssl.SSLContext:
    """A client context: the peer's certificate and host name are checked unless `verify` is
    False; `ca` adds trusted CAs (or a self-signed peer certificate); `cert`/`key` is ours."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        ctx.load_default_certs()
        if ca:
            _load_ca(ctx, ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        try:
            ctx.load_cert_chain(str(cert), str(key or cert))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load TLS client certificate {cert}: {exc}") from None
    return ctx


def _load_ca(ctx: ssl.SSLContext, ca: str | os.PathLike) -> None:
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load TLS CA file {ca}: {exc}") from None


def fingerprint(cert: str | os.PathLike) -> str:
    """SHA-256 fingerprint of the first certificate in a PEM file, as colon-separated hex."""
    pem = Path(cert).read_text()
    begin = pem.find("-----BEGIN CERTIFICATE-----")
    end = pem.find("-----END CERTIFICATE-----", begin)
    if begin < 0 or end < 0:
        raise ValueError(f"{cert}: no PEM certificate in it")
    der = ssl.PEM_cert_to_DER_cert(pem[begin:end + len("-----END CERTIFICATE-----")] + "\n")
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def ensure_self_signed(directory: str | os.PathLike, common_name: str = "earshot",
                       names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> tuple[Path, Path]:
    """(cert, key) under `directory`: reused when both exist, else a P-256 self-signed certificate
    valid 10 years is generated with the openssl CLI; the key file is 0600.

    `names` become subjectAltNames (IP addresses as IP entries) next to `common_name`, so a client
    that trusts this certificate can also check the host name.
    """
    d = Path(directory)
    cert, key = d / CERT_NAME, d / KEY_NAME
    if cert.is_file() and key.is_file():
        return cert, key
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("no TLS certificate configured and no openssl to generate one")
    d.mkdir(parents=True, exist_ok=True)
    sans = [f"DNS:{common_name}"]
    for n in names:
        sans.append(f"IP:{n}" if _is_ip(n) else f"DNS:{n}")
    tmp_key = d / (KEY_NAME + ".tmp")
    tmp_cert = d / (CERT_NAME + ".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never world-readable
    os.close(fd)
    try:
        subprocess.run([exe, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "3650", "-subj", f"/CN={common_name}",
                        "-addext", "subjectAltName=" + ",".join(dict.fromkeys(sans)),
                        "-keyout", str(tmp_key), "-out", str(tmp_cert)],
                       check=True, capture_output=True, timeout=30)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        tmp_key.unlink(missing_ok=True)
        tmp_cert.unlink(missing_ok=True)
        err = getattr(exc, "stderr", b"") or b""
        raise RuntimeError(f"openssl could not make a certificate: {err.decode(errors='replace')[:200]}") from None
    os.replace(tmp_key, key)
    os.replace(tmp_cert, cert)
    return cert, key


def _is_ip(text: str) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False
