"""hw.hid: the Telephony Hook Switch found in HID report descriptors (built byte by byte per HID 1.11),
the handset's hidraw node picked from a fake sysfs tree, and the hook followed over a stand-in fd:
a SOCK_SEQPACKET socket pair (one report per read, as hidraw), a pipe, and a FIFO for /dev/hidrawN."""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import pytest

from cython_mixer import FRAME_BYTES
from firmware.media.clock import ManualTime, MediaClock
from firmware.switch import HangupCause, Switch
from hw import hid
from hw.audio import SimAudio
from hw.handset import CHANNEL_NAME, Handset
from hw.hid import HidDescriptorError, HidDeviceNotFound, HidHook, HookLayout, find_hook_device, parse_hook
from tests.hw import aiotest

# (a) a typical telephony handset: hook switch and phone mute in report 1, volume keys in report 2
HANDSET = bytes([
    0x05, 0x0B,        # Usage Page (Telephony)
    0x09, 0x05,        # Usage (Headset)
    0xA1, 0x01,        # Collection (Application)
    0x85, 0x01,        #   Report ID (1)
    0x15, 0x00,        #   Logical Minimum (0)
    0x25, 0x01,        #   Logical Maximum (1)
    0x09, 0x20,        #   Usage (Hook Switch)
    0x09, 0x2F,        #   Usage (Phone Mute)
    0x75, 0x01,        #   Report Size (1)
    0x95, 0x02,        #   Report Count (2)
    0x81, 0x02,        #   Input (Data,Var,Abs)         bits 0-1
    0x95, 0x06,        #   Report Count (6)
    0x81, 0x01,        #   Input (Const,Array,Abs)      bits 2-7: padding
    0xC0,              # End Collection
    0x05, 0x0C,        # Usage Page (Consumer)
    0x09, 0x01,        # Usage (Consumer Control)
    0xA1, 0x01,        # Collection (Application)
    0x85, 0x02,        #   Report ID (2)
    0x09, 0xE9,        #   Usage (Volume Increment)
    0x09, 0xEA,        #   Usage (Volume Decrement)
    0x95, 0x02,        #   Report Count (2)
    0x81, 0x02,        #   Input (Data,Var,Abs)
    0x95, 0x06,        #   Report Count (6)
    0x81, 0x01,        #   Input (Const,Array,Abs)
    0xC0,              # End Collection
])

# (b) the hook later in a multi-field report 3: a keypad array, pushed consumer/vendor fields, an
# output (LEDs, not in the input report) and after Pop the flash/hook/redial bits
DESK_PHONE = bytes([
    0x05, 0x0C, 0x09, 0x01, 0xA1, 0x01,      # Consumer Control collection
    0x85, 0x04,                              #   Report ID (4)
    0x09, 0xE0, 0x15, 0x00, 0x26, 0xFF, 0x00,  # Usage (Volume), Logical 0..255
    0x75, 0x10, 0x95, 0x01, 0x81, 0x02,      #   16 bits Input (Data,Var,Abs) in report 4 only
    0xC0,
    0x05, 0x0B,        # Usage Page (Telephony)
    0x09, 0x01,        # Usage (Phone)
    0xA1, 0x01,        # Collection (Application)
    0x85, 0x03,        #   Report ID (3)
    0x19, 0xB0,        #   Usage Minimum (Phone Key 0)
    0x29, 0xBB,        #   Usage Maximum (Phone Key D)
    0x15, 0x01,        #   Logical Minimum (1)
    0x25, 0x0C,        #   Logical Maximum (12)
    0x75, 0x04,        #   Report Size (4)
    0x95, 0x01,        #   Report Count (1)
    0x81, 0x00,        #   Input (Data,Array,Abs)       bits 0-3: the keypad
    0xA4,              #   Push
    0x05, 0x0C,        #     Usage Page (Consumer)
    0x09, 0xE9,        #     Usage (Volume Increment)
    0x09, 0xEA,        #     Usage (Volume Decrement)
    0x15, 0x00,        #     Logical Minimum (0)
    0x25, 0x01,        #     Logical Maximum (1)
    0x75, 0x01,        #     Report Size (1)
    0x95, 0x02,        #     Report Count (2)
    0x81, 0x02,        #     Input (Data,Var,Abs)       bits 4-5
    0x06, 0x00, 0xFF,  #     Usage Page (Vendor 0xFF00)
    0x09, 0x01,        #     Usage (1)
    0x26, 0xFF, 0x00,  #     Logical Maximum (255)
    0x75, 0x08,        #     Report Size (8)
    0x95, 0x01,        #     Report Count (1)
    0x81, 0x02,        #     Input (Data,Var,Abs)       bits 6-13
    0x05, 0x08,        #     Usage Page (LED)
    0x09, 0x17,        #     Usage (Off-Hook)
    0x09, 0x09,        #     Usage (Mute)
    0x75, 0x01,        #     Report Size (1)
    0x95, 0x02,        #     Report Count (2)
    0x91, 0x02,        #     Output (Data,Var,Abs)      not in the input report
    0xB4,              #   Pop: Telephony page, Report Size 4, Report Count 1, Report ID 3
    0x15, 0x00,        #   Logical Minimum (0)
    0x25, 0x01,        #   Logical Maximum (1)
    0x09, 0x21,        #   Usage (Flash)
    0x09, 0x20,        #   Usage (Hook Switch)
    0x09, 0x24,        #   Usage (Redial)
    0x75, 0x01,        #   Report Size (1)
    0x95, 0x03,        #   Report Count (3)
    0x81, 0x02,        #   Input (Data,Var,Abs)         bits 14-16: flash, hook, redial
    0x95, 0x07,        #   Report Count (7)
    0x81, 0x03,        #   Input (Const,Var,Abs)        bits 17-23
    0xC0,              # End Collection
])

