"""Hardware adapters through their simulated twins, and pyaudio through ALSA file/null PCMs."""
import asyncio
import functools


def aiotest(fn):
    """Run an ``async def`` test on a fresh event loop (the suite has no pytest-asyncio)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))
    return wrapper


class FakeTap:
    """What the eavesdrop state machine steers, without media."""

    def __init__(self, target, mode: int, listen_gain_db: float) -> None:
        self.target = target
        self.mode = mode
        self.gains: list[float] = [listen_gain_db]
        self.detached = False

    def set_mode(self, mode: int) -> None:
        self.mode = mode

    def drop_whisper(self) -> None:
        pass

    def play_confirm(self, mode: int) -> None:
        pass

    def set_gains(self, listen, whisper) -> None:
        if listen is not None:
            self.gains.append(listen)

    def detach(self) -> None:
        self.detached = True


class FakeHub:
    """The eavesdrop media interface (TapHub's) without media: every answered target is tappable."""

    def __init__(self) -> None:
        self.taps: list[FakeTap] = []

    def ready(self, target) -> bool:
        return True

    def attach(self, target, spy, *, mode, listen_gain_db, **kw) -> FakeTap:
        self.taps.append(FakeTap(target, mode, listen_gain_db))
        return self.taps[-1]


def write_asoundrc(directory, rates=(8000, 16000, 48000)) -> str:
    """ALSA config for pyaudio without a sound card (test-peers.md §7): per rate a PCM
    ``handset<rate>`` whose capture reads ``mic_<rate>.raw`` and whose playback writes
    ``played_<rate>.raw`` (both raw native int16), over the ``null`` PCM. Every infile exists
    (silence until a test writes it): PortAudio 19.6 aborts the process (an assert in
    BuildDeviceList) when a PCM's capture fails to open while it enumerates devices.
    Returns the path for ALSA_CONFIG_PATH (standalone: alsa.conf is not loaded)."""
    # PortAudio 19.6 also asserts when there is no "default" PCM at all
    lines = ['pcm.null { type null }', 'pcm.default { type plug; slave.pcm "null" }']
    for rate in rates:
        with open(f"{directory}/mic_{rate}.raw", "wb") as f:
            f.write(bytes(rate // 25))
        lines.append(
            f'pcm.handset{rate} {{ type asym\n'
            f'  playback.pcm {{ type file; slave.pcm "null"; file "{directory}/played_{rate}.raw"; format "raw" }}\n'
            f'  capture.pcm {{ type file; slave.pcm "null"; file "/dev/null"; infile "{directory}/mic_{rate}.raw"; '
            f'format "raw" }} }}')
    path = f"{directory}/asoundrc"
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
