"""The appliance as `./build.sh run` starts it, with real phones: baresip registers with the
configured passwords, a reloaded [[users]] takes effect without a restart, and a configured
gateway registers upstream (SIPp challenging with 401)."""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.peers import PeerGroup
from tests.peers.appliance import Appliance
from tests.peers.baresip import Account, Baresip
from tests.peers.sipp import Sipp

pytestmark = pytest.mark.peers
HOST = "127.0.0.1"

USERS = """
[sip]
listen = "127.0.0.1:0"
domain = "127.0.0.1"
[control]
listen = "127.0.0.1:0"
password = "pw"
[[users]]
id = "1001"
password = "agent-1001-pw"
"""


def test_phones_register_with_configured_passwords_and_reload_adds_a_user(tmp_path: Path) -> None:
    app = Appliance(tmp_path, config=USERS)
    try:
        with PeerGroup(tmp_path) as peers:
            app.wait_notify("READY=1")
            registrar = f"{HOST}:{app.sip_port}"
            good = peers.add(Baresip(tmp_path, "good", Account("1001", registrar=registrar,
                                                                password="agent-1001-pw"), lifetime=30))
            bad = peers.add(Baresip(tmp_path, "bad", Account("1002", registrar=registrar,
                                                              password="agent-1002-pw"), lifetime=30))
            good.start()
            bad.start()
            good.wait_registered(10.0)
            app.wait_log("registration: 1001 has 1 contact(s)")
            # 1002 is not a user yet: refused exactly like a wrong password
            assert _wait(lambda: bad.reg_status().get(bad.aor) == "ERR"), bad.log_tail()
            assert "registration: 1002" not in app.log()
            # the integrator adds 1002 and reloads: no restart; the phone now gets in, and 1001 stays
            app.config_path.write_text(USERS + '[[users]]\nid = "1002"\npassword = "agent-1002-pw"\n')
            app.proc.send_signal(signal.SIGHUP)
            app.wait_notify("RELOADING=1")
            app.wait_notify("READY=1")
            late = peers.add(Baresip(tmp_path, "late", Account("1002", registrar=registrar,
                                                                password="agent-1002-pw"), lifetime=30))
            late.start()
            late.wait_registered(10.0)
            app.wait_log("registration: 1002 has 1 contact(s)")
            assert good.registered()
    finally:
        rc, out = app.stop()
    assert rc == 0, out
    for secret in ("agent-1001-pw", "agent-1002-pw", "pw"):
        assert secret not in out


def _wait(cond, timeout: float = 10.0) -> bool:
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_configured_gateway_registers_upstream(tmp_path: Path) -> None:
    with PeerGroup(tmp_path) as peers:
        pbx = peers.add(Sipp(tmp_path, "uas_auth_register", name="pbx", calls=1, timeout=20,
                             keys={"realm": "pbx", "user": "earshot", "password": "gw-pass", "expires": "300"}))
        pbx.start()
        app = Appliance(tmp_path, config=USERS + f"""
[[gateways]]
name = "pbx"
host = "{pbx.addr}"
username = "earshot"
password = "gw-pass"
""")
        try:
            app.wait_notify("READY=1")
            app.wait_log("gateway pbx: registered")
            result = pbx.wait(timeout=30)
            assert result.successful == 1, result.output
        finally:
            rc, out = app.stop()
        assert rc == 0, out
        assert "gw-pass" not in out


def test_baresip_registers_over_tls_to_the_self_signed_listener(tmp_path: Path) -> None:
    from firmware.sip import tls
    from tests.peers.ports import free_port
    tls_port = free_port(1, udp=False)
    app = Appliance(tmp_path, config=USERS.replace('domain = "127.0.0.1"\n',
                                                   f'domain = "127.0.0.1"\ntls_listen = "{HOST}:{tls_port}"\n'))
    try:
        with PeerGroup(tmp_path) as peers:
            app.wait_notify("READY=1")
            cert = app.state_dir / tls.CERT_NAME        # generated on first start, fingerprint logged
            app.wait_log(f"SIP over TLS listening on {HOST}:{tls_port}")
            assert tls.fingerprint(cert) in app.log()
            # the TLS port speaks only TLS, so a registration there proves the transport
            phone = peers.add(Baresip(tmp_path, "secure", Account("1001", registrar=f"{HOST}:{tls_port}",
                                                                  password="agent-1001-pw", transport="tls"),
                                      lifetime=30, tls_cafile=cert))
            phone.start()
            phone.wait_registered(10.0)
            app.wait_log("registration: 1001 has 1 contact(s)")
            assert "{0/TLS/v4} 200 OK" in phone.log_tail()   # baresip's own account of the transport
    finally:
        rc, out = app.stop()
    assert rc == 0, out
