"""The fuzzing counterparties: a raw-socket OMS (initiator) and broker (acceptor).

Each peer logs on properly (CompIDs, ResetSeqNumFlag=Y on every logon), sends templates
through the mutator, and keeps its MsgSeqNum right: every byte it sends also goes through
a model of quickfix's parser (`fuzz_wire`), so it knows which frames the gateway will
parse (and so consume a sequence number) and which it will drop as garbled. What the
model cannot foresee is repaired the way a FIX engine would: a ResendRequest from the
gateway is answered with a SequenceReset-GapFill up to the peer's next number, and a
Logout or a disconnect is followed by a fresh logon. Every `sync_every` messages a
TestRequest must come back as a Heartbeat: that paces the fuzz and finds a session that
stopped answering (after a nudge and a SequenceReset-Reset, it counts as a stall and the
peer's last frames are saved as evidence).

Message i of a peer is decided by (seed, peer, i): the template and every mutation come
from one random stream, the template's values from another, so what the peer has learnt
from the gateway (its orders, their state) changes ids and quantities but not which
mutations are sent.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

from gateway.fuzz_link import Link, PeerStats
from gateway.fuzz_mutate import FIELD_MUTATIONS, Mutator, garbage_chunk
from gateway.fuzz_session import GATEWAY_COMP_ID, expected_after
from gateway.fuzz_templates import Context, Template, old_sending_time
from gateway.fuzz_wire import Field, ShadowParser, encode, int_convert, stamp
from gateway.fuzz_wire import field as field_of


class FuzzPeer:
    """What both fuzzing peers share: the session, the sequence model, the send loop."""

    role = "peer"

    def __init__(self, *, name: str, comp_id: str, port: int, seed: int | str,
                 templates: dict[str, tuple[Template | None, float]], mutator: Mutator,
                 seq_low_share: float, sync_every: int = 25) -> None:
        self.name = name
        self.comp_id = comp_id.encode()
        self.port = port
        self.seed = seed
        self.templates = templates
        self.mutator = mutator
        self.seq_low_share = seq_low_share
        self.sync_every = sync_every
        self.stats = PeerStats()
        self.ctx = Context()
        self.lock = threading.RLock()
        self.link: Link | None = None
        self.shadow = ShadowParser()
        self.next_seq = 1
        self.logged_on = threading.Event()
        self.tests: dict[bytes, threading.Event] = {}
        self.history: deque[tuple[int, str, list[str], bytes]] = deque(maxlen=400)
        self.recent_valid: deque[tuple[str, list[Field]]] = deque(maxlen=64)
        self.index = 0
        self._abandon = False
        self._syncs = 0
        self._quiet_until = 0.0
        self._last_emit = 0.0
        self.stall_hook: Callable[[list[FuzzPeer], str], None] | None = None

    # -- the session ----------------------------------------------------------------------

    def _header(self, msg_type: str, seq: int, extra: list[Field] | None = None
                ) -> list[Field]:
        return [(35, msg_type.encode()), (49, self.comp_id), (56, GATEWAY_COMP_ID),
                (34, str(seq).encode()), (52, stamp()), *(extra or [])]

    def _new_link(self, sock: socket.socket) -> Link:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            self.shadow = ShadowParser()
            self.next_seq = 1
            self.logged_on.clear()
            self._abandon = False
            self.link = Link(sock, self._on_frame, self._on_close, self.name)
            self.link.start()
            return self.link

    def _open(self, stop: threading.Event) -> bool:
        raise NotImplementedError

    def ensure_session(self, stop: threading.Event, timeout: float = 90.0) -> bool:
        """Logged on, reconnecting (and logging on with ResetSeqNumFlag=Y) when needed."""
        link = self.link
        if link is not None and not link.closed.is_set() and self.logged_on.is_set() \
                and not self._abandon:
            return True
        if link is not None and not link.closed.is_set():
            link.close_gracefully()
        if link is not None:
            stop.wait(0.05)
        deadline = time.monotonic() + timeout
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                if self._open(stop):
                    return True
            except OSError:
                pass
            if self.link is not None and not self.link.closed.is_set():
                self.link.close()
            stop.wait(0.3)
        return False

    def _send_logon(self) -> None:
        self._emit(encode([*self._header("A", 1), (98, b"0"), (108, b"30"), (141, b"Y")]),
                   template="logon", kinds=[])

    # -- sending (callers hold self.lock) -------------------------------------------------

    def _emit(self, data: bytes, *, template: str, kinds: list[str]) -> None:
        link = self.link
        if link is None or link.closed.is_set():
            return
        for frame in self.shadow.feed(data):
            self._account(frame)
        link.put(data)
        self._last_emit = time.monotonic()
        self.history.append((self.index, template, kinds, data))

    def _account(self, frame: bytes) -> None:
        """Move the model of the gateway's expected MsgSeqNum past this frame."""
        self.next_seq, parsed = expected_after(frame, self.next_seq)
        if parsed:
            self.stats.frames_parsed += 1
        else:
            self.stats.frames_garbled += 1

    def _flush_partial(self, rng: random.Random | None = None) -> None:
        """End a partial frame the gateway's parser holds, so the next message is not eaten."""
        if not self.shadow.pending() or (rng is not None and rng.random() >= 0.85):
            return
        filler = self.shadow.completion()
        if filler is None:
            self._abandon = True  # only a huge BodyLength: start a new connection
            self.stats.abandoned_links += 1
            return
        self.stats.fillers += 1
        self._emit(filler, template="filler", kinds=[])

    def _admin(self, msg_type: str, body: list[Field]) -> None:
        self._emit(encode(self._header(msg_type, self.next_seq) + body),
                   template=f"admin_{msg_type}", kinds=[])

    # -- what the gateway sends (reader thread) -------------------------------------------

    def _on_close(self, link: Link) -> None:
        if link is self.link:
            self.logged_on.clear()
        if not link.closed_by_us:
            with self.stats.lock:
                self.stats.disconnects += 1

    def _on_frame(self, link: Link, frame: bytes) -> None:
        if link is not self.link:
            return
        mtype = (field_of(frame, 35) or b"?").decode("latin-1")
        seq = int_convert(field_of(frame, 34) or b"")
        if seq is not None:
            self.ctx.last_in_seq = seq
        st = self.stats
        with st.lock:
            st.received[mtype] += 1
            if mtype == "3":
                reason = (field_of(frame, 373) or b"none").decode("latin-1")
                st.session_rejects[reason] += 1
                st.reject_samples.setdefault(f"3/{reason}", _text(frame))
            elif mtype == "j":
                reason = (field_of(frame, 380) or b"none").decode("latin-1")
                st.business_rejects[reason] += 1
                st.reject_samples.setdefault(f"j/{reason}", _text(frame))
            elif mtype == "8" and field_of(frame, 39) == b"8":
                st.er_rejected += 1
                st.reject_samples.setdefault("8/39=8", _text(frame))
            elif mtype == "Q":
                st.dont_know += 1
            elif mtype == "5":
                st.logouts[_text(frame)[:160]] += 1
            elif mtype == "A":
                st.logons += 1
        if mtype == "0":
            event = self.tests.pop(field_of(frame, 112) or b"", None)
            if event is not None:
                event.set()
        elif mtype == "1":
            with self.lock:
                if link is self.link:
                    self._admin("0", [(112, field_of(frame, 112) or b"")])
        elif mtype == "2":
            self._gap_fill(link, int_convert(field_of(frame, 7) or b"") or 1)
        elif mtype == "5":
            self.logged_on.clear()
            with self.lock:
                if link is self.link:
                    self._admin("5", [])
                    self._abandon = True
        elif mtype == "A":
            self._on_logon(link)
        elif mtype == "J":
            alloc_id = field_of(frame, 70)
            if alloc_id:
                with self.ctx.lock:
                    if alloc_id not in self.ctx.alloc_ids[-200:]:
                        self.ctx.alloc_ids.append(alloc_id)
        else:
            self._on_app(mtype, frame)

    def _gap_fill(self, link: Link, begin: int) -> None:
        """Answer a ResendRequest with a SequenceReset-GapFill up to our next MsgSeqNum.

        A narrower fill (up to the message the gateway has queued) would save that queue,
        but quickfix validates a message before it looks at its MsgSeqNum, so a too-high
        message that fails validation is rejected rather than queued, and a fill that
        stops short of the range the gateway asked for leaves it waiting for the rest
        forever. The messages in flight are lost instead; holes are rare (the model in
        `_account` predicts the rest), so that costs little.
        """
        with self.lock:
            if link is not self.link:
                return
            new = max(self.next_seq, begin + 1)
            self.next_seq = new
            header = self._header("4", begin, [(43, b"Y"), (122, stamp())])
            self._emit(encode([*header, (123, b"Y"), (36, str(new).encode())]),
                       template="gap_fill", kinds=[])
            self.stats.gap_fills += 1
            for test_id in list(self.tests):  # a TestRequest in flight was just filled over
                self._admin("1", [(112, test_id)])

    def _on_logon(self, link: Link) -> None:
        self.logged_on.set()

    def _on_app(self, mtype: str, frame: bytes) -> None:
        return None

    # -- the fuzz loop --------------------------------------------------------------------

    def run(self, count: int, stop: threading.Event) -> None:
        started = time.monotonic()
        try:
            i = tries = 0
            while i < count:
                if stop.is_set() or not self.ensure_session(stop):
                    return
                self.index = i
                tries += 1
                if not self.step(random.Random(f"{self.seed}:{self.name}:{i}")) and tries < 5:
                    continue  # the connection went down under it: the same message again
                i, tries = i + 1, 0
                if i % self.sync_every == 0:
                    self.sync(stop)
            self.sync(stop)
        finally:
            self.stats.seconds = round(time.monotonic() - started, 1)

    def step(self, rng: random.Random) -> bool:
        """Message `index` of this peer: fully decided by (seed, peer, index).

        False when the connection went down before the message could be sent.
        """
        names = list(self.templates)
        name = rng.choices(names, [self.templates[n][1] for n in names])[0]
        draw = rng.random()
        low = self.seq_low_share
        seq_kind = ("seq_high" if draw < 0.003 else "seq_low_possdup" if draw < 0.02
                    else "seq_low" if draw < 0.02 + low else "possdup_repeat"
                    if draw < 0.05 + low else None)
        template = self.templates[name][0]
        # The template's values come from their own stream: what the peer has learnt from
        # the gateway (how many orders, their state) must not shift the mutation choices.
        content = random.Random(f"{self.seed}:{self.name}:{self.index}:content")
        msg_type, body = ("4", []) if template is None else template(self.ctx, content)
        if seq_kind == "possdup_repeat":
            if self.recent_valid:
                msg_type, body = self.recent_valid[int(rng.random() * len(self.recent_valid))]
                body = list(body)
            else:
                seq_kind = None
        pause = self._quiet_until - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        link = self.link
        if link is None or not link.wait_space():
            return False
        state = rng.getstate()
        for attempt in range(6):
            with self.lock:
                if link is not self.link or link.closed.is_set():
                    return False
                rng.setstate(state)
                data, kinds = self._build(rng, name, msg_type, body, seq_kind)
                # A BodyLength quickfix cannot read makes it drop its whole input buffer
                # (and hand the session the previous message of the same read again):
                # such a frame goes alone, most of the time, so it takes nothing with it.
                lucky = rng.random() < 0.9
                alone = self._breaks_parser(data) and lucky
                if not alone or attempt == 5 or (
                        not link.backlog() and time.monotonic() - self._last_emit > 0.03):
                    self._emit(data, template=name, kinds=kinds)
                    if alone:
                        self._quiet_until = time.monotonic() + 0.03
                    self._flush_partial(rng)
                    if not kinds:
                        self.recent_valid.append((msg_type, body))
                    self._count(name, kinds)
                    return True
            link.wait_space(limit=0, timeout=2)
            time.sleep(0.03)
        return False

    def _build(self, rng: random.Random, name: str, msg_type: str, body: list[Field],
               seq_kind: str | None) -> tuple[bytes, list[str]]:
        if name == "garbage":
            return garbage_chunk(rng, self.mutator), ["garbage"]
        seq = self.next_seq
        extra: list[Field] = []
        if seq_kind == "seq_high":
            seq += rng.randint(1, 3)
        elif seq_kind == "seq_low_possdup":
            seq = max(1, seq - rng.randint(1, 5))
            extra = [(43, b"Y"), (122, old_sending_time())]
        elif seq_kind == "seq_low":
            seq = max(1, seq - 1)
        elif seq_kind == "possdup_repeat":
            extra = [(43, b"Y"), (122, old_sending_time())]
        header = self._header(msg_type, seq, extra)
        if msg_type == "4":
            data, kinds = self._sequence_reset(rng, header, seq)
        else:
            data, kinds = self.mutator.mutate(rng, header, body)
        if seq_kind:
            kinds.insert(0, seq_kind)
        return data, kinds

    def _breaks_parser(self, data: bytes) -> bool:
        trial = self.shadow.copy()
        trial.feed(data)
        return trial.parse_errors > 0

    def _sequence_reset(self, rng: random.Random, header: list[Field], seq: int
                        ) -> tuple[bytes, list[str]]:
        """A SequenceReset whose effect the model can foresee, mutated or not.

        quickfix neither applies nor counts a SequenceReset that fails validation, so a
        mutated one says NewSeqNo = its own MsgSeqNum (a no-op either way); a valid one
        moves the number on by one or two (GapFill) or one (Reset).
        """
        state = rng.getstate()
        gap_fill = rng.random() >= 0.15
        step = rng.choice((1, 1, 1, 2)) if gap_fill else 1
        flag = b"Y" if gap_fill else b"N"
        body: list[Field] = [(123, flag), (36, str(seq + step).encode())]
        data, kinds = self.mutator.mutate(rng, header, body)
        if any(k in FIELD_MUTATIONS for k in kinds):
            rng.setstate(state)
            rng.random(), rng.choice((1, 1, 1, 2))
            data, kinds = self.mutator.mutate(rng, header, [(123, flag), (36, str(seq).encode())])
        return data, kinds

    def _count(self, name: str, kinds: list[str]) -> None:
        with self.stats.lock:
            self.stats.sent[name] += 1
            for kind in kinds or ["none"]:
                self.stats.mutations[kind] += 1

    def sync(self, stop: threading.Event, timeout: float = 30.0) -> bool:
        """A TestRequest that must come back as a Heartbeat; False (and a new link) if not."""
        link = self.link
        if link is None or link.closed.is_set() or not self.logged_on.is_set():
            return False
        self._syncs += 1
        test_id = f"SYNC-{self.name}-{self._syncs}".encode()
        event = threading.Event()
        with self.lock:
            if link is not self.link:
                return False
            self._flush_partial()
            self.tests[test_id] = event
            self._admin("1", [(112, test_id)])
        deadline = time.monotonic() + timeout
        nudge, reset = time.monotonic() + 1.5, time.monotonic() + 4.0
        while not event.wait(0.1):
            if stop.is_set() or link.closed.is_set() or self._abandon:
                self.tests.pop(test_id, None)
                return False
            now = time.monotonic()
            if now > reset:
                # Still nothing: a SequenceReset-Reset (no MsgSeqNum check at all) puts the
                # gateway's expected number where ours is, then the TestRequest again.
                reset = deadline + 1
                with self.lock:
                    if link is self.link:
                        self.stats.resets += 1
                        self._emit(encode([*self._header("4", self.next_seq),
                                           (123, b"N"), (36, str(self.next_seq + 1).encode())]),
                                   template="reset", kinds=[])
                        again = test_id + b"-AGAIN"
                        self.tests[again] = event
                        self._admin("1", [(112, again)])
            elif now > nudge:
                # quickfix rejects (rather than queues) a too-high message that fails the
                # dictionary; one more message makes it notice the gap and ask again.
                nudge = now + 1.5
                with self.lock:
                    if link is self.link:
                        self._admin("0", [])
            if time.monotonic() > deadline:
                self.tests.pop(test_id, None)
                with self.stats.lock:
                    self.stats.stalls += 1
                self.on_stall(test_id)
                link.close()
                return False
        return True

    def on_stall(self, test_id: bytes) -> None:
        """The orchestrator saves the last frames when a session stops answering."""
        if self.stall_hook is not None:
            self.stall_hook([self], f"stall-{test_id.decode()}")

    def last_frames(self) -> list[tuple[int, str, list[str], bytes]]:
        with self.lock:
            return list(self.history)

    def close(self) -> None:
        with self.lock:
            link = self.link
            if link is not None and not link.closed.is_set() and self.logged_on.is_set():
                self._admin("5", [(58, b"fuzz done")])
        if link is not None:
            time.sleep(0.2)
            link.close()


def _text(frame: bytes) -> str:
    text = field_of(frame, 58) or b""
    return text.decode("utf-8", "backslashreplace")