# volume keys only (a USB sound card's buttons): no hook switch
NO_HOOK = bytes([
    0x05, 0x0C, 0x09, 0x01, 0xA1, 0x01,
    0x15, 0x00, 0x25, 0x01, 0x09, 0xE9, 0x09, 0xEA, 0x75, 0x01, 0x95, 0x02, 0x81, 0x02,
    0x05, 0x0B, 0x09, 0x20, 0x95, 0x01, 0x81, 0x03,   # a hook switch usage on a constant input
    0x95, 0x05, 0x81, 0x01,
    0xC0,
])


def test_a_typical_handset_has_the_hook_at_bit_0_of_report_1() -> None:
    lay = parse_hook(HANDSET)
    assert lay == HookLayout(report_id=1, bit_offset=0, bit_size=1, input_ids=frozenset({1, 2}))
    assert lay.off_hook(b"\x01\x01") is True
    assert lay.off_hook(b"\x01\x02") is False          # phone mute (bit 1) alone
    assert lay.off_hook(b"\x02\x01") is None           # a volume key report


def test_the_hook_after_a_keypad_array_and_pushed_fields_is_bit_15_of_report_3() -> None:
    lay = parse_hook(DESK_PHONE)
    assert (lay.report_id, lay.bit_offset, lay.bit_size) == (3, 15, 1)
    assert lay.input_ids == frozenset({3, 4}) and lay.min_bytes == 2
    assert lay.off_hook(bytes([3, 0x00, 0x80, 0x00])) is True
    assert lay.off_hook(bytes([3, 0xFF, 0x7F, 0xFF])) is False   # every other field set


def test_a_device_without_report_ids_and_a_4_byte_usage() -> None:
    desc = bytes([0x05, 0x0C, 0x09, 0x01, 0xA1, 0x01,
                  0x75, 0x01, 0x95, 0x03, 0x81, 0x01,             # 3 constant bits first
                  0x0B, 0x20, 0x00, 0x0B, 0x00,                   # Usage (Telephony:Hook Switch)
                  0x95, 0x01, 0x81, 0x06,                         # Input (Data,Var,Rel)
                  0x95, 0x04, 0x81, 0x01, 0xC0])
    lay = parse_hook(desc)
    assert (lay.report_id, lay.bit_offset) == (0, 3)
    assert lay.off_hook(b"\x08") is True and lay.off_hook(b"\xf7") is False


