"""The eavesdrop state machine: ``eavesdrop <uuid>``, ``eavesdrop all`` and ``three_way <uuid>``.

Plain logic over ``firmware.aio``: this module imports only ``aio`` and ``logging`` and uses no
CPython-only module, dataclass or enum (the MicroPython subset, DESIGN §3). Media goes through
a small interface (``firmware.media.tap.TapHub`` is the real one)::

    media.ready(target) -> bool          the target has media a tap can go on (it is bridged)
    media.attach(target, spy, hear_target=, hear_peer=, mode=, listen_gain_db=, whisper_gain_db=,
                 notify_parties=) -> tap  raises (TapError, a ValueError) with the reason
    tap.set_mode(mode); tap.drop_whisper(); tap.play_confirm(mode); tap.set_gains(l, w); tap.detach()

The contract is DESIGN §2 and FreeSWITCH's behaviour (reference/freeswitch-eavesdrop.md):
spy = the channel running the app, target = the uuid given, peer = whatever is bridged to it.
Modes: 0 listen only, 1 the peer hears the spy, 2 the target hears the spy, 3 both. Digits
``0 1 2 3`` set the mode (each also drops queued whisper audio), ``*`` leaves the target; other
digits are ignored. Where FreeSWITCH is silent or spins, this module logs, plays
``eavesdrop_indicate_failed`` and waits on events instead.

Every session start, mode change and stop fires CUSTOM ``eavesdrop::start|mode|stop`` and goes to
the audit log; ``Eavesdrop.modes()`` is the per-spy mode for the panel's LEDs.
"""
import logging

from firmware import aio

log = logging.getLogger(__name__)

LISTEN, WHISPER_PEER, WHISPER_TARGET, THREE_WAY = 0, 1, 2, 3
MODE_NAMES = {0: "listen", 1: "whisper-peer", 2: "whisper-target", 3: "three-way"}
# the same modes by role, when one leg is an agent's: whom the supervisor speaks to
ROLE_NAMES = {0: "listen", 1: "whisper-caller", 2: "whisper-agent", 3: "three-way"}


def party(leg):
    """(number, name) of whoever is at the far end of ``leg``: an agent's id and configured name,
    else the caller of an inbound leg or the number an outbound leg dialled."""
    if leg is None:
        return "", ""
    agent = leg.get_variable("agent_id")
    if agent:
        return agent, leg.get_variable("agent_name") or ""
    if leg.direction == "outbound":
        return leg.get_variable("destination_number") or "", leg.get_variable("callee_id_name") or ""
    return leg.get_variable("caller_id_number") or "", leg.get_variable("caller_id_name") or ""


def role_name(mode, agent, swapped):
    """A mode named by whom it speaks to: whisper-agent / whisper-caller when there is an agent."""
    if not agent:
        return MODE_NAMES[mode]
    return ROLE_NAMES[(3 - mode) if swapped and mode in (1, 2) else mode]


def roles(target, peer):
    """(agent leg, far leg, swapped): the target is the agent's leg unless only its peer is."""
    if peer is not None and not target.get_variable("agent_id") and peer.get_variable("agent_id"):
        return peer, target, True
    return target, peer, False
MODE_DIGITS = {"0": 0, "1": 1, "2": 2, "3": 3}
NEXT_DIGIT = "*"
AGENT_KEY = "#"             # "#1002#": on to agent 1002's call (FreeSWITCH ignores # in eavesdrop)
MAX_AGENT_DIGITS = 16

TARGET_WAIT_MS = 6000       # FreeSWITCH: 600 × 10 ms for the target's media
MEDIA_POLL_MS = 100         # ... we look ten times a second (and on every event of the target)
IDLE_WAIT_MS = 2000         # all: after indicate_idle
FAILED_WAIT_MS = 5000       # all: after indicate_failed, for one digit
RESCAN_MS = 5000            # all, idle: the longest wait for a channel event before looking again
DEFAULT_FAILED_SOUND = "tone_stream://%(500,0,320)"   # never silence (FreeSWITCH 779's sound)

SUBCLASS_START = "eavesdrop::start"
SUBCLASS_MODE = "eavesdrop::mode"
SUBCLASS_STOP = "eavesdrop::stop"

_TRUE = ("true", "yes", "on", "1", "enabled", "active", "allow")


