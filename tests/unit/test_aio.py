"""firmware.aio: the MicroPython-compatible asyncio subset, and the rule that the control plane uses only it."""

import ast
import asyncio
import threading
from pathlib import Path

from firmware import aio

ROOT = Path(__file__).resolve().parents[2]
CONTROL_PLANE = ["firmware/switch", "firmware/panel.py", "firmware/control", "firmware/provision.py"]
# What MicroPython's asyncio lacks (reference/embedded-platform.md §1.1).
FORBIDDEN = {"Queue", "Semaphore", "BoundedSemaphore", "Condition", "TaskGroup", "timeout", "to_thread",
             "call_later", "call_at", "call_soon", "run_in_executor", "create_datagram_endpoint", "Future",
             "create_future", "add_done_callback", "shield", "as_completed", "all_tasks", "get_running_loop",
             "sock_recvfrom", "add_reader"}
# CPython-only modules the plain-logic modules must not import.
CPYTHON_ONLY = {"asyncio", "threading", "concurrent", "multiprocessing", "selectors"}


def control_plane_files() -> list[Path]:
    files = []
    for rel in CONTROL_PLANE:
        p = ROOT / rel
        files += sorted(p.rglob("*.py")) if p.is_dir() else ([p] if p.exists() else [])
    return files


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in CPYTHON_ONLY]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in CPYTHON_ONLY:
            found.append(f"from {node.module} import …")
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN:
            found.append(f".{node.attr}")
    return [f"{path.relative_to(ROOT)}:{v}" for v in found]


def test_control_plane_uses_only_the_micropython_subset():
    bad = [v for f in control_plane_files() for v in violations(f)]
    assert bad == []


def test_the_checker_catches_a_violation(tmp_path):
    f = ROOT / "firmware" / "_subset_probe_tmp.py"
    try:
        f.write_text("import asyncio\nasync def x(loop):\n    loop.call_later(1, print)\n    q = asyncio.Queue()\n")
        assert sorted(v.split(":", 1)[1] for v in violations(f)) == [".Queue", ".call_later", "import asyncio"]
    finally:
        f.unlink()


def test_aio_exports_no_non_portable_names():
    assert not FORBIDDEN & set(dir(aio))


def test_ticks_wrap_like_micropython():
    period = 1 << 29
    t = period - 5
    later = aio.ticks_add(t, 10)
    assert later == 5
    assert aio.ticks_diff(later, t) == 10 and aio.ticks_diff(t, later) == -10


def test_mailbox_fifo_bound_and_wakeup():
    async def main():
        box = aio.Mailbox(maxlen=3)
        got = []

        async def consumer():
            for _ in range(3):
                got.append(await box.get())

        task = aio.create_task(consumer())
        await aio.sleep(0)
        for d in "12345":
            box.put(d)
        await aio.wait_for(task, 5)
        return got, box.dropped

    got, dropped = aio.run(main())
    assert got == ["3", "4", "5"] and dropped == 2  # the oldest are dropped, order kept


def test_threadsafeflag_set_from_a_library_thread():
    async def main():
        flag = aio.ThreadSafeFlag()
        threading.Thread(target=flag.set).start()
        await aio.wait_for_ms(flag.wait(), 5000)
        return flag._event.is_set()

    assert aio.run(main()) is False  # self-clearing after the wait
