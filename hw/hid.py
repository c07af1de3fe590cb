"""The handset's hook switch over USB HID (``[handset] hook = "hid"``).

USB telephony handsets report the hook as an input bit: usage page Telephony (0x0B), usage Hook
Switch (0x20). Linux exposes each HID interface as ``/dev/hidrawN``; its report descriptor is at
``/sys/class/hidraw/hidrawN/device/report_descriptor`` and its product name (``HID_NAME=``) in
``.../device/uevent``. This module finds that bit (``parse_hook``), picks the hidraw node of the
handset (``find_hook_device``) and follows it (``HidHook``): ``on_change(off_hook)`` on changes only.
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("earshot.handset.hid")

SYSFS_ROOT = "/sys/class/hidraw"
DEV_ROOT = "/dev"
TELEPHONY_PAGE = 0x0B
HOOK_SWITCH = 0x20
MAX_REPORT = 4096            # hidraw hands one report per read(); none is longer than this

# item prefixes (HID 1.11 §6.2.2): tag in bits 7..4, type in 3..2 (0 main, 1 global, 2 local)
_MAIN, _GLOBAL, _LOCAL = 0, 1, 2
_INPUT, _OUTPUT, _FEATURE, _COLLECTION, _END_COLLECTION = 0x8, 0x9, 0xB, 0xA, 0xC
_USAGE_PAGE, _REPORT_SIZE, _REPORT_ID, _REPORT_COUNT, _PUSH, _POP = 0x0, 0x7, 0x8, 0x9, 0xA, 0xB
_USAGE, _USAGE_MIN, _USAGE_MAX = 0x0, 0x1, 0x2
_LONG_ITEM = 0xFE


class HidDescriptorError(ValueError):
    """A report descriptor that is malformed or has no Telephony Hook Switch input."""


class HidDeviceNotFound(LookupError):
    """No hidraw node matches the handset's name and reports a hook switch."""


@dataclass(frozen=True)
class HookLayout:
    """Where the hook switch sits: in input report ``report_id`` (0: the device uses no report ids,
    so reports carry no id byte), ``bit_size`` bits from bit ``bit_offset`` of the report data (after
    the id byte, LSB first). ``input_ids`` are all input report ids the descriptor declares."""

    report_id: int
    bit_offset: int
    bit_size: int
    input_ids: frozenset[int]

    @property
    def min_bytes(self) -> int:
        """Report data bytes needed to read the hook bit (the id byte not counted)."""
        return (self.bit_offset + self.bit_size + 7) // 8

    def off_hook(self, report: bytes) -> bool | None:
        """The hook state in one report; None when the report is not the hook's (another id)."""
        data = report
        if self.report_id:
            if report[0] != self.report_id:
                return None
            data = report[1:]
        value = int.from_bytes(data[:self.min_bytes], "little") >> self.bit_offset
        return value & ((1 << self.bit_size) - 1) != 0


@dataclass
class _Globals:
    usage_page: int = 0
    report_size: int = 0
    report_id: int = 0
    report_count: int = 0


def _items(desc: bytes, device: str):
    """(type, tag, unsigned value) per short item; long items are skipped (none is defined)."""
    i, n = 0, len(desc)
    while i < n:
        prefix = desc[i]
        if prefix == _LONG_ITEM:
            if i + 2 >= n:
                raise HidDescriptorError(f"{device}: report descriptor truncated in a long item at byte {i}")
            i += 3 + desc[i + 1]
            continue
        size = (0, 1, 2, 4)[prefix & 3]
        if i + 1 + size > n:
            raise HidDescriptorError(f"{device}: report descriptor truncated at byte {i} "
                                     f"(item 0x{prefix:02x} needs {size} data bytes)")
        yield (prefix >> 2) & 3, prefix >> 4, int.from_bytes(desc[i + 1:i + 1 + size], "little"), size
        i += 1 + size
    if i > n:
        raise HidDescriptorError(f"{device}: report descriptor truncated in a long item")