def _true(value, default=False):
    if value is None or value == "":
        return default
    return value.strip().lower() in _TRUE


def in_group(target, group):
    """FreeSWITCH's check: ``group`` equals one item of the target's comma list (exact, no trim)."""
    return group in (target.get_variable("eavesdrop_group") or "").split(",")


def listen_name(hear_target, hear_peer):
    if hear_target and hear_peer:
        return "both"
    return "aleg" if hear_target else "bleg"


class Failed(Exception):
    """This target cannot be spied on; the message is the logged reason."""


class Options:
    """The spy's eavesdrop_* variables (channel first, then the config's globals), read at start."""

    __slots__ = ("require_group", "enable_dtmf", "hear_target", "hear_peer", "mode", "confirm",
                 "listen_gain_db", "whisper_gain_db", "notify_parties", "all_legs", "last_mode")

    def __init__(self, sw, ch, three_way=False):
        def var(name):
            return sw.variable(ch, name)

        self.require_group = "" if three_way else (var("eavesdrop_require_group") or "")
        self.enable_dtmf = not three_way and _true(var("eavesdrop_enable_dtmf"), True)
        aleg, bleg = _true(var("eavesdrop_bridge_aleg")), _true(var("eavesdrop_bridge_bleg"))
        if three_way or not (aleg or bleg):
            aleg = bleg = True                  # neither set true: both (FreeSWITCH)
        self.hear_target, self.hear_peer = aleg, bleg
        if three_way:
            self.mode = THREE_WAY
        else:
            self.mode = ((WHISPER_PEER if _true(var("eavesdrop_whisper_aleg")) else 0)
                         | (WHISPER_TARGET if _true(var("eavesdrop_whisper_bleg")) else 0))
        cfg = getattr(getattr(sw, "config", None), "eavesdrop", None)
        self.confirm = _true(var("eavesdrop_confirm_tones"), getattr(cfg, "confirm_tones", True))
        self.read_gains(sw, ch)
        self.notify_parties = _true(var("eavesdrop_notify_parties"))
        self.all_legs = _true(var("eavesdrop_all_legs"))
        self.last_mode = self.mode              # the mode the last session ended in (userspy)

    def read_gains(self, sw, ch):
        """The gains are read again for every target: the panel's volume keys change them."""
        self.listen_gain_db = self._gain(ch, sw.variable(ch, "eavesdrop_listen_gain_db"), "eavesdrop_listen_gain_db")
        self.whisper_gain_db = self._gain(ch, sw.variable(ch, "eavesdrop_whisper_gain_db"),
                                          "eavesdrop_whisper_gain_db")

    @staticmethod
    def _gain(ch, text, name):
        if not text:
            return 0.0
        try:
            x = float(text)
        except ValueError:
            x = None
        if x is None or not -60.0 <= x <= 24.0:
            log.warning("%s: %s=%r is not a gain of -60..24 dB: using 0 dB", ch.name, name, text)
            return 0.0
        return x


class Session:
    """One spy on one target: the inbox of digits/commands/ends and the current mode."""

    def __init__(self, spy, target, opts, tap, now_ms):
        self.spy = spy
        self.target = target
        self.opts = opts
        self.tap = tap
        self.mode = opts.mode
        self.started_ms = now_ms
        self.mode_since_ms = now_ms
        self.inbox = aio.Mailbox(64)

    @property
    def listen(self):
        return listen_name(self.opts.hear_target, self.opts.hear_peer)