def test_descriptors_without_a_hook_or_malformed_raise_naming_the_device() -> None:
    with pytest.raises(HidDescriptorError, match=r"hidraw1 \(USB Audio\): .*no Telephony Hook Switch"):
        parse_hook(NO_HOOK, "hidraw1 (USB Audio)")
    with pytest.raises(HidDescriptorError, match=r"hidraw1: .*truncated"):
        parse_hook(HANDSET[:-2] + b"\x26\x01", "hidraw1")
    with pytest.raises(HidDescriptorError, match="pops an empty"):
        parse_hook(b"\xb4" + HANDSET, "hidraw1")


def make_sysfs(root: Path, devices: dict[str, tuple[str, bytes]]) -> tuple[str, str]:
    """A fake /sys/class/hidraw and /dev: per node a uevent with HID_NAME, a descriptor and a FIFO."""
    sysfs, dev = root / "sys", root / "dev"
    dev.mkdir(parents=True, exist_ok=True)
    for node, (name, desc) in devices.items():
        d = sysfs / node / "device"
        d.mkdir(parents=True)
        (d / "uevent").write_text(f"DRIVER=hid-generic\nHID_ID=0003:00000B0E:00000412\nHID_NAME={name}\n")
        (d / "report_descriptor").write_bytes(desc)
        os.mkfifo(dev / node)
    return str(sysfs), str(dev)


def test_the_node_is_chosen_by_name_and_by_having_a_hook(tmp_path: Path) -> None:
    sysfs, dev = make_sysfs(tmp_path, {
        "hidraw0": ("Logitech USB Keyboard", NO_HOOK),
        "hidraw1": ("C-Media Electronics Inc. USB Audio Device", NO_HOOK),
        "hidraw10": ("Jabra SPEAK 410 USB", HANDSET),
        "hidraw2": ("Jabra SPEAK 410 USB", DESK_PHONE),
    })
    assert find_hook_device("jabra speak", sysfs, dev) == os.path.join(dev, "hidraw2")  # lowest N
    assert find_hook_device("", sysfs, dev) == os.path.join(dev, "hidraw2")
    assert hid.hook_layout(os.path.join(dev, "hidraw10"), sysfs).bit_offset == 0
    with pytest.raises(HidDeviceNotFound, match=r"'USB Audio'.*hidraw1 'C-Media.*no Telephony Hook Switch"):
        find_hook_device("USB Audio", sysfs, dev)
    with pytest.raises(HidDeviceNotFound, match="no hidraw devices"):
        find_hook_device("x", str(tmp_path / "nothing"), dev)


class Events:
    """on_change into a queue the test awaits."""

    def __init__(self) -> None:
        self.q: asyncio.Queue[bool] = asyncio.Queue()

    def __call__(self, off_hook: bool) -> None:
        self.q.put_nowait(off_hook)

    async def next(self) -> bool:
        return await asyncio.wait_for(self.q.get(), 5)


@aiotest
async def test_changes_only_are_reported_and_garbage_is_ignored_and_counted() -> None:
    host, device = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # one report per read
    events = Events()
    hook = HidHook(device.fileno(), parse_hook(HANDSET), events)
    hook.start()
    for report in (b"\x01\x00", b"\x01\x02",           # on-hook (mute toggled): no change
                   b"\x01\x01", b"\x01\x01", b"\x01\x03",  # off-hook, repeated
                   b"\x07\xff", b"\x01",                # unknown report id, too short: garbage
                   b"\x02\x01",                         # a volume key: another report
                   b"\x01\x00"):                        # on-hook
        host.send(report)
    assert await events.next() is True
    assert await events.next() is False
    assert events.q.empty() and hook.off_hook is False
    hook.feed(b"")                                       # an empty report, handed in directly
    assert hook.stats == {"reports": 6, "changes": 2, "garbage": 3, "other": 1}
    hook.close()
    hook.close()                                         # idempotent; the fd is borrowed
    assert not hook.running and device.fileno() >= 0
    host.close()
    device.close()