def parse_hook(descriptor: bytes, device: str = "HID device") -> HookLayout:
    """Find the Telephony Hook Switch input in a HID report descriptor (HID 1.11 §6.2.2).

    Raises HidDescriptorError naming ``device`` when the descriptor is truncated, pops an empty
    stack, or has no hook switch as a variable data input.
    """
    g = _Globals()
    stack: list[_Globals] = []
    usages: list[tuple[int | None, int]] = []      # (page from a 4-byte usage, else None; id)
    umin: tuple[int | None, int] | None = None
    bits: dict[int, int] = {}                      # input bits so far, per report id
    found: tuple[int, int, int] | None = None
    for kind, tag, value, size in _items(bytes(descriptor), device):
        if kind == _GLOBAL:
            if tag == _USAGE_PAGE:
                g.usage_page = value
            elif tag == _REPORT_SIZE:
                g.report_size = value
            elif tag == _REPORT_ID:
                g.report_id = value
            elif tag == _REPORT_COUNT:
                g.report_count = value
            elif tag == _PUSH:
                stack.append(_Globals(**vars(g)))
            elif tag == _POP:
                if not stack:
                    raise HidDescriptorError(f"{device}: report descriptor pops an empty global stack")
                g = stack.pop()
        elif kind == _LOCAL:
            usage = ((value >> 16, value & 0xFFFF) if size == 4 else (None, value))
            if tag == _USAGE:
                usages.append(usage)
            elif tag == _USAGE_MIN:
                umin = usage
            elif tag == _USAGE_MAX and umin is not None:
                usages.extend((umin[0], u) for u in range(umin[1], usage[1] + 1))
                umin = None
        elif kind == _MAIN:
            if tag == _INPUT:
                offset = bits.get(g.report_id, 0)
                constant, variable = value & 1, value & 2
                if found is None and not constant and variable and usages:
                    for k in range(g.report_count):
                        page, uid = usages[min(k, len(usages) - 1)]   # the last usage repeats
                        if (g.usage_page if page is None else page, uid) == (TELEPHONY_PAGE, HOOK_SWITCH):
                            found = (g.report_id, offset + k * g.report_size, g.report_size)
                            break
                bits[g.report_id] = offset + g.report_size * g.report_count
            usages, umin = [], None                # every main item ends the local state
    if found is None or found[2] == 0:
        raise HidDescriptorError(f"{device}: report descriptor has no Telephony Hook Switch input "
                                 f"(usage page 0x{TELEPHONY_PAGE:02X}, usage 0x{HOOK_SWITCH:02X})")
    return HookLayout(found[0], found[1], found[2], frozenset(bits))


# --- finding the handset's hidraw node ------------------------------------------------------------

