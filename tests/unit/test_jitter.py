"""cython_mixer.jitter: RTP jitter buffer (issue 2, part 3f)."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cython_mixer.jitter import (ACCEPTED, CONCEALED, DUPLICATE, FRAME, JUMP, LATE, RESET, SILENCE,
                                 WAITING, JitterBuffer, Kind, Put)

TS_STEP = 160


def payload(seq: int) -> bytes:
    """A 160-byte G.711-sized payload that names its own sequence number."""
    return seq.to_bytes(2, "big") * 80


def seq_of(p: bytes | None) -> int | None:
    return None if p is None else int.from_bytes(p[:2], "big")


def send(jb: JitterBuffer, k: int, start: int = 0, ts0: int = 0, marker: bool = False) -> Put:
    """Put the k-th frame of a stream whose first sequence number is `start`."""
    seq = (start + k) & 0xFFFF
    return jb.put(seq, (ts0 + k * TS_STEP) & 0xFFFFFFFF, payload(seq), marker)


@dataclass
class Tick:
    depth: int                     # depth seen by get(), before it took a frame
    seq: int | None                # sequence number of the payload returned
    kind: Kind
    stats: dict = field(repr=False)


def run(jb: JitterBuffer, arrivals: dict[int, list[int]], ticks: int, start: int = 0) -> list[Tick]:
    """Each tick: get() (the media clock), then the packets that arrive during that tick."""
    out = []
    for t in range(ticks):
        depth = jb.depth
        p, kind = jb.get()
        out.append(Tick(depth, seq_of(p), kind, jb.stats))
        for k in arrivals.get(t, []):
            send(jb, k, start)
    return out


def frames_out(ticks: list[Tick]) -> list[int]:
    return [t.seq for t in ticks if t.kind == FRAME]


def arrivals_at(times: list[tuple[float, int]]) -> dict[int, list[int]]:
    """Packets sent at fractional tick times arrive during the tick that contains them."""
    by_tick: dict[int, list[int]] = {}
    for when, k in sorted(times):
        by_tick.setdefault(int(when), []).append(k)
    return by_tick


# --- basic playout ------------------------------------------------------------------------------

@pytest.mark.parametrize("target", [2, 3])
def test_in_order_stream_passes_unchanged_with_target_latency(target: int) -> None:
    jb = JitterBuffer(target=target, payload_size=160)
    ticks = run(jb, {t: [t] for t in range(300)}, 300)
    assert [t.kind for t in ticks[:target]] == [WAITING] * target
    for t, tick in enumerate(ticks[target:], start=target):
        assert (tick.kind, tick.seq) == (FRAME, t - target)   # exactly `target` ticks late
        assert tick.depth == target
    s = jb.stats
    assert s["received"] == 300 and s["lost"] == s["concealed"] == s["drift_drops"] == 0


def test_put_then_get_order_plays_after_target_frames_are_buffered() -> None:
    jb = JitterBuffer(target=2)
    kinds = []
    for k in range(10):
        assert send(jb, k) == ACCEPTED
        p, kind = jb.get()
        kinds.append((kind, seq_of(p)))
    assert kinds[0] == (WAITING, None)
    assert kinds[1:] == [(FRAME, k) for k in range(9)]


def test_payload_is_returned_as_given() -> None:
    jb = JitterBuffer(target=1)
    data = bytearray(b"\x7f" * 160)
    jb.put(10, 0, data)
    data[0] = 0   # the buffer holds its own copy
    assert jb.get() == (b"\x7f" * 160, FRAME)


def test_reordering_within_the_window_is_restored() -> None:
    rng = random.Random(4)
    # every packet is delayed by up to 1.95 ticks: neighbours often arrive swapped
    times = [(k + rng.uniform(0, 1.95), k) for k in range(500)]
    by_tick = arrivals_at(times)
    assert any(sorted(v) != v for v in by_tick.values())   # the test really reorders
    jb = JitterBuffer(target=2)
    out = frames_out(run(jb, by_tick, 520))
    assert out == list(range(500))
    assert jb.stats["lost"] == jb.stats["late"] == 0


def test_initial_reordering_starts_at_the_earliest_frame() -> None:
    jb = JitterBuffer(target=3)
    for k in (2, 0, 1):
        assert send(jb, k) == ACCEPTED
    assert [seq_of(jb.get()[0]) for _ in range(3)] == [0, 1, 2]


def test_duplicates_dropped() -> None:
    jb = JitterBuffer(target=3)
    statuses = []
    for k in range(50):
        statuses.append(send(jb, k))
        statuses.append(send(jb, k))
        if k % 2 == 1:
            statuses.append(send(jb, k - 1))   # an older copy, still buffered
        jb.get()
    assert statuses.count(ACCEPTED) == 50 and statuses.count(DUPLICATE) == 75
    out = frames_out([Tick(0, seq_of(p), k, {}) for p, k in [jb.get() for _ in range(5)]])
    assert out == [48, 49]
    assert jb.stats["duplicates"] == 75
    assert send(jb, 3) == LATE   # a copy of a frame already played is late, not played twice


def test_single_loss_is_concealed_by_repeating_the_previous_frame() -> None:
    jb = JitterBuffer(target=2)
    ticks = run(jb, {t: [t] for t in range(100) if t != 40}, 100)
    assert [(t.kind, t.seq) for t in ticks[41:44]] == [(FRAME, 39), (CONCEALED, 39), (FRAME, 41)]
    assert jb.stats["lost"] == 1 and jb.stats["concealed"] == 1


def test_burst_loss_concealed_twice_then_silence() -> None:
    jb = JitterBuffer(target=2, max_conceal=2)
    lost = set(range(50, 55))
    ticks = run(jb, {t: [t] for t in range(100) if t not in lost}, 100)
    assert [(t.kind, t.seq) for t in ticks[52:58]] == [
        (CONCEALED, 49), (CONCEALED, 49), (SILENCE, None), (SILENCE, None), (SILENCE, None), (FRAME, 55)]
    s = jb.stats
    assert s["lost"] == 5 and s["concealed"] == 2 and s["silence"] == 3


def test_too_late_frame_dropped_and_its_slot_concealed() -> None:
    jb = JitterBuffer(target=2)
    by_tick = {t: [t] for t in range(60) if t != 20}
    by_tick[30].append(20)   # 10 ticks late: its playout time (tick 22) has passed
    ticks = run(jb, by_tick, 60)
    assert (ticks[22].kind, ticks[22].seq) == (CONCEALED, 19)
    assert frames_out(ticks) == [k for k in range(58) if k != 20]
    assert jb.stats["late"] == 1 and jb.stats["lost"] == 1


def test_sequence_and_timestamp_wrap_mid_stream() -> None:
    jb = JitterBuffer(target=2)
    start, ts0 = 65500, 2**32 - 50 * TS_STEP
    out = []
    for k in range(200):
        p, kind = jb.get()
        if kind == FRAME:
            out.append(seq_of(p))
        assert send(jb, k, start, ts0) == ACCEPTED
    assert out == [(start + k) & 0xFFFF for k in range(198)]
    assert 65535 in out and 0 in out
    s = jb.stats
    assert s["lost"] == s["resets"] == s["jumps"] == s["late"] == 0


def test_pause_without_loss_refills_then_resumes_in_order() -> None:
    # the sender stops for 10 ticks (no packets are lost, sequence numbers continue)
    jb = JitterBuffer(target=2)
    times = [(k if k < 50 else k + 10, k) for k in range(100)]
    ticks = run(jb, arrivals_at(times), 112)   # frame 99 plays at tick 111
    assert [t.kind for t in ticks[52:55]] == [CONCEALED, CONCEALED, SILENCE]
    assert frames_out(ticks) == list(range(len(frames_out(ticks))))
    assert jb.stats["lost"] == 0 and jb.stats["underruns"] == 1


# --- drift and bursts ---------------------------------------------------------------------------

@pytest.mark.parametrize("jitter", [0.0, 0.8])
def test_sender_1_percent_fast_is_corrected_one_frame_at_a_time(jitter: float) -> None:
    rng = random.Random(11)
    n = 5050
    times = [(k * 0.99 + rng.uniform(0, jitter), k) for k in range(n)]
    jb = JitterBuffer(target=2, max_depth=8)
    ticks = run(jb, arrivals_at(times), 5000)
    depths = [t.depth for t in ticks[10:]]
    assert max(depths) <= 4   # stays near target: 2, and never creeps up
    prev, corrections = ticks[0].stats, 0
    last_seq = None
    for t in ticks[1:]:
        step = t.stats["drift_drops"] - prev["drift_drops"]
        assert step in (0, 1)
        if t.kind == FRAME and last_seq is not None:
            assert t.seq - last_seq == 1 + step   # a correction skips exactly one frame
        if step:
            corrections += 1
        if t.kind == FRAME:
            last_seq = t.seq
        prev = t.stats
    s = jb.stats
    assert 40 <= corrections == s["drift_drops"] <= 55     # ~1 % of 5000 ticks
    assert s["dropped_overflow"] == s["lost"] == s["concealed"] == 0


def test_sender_1_percent_slow_gets_one_concealment_frame_at_a_time() -> None:
    times = [(k * 1.01, k) for k in range(4950)]
    jb = JitterBuffer(target=2)
    ticks = run(jb, arrivals_at(times), 5000)
    body = ticks[5:4990]
    assert frames_out(body) == list(range(frames_out(body)[0], frames_out(body)[-1] + 1))
    for a, b in zip(body, body[1:]):
        assert not (a.kind == CONCEALED and b.kind == CONCEALED)   # one insert at a time
    s = jb.stats
    assert 40 <= s["drift_inserts"] <= 55 and s["underruns"] == 0 and s["lost"] == 0


def test_burst_after_pause_never_exceeds_max_depth() -> None:
    jb = JitterBuffer(target=2, max_depth=8)
    # 100 frames in order, then the network holds 50 frames and delivers them at once
    times = [(k, k) for k in range(100)] + [(150, k) for k in range(100, 150)]
    times += [(k + 1, k) for k in range(150, 400)]
    by_tick = arrivals_at(times)
    out = []
    for t in range(400):
        out.append(jb.get())
        for k in by_tick.get(t, []):
            before = jb.stats["dropped_overflow"]
            send(jb, k)
            assert jb.depth <= 8
            assert jb.stats["dropped_overflow"] - before in (0, 1)   # the oldest, one at a time
    s = jb.stats
    assert s["dropped_overflow"] == 50 - 8
    seqs = [seq_of(p) for p, kind in out if kind == FRAME]
    assert seqs == sorted(set(seqs))
    assert jb.depth == 2   # the extra latency was drained again, one frame at a time
    assert s["drift_drops"] == 8 - 2


# --- resync -------------------------------------------------------------------------------------

def test_huge_jump_needs_confirmation_or_marker() -> None:
    jb = JitterBuffer(target=2)
    for k in range(10):
        send(jb, k)
        jb.get()
    assert jb.put(30000, 5, payload(30000)) == JUMP         # one stray packet: ignored
    assert send(jb, 10) == ACCEPTED                         # the stream goes on untouched
    assert jb.put(40000, 7, payload(40000)) == JUMP
    assert jb.put(40001, 167, payload(40001)) == RESET      # confirmed: a new stream
    assert jb.put(40002, 327, payload(40002)) == ACCEPTED
    assert jb.put(1000, 99999, payload(1000), marker=True) == RESET   # marker: at once
    s = jb.stats
    assert s["jumps"] == 2 and s["resets"] == 2


def test_timestamp_jump_is_a_new_stream_but_dtx_with_marker_is_not() -> None:
    jb = JitterBuffer(target=2)
    for k in range(10):
        send(jb, k)
        jb.get()
    # silence suppression: sequence continues, timestamp skips 5 s, marker set
    assert jb.put(10, 10 * TS_STEP + 40000, payload(10), marker=True) == ACCEPTED
    assert jb.put(11, 11 * TS_STEP + 40000, payload(11)) == ACCEPTED
    # timestamp goes back a long way without a marker: probation, then a new stream
    assert jb.put(12, 0, payload(12)) == JUMP
    assert jb.put(13, TS_STEP, payload(13)) == RESET
    assert jb.stats["resets"] == 1


def test_reset_returns_to_waiting_and_keeps_stats() -> None:
    jb = JitterBuffer(target=2)
    for k in range(5):
        send(jb, k)
        jb.get()
    jb.reset()
    assert jb.get() == (None, WAITING) and jb.depth == 0
    assert jb.put(777, 1, payload(777)) == ACCEPTED
    assert jb.put(778, 161, payload(778)) == ACCEPTED
    assert seq_of(jb.get()[0]) == 777
    assert jb.stats["received"] == 7 and jb.stats["resets"] == 1


# --- property -----------------------------------------------------------------------------------

@st.composite
def network(draw: st.DrawFn) -> tuple[int, int, list[tuple[int, int]]]:
    """A stream of up to 90 frames with random start, loss, duplication and reordering."""
    start = draw(st.integers(0, 0xFFFF))
    ts0 = draw(st.integers(0, 2**32 - 1))
    # per frame: how many copies arrive (0 = lost) and each copy's delay in ticks
    plan = draw(st.lists(st.tuples(st.sampled_from([0, 1, 1, 1, 1, 2, 3]),
                                   st.lists(st.integers(0, 12), min_size=3, max_size=3)),
                         min_size=1, max_size=90))
    events = [(k + delays[c], k) for k, (copies, delays) in enumerate(plan) for c in range(copies)]
    return start, ts0, sorted(events, key=lambda e: e[0])


@settings(max_examples=250, deadline=None)
@given(network(), st.integers(1, 4), st.integers(0, 4))
def test_any_arrival_pattern_plays_frames_in_order_once(net: tuple[int, int, list[tuple[int, int]]],
                                                        target: int, extra_depth: int) -> None:
    start, ts0, events = net
    jb = JitterBuffer(target=target, max_depth=target + extra_depth, payload_size=160)
    played: list[int] = []   # unwrapped sequence numbers of FRAME outputs
    i = 0
    last_tick = (events[-1][0] if events else 0) + 20
    for tick in range(last_tick):
        p, kind = jb.get()
        if kind == FRAME:
            seq = seq_of(p)
            assert p == payload(seq)
            k = (seq - start) & 0xFFFF
            assert not played or k > played[-1]   # strictly increasing (with wrap), never repeated
            played.append(k)
        else:
            assert (p is None) == (kind in (SILENCE, WAITING))
        assert jb.depth <= jb.max_depth
        while i < len(events) and events[i][0] == tick:
            status = send(jb, events[i][1], start, ts0)
            assert status not in (RESET, JUMP)
            i += 1
    s = jb.stats
    assert s["received"] == len(events)


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seq", [-1, 65536, 1.5, "1", None])
def test_bad_sequence_number_rejected(seq: object) -> None:
    jb = JitterBuffer()
    with pytest.raises(ValueError, match="seq"):
        jb.put(seq, 0, payload(0))   # type: ignore[arg-type]
    assert jb.stats["received"] == 0


@pytest.mark.parametrize("ts", [-1, 2**32, 0.5])
def test_bad_timestamp_rejected(ts: object) -> None:
    with pytest.raises(ValueError, match="ts"):
        JitterBuffer().put(0, ts, payload(0))   # type: ignore[arg-type]


def test_bad_payloads_rejected() -> None:
    jb = JitterBuffer(payload_size=160)
    with pytest.raises(ValueError, match="159 bytes"):
        jb.put(0, 0, b"\x00" * 159)
    with pytest.raises(ValueError, match="161 bytes"):
        jb.put(0, 0, b"\x00" * 161)
    with pytest.raises(ValueError, match="bytes-like"):
        jb.put(0, 0, 160)   # type: ignore[arg-type]  # bytes(160) would be 160 zeros: must not pass
    with pytest.raises(ValueError, match="empty"):
        JitterBuffer().put(0, 0, b"")
    assert jb.stats["received"] == 0 and jb.get() == (None, WAITING)


@pytest.mark.parametrize("kwargs", [
    {"target": 0}, {"target": 9, "max_depth": 8}, {"max_depth": 0}, {"max_depth": 257},
    {"frame_samples": 0}, {"payload_size": 0}, {"payload_size": 1.5}, {"max_conceal": -1},
    {"drift_window": 0}, {"jump": 8}, {"target": "2"},
])
def test_bad_parameters_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        JitterBuffer(**kwargs)