@aiotest
async def test_a_vanished_device_is_logged_once_and_the_hook_stays(caplog: pytest.LogCaptureFixture) -> None:
    r, w = os.pipe()
    events = Events()
    hook = HidHook(r, parse_hook(DESK_PHONE), events)
    vanished = asyncio.get_running_loop().create_future()
    real_vanish = hook._vanish

    def vanish(why: str) -> None:
        real_vanish(why)
        vanished.set_result(why)
    hook._vanish = vanish                                # type: ignore[method-assign]
    hook.start()
    os.write(w, bytes([3, 0x00, 0x80, 0x00]))
    assert await events.next() is True
    with caplog.at_level(logging.ERROR, logger="earshot.handset.hid"):
        os.close(w)                                      # the device is unplugged
        assert await asyncio.wait_for(vanished, 5) == "end of file"
    assert hook.vanished and not hook.running and hook.off_hook is True
    assert [rec.getMessage() for rec in caplog.records] == [f"handset HID {r} vanished (end of file): "
                                                        "the hook stays off-hook"]
    os.close(r)


@aiotest
async def test_a_hid_handset_goes_off_hook_runs_its_destination_and_hangs_up(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    sysfs, dev_root = make_sysfs(tmp_path, {"hidraw0": ("Logitech USB Keyboard", NO_HOOK),
                                            "hidraw3": ("Generic USB Handset", HANDSET)})
    monkeypatch.setattr(hid, "SYSFS_ROOT", sysfs)
    monkeypatch.setattr(hid, "DEV_ROOT", dev_root)
    writer = os.open(os.path.join(dev_root, "hidraw3"), os.O_RDWR | os.O_NONBLOCK)  # the device side
    audio = SimAudio(8000)
    audio.name = "usb handset"                           # the [handset] device
    audio.open()
    time_ = ManualTime()
    clock = MediaClock(time_source=time_)
    handset = Handset(Switch(), audio, clock, hook="hid", destination="9197")   # a 1 kHz tone
    tasks: asyncio.Queue[asyncio.Task | None] = asyncio.Queue()
    real_set_hook = handset.set_hook
    handset.set_hook = lambda off: tasks.put_nowait(real_set_hook(off))  # type: ignore[method-assign]
    handset.start()
    assert handset.hook == "hid" and handset.hid_hook.path == os.path.join(dev_root, "hidraw3")

    os.write(writer, b"\x01\x01")                       # lifted
    ch = await (await asyncio.wait_for(tasks.get(), 5))
    assert ch is handset.channel and ch.name == CHANNEL_NAME and ch.is_answered and ch.up
    assert ch.get_variable("destination_number") == "9197"
    for _ in range(10):                                  # the dialplan's tone reaches the earpiece
        time_.advance(0.02)
        clock.poll()
        for _ in range(5):
            await asyncio.sleep(0)
    assert any(audio.played[-FRAME_BYTES:])

    os.write(writer, b"\x01\x00")                       # hung up
    await (await asyncio.wait_for(tasks.get(), 5))
    assert not ch.up and ch.hangup_cause is HangupCause.NORMAL_CLEARING
    running = list(handset._tasks)
    await handset.stop()
    await asyncio.gather(*running, return_exceptions=True)
    assert not handset.hid_hook.running
    os.close(writer)
    audio.close()


@aiotest
async def test_no_hid_hook_found_logs_what_was_looked_for_and_falls_back_to_sim(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    sysfs, dev_root = make_sysfs(tmp_path, {"hidraw0": ("USB Handset speakerphone", NO_HOOK)})
    monkeypatch.setattr(hid, "SYSFS_ROOT", sysfs)
    monkeypatch.setattr(hid, "DEV_ROOT", dev_root)
    audio = SimAudio(8000)
    audio.name = "usb handset"
    handset = Handset(Switch(), audio, MediaClock(time_source=ManualTime()), hook="hid", destination="9196")
    with caplog.at_level(logging.ERROR, logger="earshot.handset"):
        handset.start()
    assert handset.hook == "sim"
    msg = caplog.records[-1].getMessage()
    assert "'usb handset'" in msg and "hidraw0" in msg and "no Telephony Hook Switch" in msg
    assert "falling back to the sim hook" in msg
    ch = await handset.set_hook(True)                   # the panel still drives the hook
    assert ch.up
    await handset.stop()
