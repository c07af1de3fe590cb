"""Wire the eavesdrop state machine into a switch: the ``eavesdrop`` and ``three_way`` applications.

    engine = register(switch, TapHub(media_engine.clock))

replaces the application slots (eavesdrop, three_way, userspy), and puts the engine on ``switch.eavesdrop`` (its ``modes()``
feeds the panel's LEDs, ``send_command(spy_uuid, "3")`` is the control socket's eavesdrop-command).
"""
from __future__ import annotations

from typing import Any

from .apps import resolve_sound
from .channel import HangupCause
from .eavesdrop import Eavesdrop


def register(switch: Any, media: Any, audit: Any = None) -> Eavesdrop:
    """Install eavesdrop on ``switch`` with ``media`` (a TapHub); ``audit`` defaults to the
    config's audit log file."""
    if audit is None:
        from firmware.audit import AuditLog, audit_path
        audit = AuditLog(audit_path(switch.config))
    engine = Eavesdrop(switch, media, audit, reject_cause=HangupCause.CALL_REJECTED)
    engine.sound_exists = lambda sound: resolve_sound(switch, sound) is not None
    switch.eavesdrop = engine
    switch.register_app("eavesdrop", engine.app_eavesdrop)
    switch.register_app("three_way", engine.app_three_way)
    switch.register_app("userspy", engine.app_userspy)
    return engine