def _hid_name(node_dir: str) -> str:
    try:
        with open(os.path.join(node_dir, "device", "uevent"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("HID_NAME="):
                    return line[len("HID_NAME="):].strip()
    except OSError:
        pass
    return ""


def _node_number(name: str) -> tuple[int, str]:
    digits = name[len("hidraw"):]
    return (int(digits) if digits.isdigit() else 1 << 30, name)


def hook_layout(path: str, sysfs_root: str = SYSFS_ROOT) -> HookLayout:
    """The hook layout of hidraw node ``path`` (``/dev/hidrawN``), from its sysfs descriptor."""
    node = os.path.basename(path)
    node_dir = os.path.join(sysfs_root, node)
    label = f"{node} ({_hid_name(node_dir) or 'no HID_NAME'})"
    try:
        with open(os.path.join(node_dir, "device", "report_descriptor"), "rb") as f:
            desc = f.read()
    except OSError as e:
        raise HidDescriptorError(f"{label}: cannot read the report descriptor: {e}") from e
    return parse_hook(desc, label)


def find_hook_device(name_hint: str, sysfs_root: str = SYSFS_ROOT, dev_root: str = DEV_ROOT) -> str:
    """The ``/dev/hidrawN`` whose HID_NAME contains ``name_hint`` (case-insensitive; "" matches any)
    and whose descriptor has a Telephony Hook Switch; the lowest N wins. HidDeviceNotFound if none."""
    try:
        nodes = sorted((n for n in os.listdir(sysfs_root) if n.startswith("hidraw")), key=_node_number)
    except OSError:
        nodes = []
    seen: list[str] = []
    for node in nodes:
        name = _hid_name(os.path.join(sysfs_root, node))
        if name_hint.lower() not in name.lower():
            seen.append(f"{node} {name!r}")
            continue
        try:
            hook_layout(node, sysfs_root)
        except HidDescriptorError as e:
            seen.append(f"{node} {name!r}: {str(e).split(': ', 1)[-1]}")
            continue
        return os.path.join(dev_root, node)
    raise HidDeviceNotFound(f"no HID device named like {name_hint!r} with a Telephony Hook Switch under "
                            f"{sysfs_root} (seen: {'; '.join(seen) or 'no hidraw devices'})")


# --- following the hook ----------------------------------------------------------------------------

class HidHook:
    """Follows the hook switch on a hidraw node: ``on_change(off_hook)`` when the state changes.

    ``path`` is a device path (opened read-only and closed here) or an open fd (borrowed: the
    caller closes it). Reads run as an asyncio reader on the running loop. Reports too short for
    the hook bit, or with an id the descriptor does not declare, are ignored and counted; a
    vanished device (EIO, ENODEV, end of file) is logged once and the hook stays as it was.
    """

    def __init__(self, path: str | int, layout: HookLayout, on_change: Callable[[bool], Any], *,
                 initial: bool = False) -> None:
        self.path = path
        self.layout = layout
        self.on_change = on_change
        self.off_hook = initial
        self._fd: int | None = None
        self._owns_fd = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.vanished = False
        self.stats = {"reports": 0, "changes": 0, "garbage": 0, "other": 0}

    def __repr__(self) -> str:
        return f"<HidHook {self.path} {'off' if self.off_hook else 'on'}-hook>"

    def start(self) -> None:
        """Open the node and start reading (OSError if it cannot be opened)."""
        if self._fd is not None:
            return
        if isinstance(self.path, int):
            fd = self.path
            os.set_blocking(fd, False)
        else:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._owns_fd = True
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._readable)

    async def hold(self) -> None:
        """Run until cancelled, then close (a task's lifetime is the hook's)."""
        self.start()
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self.close()

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(fd)
        if self._owns_fd:
            os.close(fd)

    @property
    def running(self) -> bool:
        return self._fd is not None

    def _readable(self) -> None:
        if self._fd is None:
            return
        try:
            report = os.read(self._fd, MAX_REPORT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._vanish(os.strerror(e.errno) if e.errno else str(e))
            return
        if not report:
            self._vanish("end of file")
            return
        self.feed(report)

    def _vanish(self, why: str) -> None:
        if not self.vanished:
            self.vanished = True
            log.error("handset HID %s vanished (%s): the hook stays %s-hook", self.path, why,
                      "off" if self.off_hook else "on")
        self.close()

    def feed(self, report: bytes) -> None:
        """One input report as hidraw delivers it (the id byte first when the device uses ids)."""
        lay = self.layout
        if not report:
            self.stats["garbage"] += 1
            return
        if lay.report_id and report[0] != lay.report_id:
            self.stats["other" if report[0] in lay.input_ids else "garbage"] += 1
            return
        if len(report) - (1 if lay.report_id else 0) < lay.min_bytes:
            self.stats["garbage"] += 1           # too short to hold the hook bit
            return
        self.stats["reports"] += 1
        state = lay.off_hook(report)
        if state is None or state == self.off_hook:
            return                               # many devices repeat the state in every report
        self.off_hook = state
        self.stats["changes"] += 1
        log.info("handset HID hook: %s-hook", "off" if state else "on")
        try:
            self.on_change(state)
        except Exception:                        # a failing consumer must not stop the reader
            log.exception("handset HID hook: on_change(%s) failed", state)