class Eavesdrop:
    """The eavesdrop applications of one switch, and the registry of running sessions.

    ``media`` is the tap interface (module docstring); ``audit`` has ``record(dict)`` (or None);
    ``reject_cause`` is the hangup cause for a refused spy (None: NORMAL_CLEARING).
    """

    def __init__(self, sw, media, audit=None, reject_cause=None):
        self.sw = sw
        self.media = media
        self.audit = audit
        self.reject_cause = reject_cause
        self.sound_exists = None    # callable(sound) -> bool, set by the wiring (files on disk)
        self.sessions = {}          # spy uuid -> Session
        self.spies = set()          # uuids running eavesdrop (a session or between targets)
        self.jumps = {}             # spy uuid -> the agent it moves on to (see jump())
        self.stats = {"all_passes": 0, "sessions": 0, "failed": 0, "refused": 0}

    # --- the registry (control socket, panel) ----------------------------------------------------

    def modes(self):
        """Current mode per spy uuid (the panel's LEDs)."""
        return {uuid: s.mode for uuid, s in self.sessions.items()}

    def session(self, spy_uuid):
        return self.sessions.get(spy_uuid)

    def is_spy(self, uuid):
        return uuid in self.spies

    def jump(self, spy_uuid, agent):
        """Move a spy on to ``agent``'s current call (the panel's agent button, ``#<id>#`` on the
        keypad): its session ends with reason "jump" and the running application spies on that
        agent's leg next. False when that uuid runs no eavesdrop."""
        if spy_uuid not in self.spies or not agent:
            return False
        self.jumps[spy_uuid] = agent
        s = self.sessions.get(spy_uuid)
        if s is not None:
            s.inbox.put(("end", "jump"))
        return True

    async def _follow_jumps(self, ch, opts, reason):
        """While the last session ended in a jump, spy on the agent jumped to; returns how the
        last session ended (None when a jump found no call to spy on)."""
        while reason == "jump" and ch.up:
            agent = self.jumps.pop(ch.uuid, None)
            target = self._agent_leg(ch, agent, opts) if agent else None
            if target is None:
                self._failed(ch, agent, "agent %s has no call to spy on" % agent)
                await self._play(ch, self._failed_sound(ch))
                return None
            reason = await self._visit(ch, target, opts)
        return reason

    async def _visit(self, ch, target, opts):
        """indicate_new, then one session on ``target``; how it ended, or None (after the failed
        tone) when it could not start."""
        await self._play(ch, self.sw.variable(ch, "eavesdrop_indicate_new"))
        try:
            return await self._spy_on(ch, target, opts)
        except Failed as exc:
            self._failed(ch, target.uuid, str(exc))
            await self._play(ch, self._failed_sound(ch))
            return None

    def send_command(self, spy_uuid, command):
        """FreeSWITCH's ``eavesdrop-command``: each character acts like a digit (``"3"``, ``"3*"``),
        also with DTMF control off. False when that uuid runs no eavesdrop session."""
        s = self.sessions.get(spy_uuid)
        if s is None:
            return False
        for c in command:
            s.inbox.put(("command", c))
        return True

    def set_gains(self, spy_uuid, listen_gain_db=None, whisper_gain_db=None):
        """Change a running session's listen volume / whisper gain (dB; the panel's volume keys);
        later targets of an ``all`` session keep them. False when there is no such session,
        ValueError for a gain the tap refuses."""
        s = self.sessions.get(spy_uuid)
        if s is None:
            return False
        s.tap.set_gains(listen_gain_db, whisper_gain_db)
        if listen_gain_db is not None:
            s.spy.set_variable("eavesdrop_listen_gain_db", str(float(listen_gain_db)))
        if whisper_gain_db is not None:
            s.spy.set_variable("eavesdrop_whisper_gain_db", str(float(whisper_gain_db)))
        return True

    # --- applications ---------------------------------------------------------------------------

    async def app_eavesdrop(self, sw, ch, data):
        target = data.strip()
        if target.lower() == "all":
            await self.run_all(ch)
        else:
            await self.run_uuid(ch, target)

    async def app_three_way(self, sw, ch, data):
        await self.run_uuid(ch, data.strip(), three_way=True)

    async def run_uuid(self, ch, uuid, three_way=False):
        """Spy on one channel until ``*``, the target hangs up or the spy does."""
        app = "three_way" if three_way else "eavesdrop"
        if not await self._admit(ch, app, uuid):
            return
        opts = Options(self.sw, ch, three_way)
        self.spies.add(ch.uuid)
        try:
            await self._media_up(ch)
            try:
                target = self._locate(ch, uuid)
                if opts.require_group and not in_group(target, opts.require_group):
                    raise Failed("%s is not in eavesdrop group %r (its groups: %r)" % (
                        target.uuid, opts.require_group, target.get_variable("eavesdrop_group") or ""))
                await self._follow_jumps(ch, opts, await self._spy_on(ch, target, opts))
            except Failed as exc:
                self._failed(ch, uuid, str(exc))
                await self._play(ch, self._failed_sound(ch))
        finally:
            self.spies.discard(ch.uuid)
            self.jumps.pop(ch.uuid, None)

    async def run_all(self, ch):
        """Cycle over every call (creation order, each once per pass) until the spy hangs up."""
        if not await self._admit(ch, "eavesdrop", "all"):
            return
        opts = Options(self.sw, ch)
        changed = aio.Event()
        events = ("CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_BRIDGE")
        token = self.sw.events.subscribe(events, lambda e: changed.set())
        self.spies.add(ch.uuid)
        try:
            await self._media_up(ch)
            while ch.up:
                self.stats["all_passes"] += 1
                changed.clear()
                visited = 0
                for target in self.candidates(ch, opts):
                    if not ch.up:
                        return
                    if not self._eligible(ch, target, opts):    # it may have changed meanwhile
                        continue
                    visited += 1
                    reason = await self._visit(ch, target, opts)
                    if reason is None:
                        await ch.next_digit(FAILED_WAIT_MS)          # any digit ends the wait
                    else:
                        await self._follow_jumps(ch, opts, reason)
                if visited == 0 and ch.up:
                    await self._play(ch, self.sw.variable(ch, "eavesdrop_indicate_idle"))
                    await ch.next_digit(IDLE_WAIT_MS)
                    if not changed.is_set():
                        # nothing to spy on: sleep until a call appears or answers, never spin
                        try:
                            await ch.guard(ch.clock.wait_for_ms(changed.wait(), RESCAN_MS))
                        except aio.TimeoutError:
                            pass
        finally:
            self.sw.events.unsubscribe(token)
            self.spies.discard(ch.uuid)
            self.jumps.pop(ch.uuid, None)

    async def app_userspy(self, sw, ch, data):
        """``userspy <agent id>`` (FreeSWITCH mod_spy's, which also takes ``<id>@<domain>``)."""
        await self.run_user(ch, (data or "").strip().split("@")[0])

    async def run_user(self, ch, agent):
        """Follow one agent (Avaya's service observing): its current call, then each next one, in
        the mode the supervisor last chose, until ``*`` or the supervisor hangs up. Between calls
        indicate_idle plays once and the supervisor waits on the line for the agent's next
        answered, bridged call (woken by the switch's events, never by polling)."""
        if not await self._admit(ch, "userspy", agent or "(no agent)"):
            return
        opts = Options(self.sw, ch)
        wake = aio.Mailbox(16)
        events = ("CHANNEL_ANSWER", "CHANNEL_BRIDGE")
        token = self.sw.events.subscribe(events, lambda e: wake.put(("event", None)))
        self.spies.add(ch.uuid)
        try:
            await self._media_up(ch)
            if not agent:
                raise Failed("userspy needs an agent id")
            idle_told = False
            while ch.up:
                wake.clear()                   # events from here on count; the look below sees the rest
                target = self._agent_leg(ch, agent, opts)
                if target is None:
                    if not idle_told:
                        log.info("%s: userspy %s: no call now, waiting for the next", ch.name, agent)
                        await self._play(ch, self.sw.variable(ch, "eavesdrop_indicate_idle"))
                        idle_told = True
                    if await self._wait_for_call(ch, wake) == NEXT_DIGIT:
                        return
                    continue
                idle_told = False
                reason = await self._visit(ch, target, opts)
                if reason is None:
                    continue
                if reason == "jump":                       # follow the agent jumped to from now on
                    agent = self.jumps.pop(ch.uuid, None) or agent
                    continue
                if reason in ("next", "command"):          # * leaves (it does not skip the call)
                    return
                opts.mode = opts.last_mode                 # the next call in the mode chosen last
        except Failed as exc:
            self._failed(ch, agent, str(exc))
            await self._play(ch, self._failed_sound(ch))
        finally:
            self.sw.events.unsubscribe(token)
            self.spies.discard(ch.uuid)
            self.jumps.pop(ch.uuid, None)

    def _agent_leg(self, ch, agent, opts):
        """The agent's newest leg that can be spied on now (answered, bridged, in the group)."""
        found = None
        for c in self.sw.channels():
            if c.get_variable("agent_id") == agent and self._eligible(ch, c, opts):
                found = c
        return found

    async def _wait_for_call(self, ch, wake):
        """Until a channel answers or bridges (or RESCAN_MS passes), or the supervisor presses a
        digit; returns the digit, else None."""
        pump = ch.spawn(self._digits_to(ch, wake))
        try:
            kind, value = await ch.guard(ch.clock.wait_for_ms(wake.get(), RESCAN_MS))
        except aio.TimeoutError:
            return None
        finally:
            pump.cancel()
        return value if kind == "digit" else None

    @staticmethod
    async def _digits_to(ch, box):
        """The spy's DTMF queue into ``box`` (a session's inbox, or the wait between calls)."""
        while True:
            box.put(("digit", await ch.next_digit()))

    # --- choosing targets -------------------------------------------------------------------------

    def _eligible(self, ch, target, opts):
        return (target is not ch and target.up and target.is_answered and target.uuid not in self.spies
                and (not opts.require_group or in_group(target, opts.require_group))
                and self.media.ready(target))

    def candidates(self, ch, opts):
        """The targets of one ``all`` pass, in creation order: answered, tappable, in the group, no
        spies, and (unless ``eavesdrop_all_legs``) one leg per call: the agent's. With a group
        that is the leg in it; otherwise a leg facing an agent (``agent_id``) is taken over one
        facing a caller who is not, so digit 2 reaches the agent and never the customer."""
        out, seen = [], set()
        for c in self.sw.channels():
            if c.uuid in seen or not self._eligible(ch, c, opts):
                continue
            other = c.other_leg
            if not opts.all_legs and other is not None:
                seen.add(other.uuid)
                if not c.get_variable("agent_id") and other.get_variable("agent_id") \
                        and self._eligible(ch, other, opts):
                    c = other
            out.append(c)
            seen.add(c.uuid)
        return out

    def _locate(self, ch, uuid):
        if not uuid:
            dialled = ch.get_variable("destination_number") or ""
            raise Failed("no call to spy on for %s: no such agent, or the agent is not on a call "
                         "(an empty spymap entry)" % (dialled or "an empty target"))
        target = self.sw.get(uuid)
        if target is None or not target.up:
            raise Failed("no channel %s (it has ended: a stale spymap entry?)" % uuid)
        if target is ch:
            raise Failed("a channel cannot eavesdrop on itself")
        if target.uuid in self.spies:
            raise Failed("%s is itself eavesdropping and cannot be spied on" % uuid)
        return target

    # --- one session ------------------------------------------------------------------------------

    async def _wait_media(self, ch, target):
        """Up to 6 s for the target to get media (answer, bridge); False if it does not."""
        deadline = ch.clock.deadline(TARGET_WAIT_MS)
        while not self.media.ready(target):
            remaining = ch.clock.remaining(deadline)
            if not target.up or remaining <= 0:
                return False
            await ch.guard(ch.clock.sleep_ms(min(MEDIA_POLL_MS, remaining)))
        return target.up

    async def _spy_on(self, ch, target, opts):
        """Run one session; returns the reason it ended. Failed when it cannot start."""
        if not await self._wait_media(ch, target):
            if not target.up:
                raise Failed("%s hung up before its media was up" % target.uuid)
            raise Failed("%s has no media to tap after %d s" % (target.uuid, TARGET_WAIT_MS // 1000))
        opts.read_gains(self.sw, ch)
        try:
            tap = self.media.attach(target, ch, hear_target=opts.hear_target, hear_peer=opts.hear_peer,
                                    mode=opts.mode, listen_gain_db=opts.listen_gain_db,
                                    whisper_gain_db=opts.whisper_gain_db, notify_parties=opts.notify_parties)
        except ValueError as exc:
            raise Failed("cannot tap %s: %s" % (target.uuid, exc)) from None
        s = Session(ch, target, opts, tap, ch.clock.now_ms())
        self.sessions[ch.uuid] = s
        self.stats["sessions"] += 1

        def on_event(e):
            uuid = e.get("Unique-ID")
            if e.name == "CHANNEL_HANGUP" and uuid == target.uuid:
                s.inbox.put(("end", "target-hangup"))
            elif e.name == "CHANNEL_UNBRIDGE" and target.uuid in (
                    e.get("Bridge-A-Unique-ID"), e.get("Bridge-B-Unique-ID")):
                s.inbox.put(("end", "target-unbridged"))

        token = self.sw.events.subscribe(("CHANNEL_HANGUP", "CHANNEL_UNBRIDGE"), on_event)
        pump = ch.spawn(self._digits_to(ch, s.inbox)) if opts.enable_dtmf else None
        self._announce(s, SUBCLASS_START, "MEDIA_BUG_START")
        log.info("%s: eavesdrop on %s started in mode %d", ch.name, target.uuid, s.mode)
        reason = None
        typed = None                    # digits of "#<id>#" while the spy keys an agent id
        try:
            if not target.up:
                reason = "target-hangup"
            while reason is None:
                kind, value = await ch.guard(s.inbox.get())
                if kind == "end":
                    reason = value
                elif value == NEXT_DIGIT:   # always FreeSWITCH's meaning (also mid-id)
                    reason = "next" if kind == "digit" else "command"
                elif value == AGENT_KEY:
                    if typed:               # the closing #: on to that agent's call
                        self.jump(ch.uuid, typed)
                    typed = "" if typed is None else None
                elif typed is not None:     # while keying an id no digit changes the mode
                    if value.isdigit() and len(typed) < MAX_AGENT_DIGITS:
                        typed += value
                elif value in MODE_DIGITS:
                    self._set_mode(s, MODE_DIGITS[value], kind)
                # anything else (4-9 A-D) is ignored, as in FreeSWITCH
        finally:
            self.sw.events.unsubscribe(token)
            if pump is not None:
                pump.cancel()
            tap.detach()
            self.sessions.pop(ch.uuid, None)
            if ch.up:
                ch.flush_dtmf()          # queued digits apply to this target only (FreeSWITCH)
            if reason is None or not ch.up:
                reason = "spy-hangup"
            opts.last_mode = s.mode
            self._announce(s, SUBCLASS_STOP, "MEDIA_BUG_STOP", {"Eavesdrop-Reason": reason})
        log.info("%s: eavesdrop on %s ended: %s", ch.name, target.uuid, reason)
        return reason

    def _set_mode(self, s, mode, source):
        s.tap.drop_whisper()            # every recognised digit drops queued whisper audio
        if s.opts.confirm:
            s.tap.play_confirm(mode)
        if mode == s.mode:
            return
        clock = s.spy.clock
        old, held = s.mode, clock.elapsed(s.mode_since_ms)
        s.tap.set_mode(mode)
        s.mode, s.mode_since_ms = mode, clock.now_ms()
        log.info("%s: eavesdrop on %s: mode %d (%s) by %s", s.spy.name, s.target.uuid, mode,
                 MODE_NAMES[mode], source)
        self._announce(s, SUBCLASS_MODE, None, {"Eavesdrop-Previous-Mode": str(old),
                                                 "Eavesdrop-Previous-Mode-Ms": str(held),
                                                 "Eavesdrop-Mode-Source": source})

    # --- admission, sounds, events, audit -----------------------------------------------------------

    async def _admit(self, ch, app, what):
        """Only ``may_eavesdrop=true`` spies (set from the user's config, or by the dialplan)."""
        if _true(ch.get_variable("may_eavesdrop")):
            return True
        self.stats["refused"] += 1
        user = self._user(ch)
        log.warning("%s: %s %s refused: user %r may not eavesdrop (may_eavesdrop is not true)",
                    ch.name, app, what, user)
        self._audit({"event": "refused", "spy_uuid": ch.uuid, "user": user, "target": what,
                     "reason": "may_eavesdrop is not true"})
        await self._media_up(ch)
        await self._play(ch, self._failed_sound(ch))
        if self.reject_cause is not None:
            await ch.hangup(self.reject_cause)
        else:
            await ch.hangup()
        return False

    async def _media_up(self, ch):
        if ch.state.value not in ("EARLY", "ANSWERED"):
            await ch.pre_answer()       # FreeSWITCH silently fails here; early media is enough

    def _failed_sound(self, ch):
        """indicate_failed, or the built-in tone when it is unset or its file is missing."""
        sound = self.sw.variable(ch, "eavesdrop_indicate_failed")
        if sound and self.sound_exists is not None and not self.sound_exists(sound):
            log.warning("%s: eavesdrop_indicate_failed %s is missing: playing the built-in tone",
                        ch.name, sound)
            sound = None
        return sound or DEFAULT_FAILED_SOUND

    async def _play(self, ch, sound):
        if sound and ch.up:
            await self.sw.run_app(ch, "playback", sound)

    def _failed(self, ch, target, reason):
        self.stats["failed"] += 1
        log.warning("%s: eavesdrop on %s failed: %s", ch.name, target or "(none)", reason)
        self._audit({"event": "failed", "spy_uuid": ch.uuid, "user": self._user(ch),
                     "target_uuid": target, "reason": reason})

    @staticmethod
    def _user(ch):
        return ch.get_variable("user_name") or ch.get_variable("caller_id_number") or ""

    def _announce(self, s, subclass, bug_event, extra=None):
        t, peer = s.target, s.target.other_leg
        agent_leg, far_leg, swapped = roles(t, peer)
        agent, agent_name = party(agent_leg) if agent_leg.get_variable("agent_id") else ("", "")
        far, far_name = party(far_leg)
        role = role_name(s.mode, agent, swapped)
        h = {
            "Eavesdrop-Spy-UUID": s.spy.uuid,
            "Eavesdrop-Target-UUID": t.uuid,
            "Eavesdrop-Peer-UUID": peer.uuid if peer is not None else "",
            "Eavesdrop-User": self._user(s.spy),
            "Eavesdrop-Mode": str(s.mode),
            "Eavesdrop-Mode-Name": MODE_NAMES[s.mode],
            "Eavesdrop-Listen": s.listen,
            "Eavesdrop-Target-Caller-ID-Name": t.get_variable("caller_id_name") or "",
            "Eavesdrop-Target-Caller-ID-Number": t.get_variable("caller_id_number") or "",
            "Eavesdrop-Peer-Caller-ID-Number": (peer.get_variable("caller_id_number") or "")
            if peer is not None else "",
            # in roles: the agent supervised (its leg may be the target or the peer), the far party
            "Eavesdrop-Agent-ID": agent,
            "Eavesdrop-Agent-Name": agent_name,
            "Eavesdrop-Far-Party-Number": far,
            "Eavesdrop-Far-Party-Name": far_name,
            "Eavesdrop-Mode-Role": role,
        }
        # whether each leg runs SRTP (plain Python: this module also runs under MicroPython)
        secure = (("Target", "target_secure", _secure(t)), ("Peer", "peer_secure", _secure(peer)),
                  ("Spy", "spy_secure", _secure(s.spy)))
        for who, _, value in secure:
            h["Eavesdrop-" + who + "-Secure"] = "true" if value else "false"
        if extra:
            h.update(extra)
        s.spy.fire("CUSTOM", h, subclass=subclass)
        if bug_event is not None and bug_event in _known_events(self.sw):
            t.fire(bug_event, {"Media-Bug-Function": "eavesdrop", "Media-Bug-Target": t.uuid})
        record = {"event": subclass.split("::")[1], "spy_uuid": s.spy.uuid, "user": h["Eavesdrop-User"],
                  "target_uuid": t.uuid, "peer_uuid": h["Eavesdrop-Peer-UUID"], "mode": s.mode,
                  "listen": s.listen, "target_caller_id": h["Eavesdrop-Target-Caller-ID-Number"],
                  "peer_caller_id": h["Eavesdrop-Peer-Caller-ID-Number"], "agent": agent,
                  "agent_name": agent_name, "far_party": far, "far_party_name": far_name, "mode_role": role}
        for _, key, value in secure:
            record[key] = value
        clock = s.spy.clock
        if subclass == SUBCLASS_MODE:
            record["previous_mode"] = int(extra["Eavesdrop-Previous-Mode"])
            record["previous_mode_role"] = role_name(record["previous_mode"], agent, swapped)
            record["previous_mode_ms"] = int(extra["Eavesdrop-Previous-Mode-Ms"])
        elif subclass == SUBCLASS_STOP:
            record["reason"] = extra["Eavesdrop-Reason"]
            record["mode_ms"] = clock.elapsed(s.mode_since_ms)
            record["duration_ms"] = clock.elapsed(s.started_ms)
        self._audit(record)

    def _audit(self, record):
        if self.audit is None:
            return
        try:
            self.audit.record(record)
        except Exception as exc:   # an audit failure is logged, the call goes on
            log.error("audit record failed: %s (%r)", exc, record)


def _secure(ch):
    """Whether a channel's media leg runs SRTP (from ``leg.secure``); False without media."""
    endpoint = getattr(ch, "endpoint", None) if ch is not None else None
    return bool(getattr(getattr(endpoint, "media", None), "secure", False))


def _known_events(sw):
    """The bus's event names (MEDIA_BUG_START/STOP are fired only once the bus knows them)."""
    try:
        from .events import EVENT_NAMES
    except ImportError:
        return ()
    return EVENT_NAMES
