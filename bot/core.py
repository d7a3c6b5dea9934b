"""The core: every conversation behaviour, once, for every surface.

An adapter translates a platform event into an ``Incoming`` and calls ``Core.submit``
with a ``Surface`` for the place it came from.  The core routes commands, checks who
may run admin ones, answers with the model, streams into the surface, tells the user
when something failed, and keeps track of everything in flight so that a stop can let
it finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any

from bot.accounting import ReplyAccount
from bot.admin import AdminActions, AdminPolicy
from bot.admission import Admission, AdmissionLimits
from bot.command_answers import CommandAnswers
from bot.commands import (
    ASK_AGAIN,
    CHAT_COMMANDS,
    FAILED,
    HELP_TEXT,
    RESTARTED_NOTE,
    RESTARTING,
    RESTARTING_ASK_AGAIN,
    SEND_AGAIN,
    STOPPING,
    Command,
    answer_without_question,
    kept_for_restart,
    parse,
    question_of,
)
from bot.health import Health
from bot.inbox import Inbox, InboxError, SQLiteInbox, Unfinished
from bot.lineup import Lineup
from bot.manager import ConversationManager
from bot.metrics import Metrics, Outcome
from bot.ordering import Place
from bot.reply import Reply
from bot.streaming import MARK_TIMEOUT_S, stream_to_sink
from bot.surface import Kind, KindSink, Surface, SurfaceUnavailable
from bot.text_input import clean_incoming
from bot.threads import ThreadMap
from bot.trimming import ContextTooSmall
from bot.types import ConversationKey, Identity, Incoming
from model.engine import EngineError

log = logging.getLogger(__name__)

# Failures whose reason helps the user (a model error, a context too small); anything else stays in the log.
EXPLAINED_FAILURES = (EngineError, ContextTooSmall)
DEFAULT_STOP_GRACE_S = 10.0

DEFAULT_RESTART_WINDOW_S = 900.0

Work = Callable[[], Awaitable[object]]
# How an adapter finds the place to answer a message recorded by an earlier run (None: it is gone).
SurfaceFinder = Callable[[Unfinished], Awaitable[Surface | None]]


class Core:
    """All conversation behaviour: commands, admin policy, replies, failures, in-flight work and the stop."""

    def __init__(
        self,
        manager: ConversationManager,
        admins: AdminPolicy,
        actions: AdminActions,
        stop_grace_s: float = DEFAULT_STOP_GRACE_S,
        admission: Admission | None = None,
        metrics: Metrics | None = None,
        health: Health | None = None,
        inbox: Inbox | None = None,
        restart_window_s: float = DEFAULT_RESTART_WINDOW_S,
    ) -> None:
        self.manager = manager
        self._inbox = inbox or SQLiteInbox.open(":memory:")
        self._restart_window_s = restart_window_s
        self.metrics = metrics or Metrics()
        self.health = health or Health()
        self._admission = admission or Admission(AdmissionLimits())
        self._replies = 0  # replies waiting or being written, across every conversation
        self._lineup = Lineup(self._admission.limits.max_generating)
        self.metrics.track(
            waiting=lambda: self._replies - self._lineup.generating,
            generating=lambda: self._lineup.generating,
            kv_cache_use=lambda: manager.kv_cache_use,
        )
        self.metrics.model(manager.model_name)
        self._answers = CommandAnswers(manager, admins, actions)
        self._stop_grace_s = stop_grace_s
        self._in_flight: set[asyncio.Task[None]] = set()
        self._draining: asyncio.Future[int] | None = None

    @property
    def accepting(self) -> bool:
        """False once a stop has begun: new messages get a "shutting down" answer."""
        return self._draining is None

    @property
    def lineup(self) -> Lineup:
        """The line for generation slots every reply joins once its conversation's turn comes (read it, not join)."""
        return self._lineup

    @property
    def threads(self) -> ThreadMap:
        """The platform threads the bot follows, shared with every process using the same history."""
        return self.manager.threads

    @property
    def in_flight(self) -> int:
        """How many answers are being worked on now."""
        return len(self._in_flight)

    def submit(self, message: Incoming, surface: Surface, *, reply_to: str | None = None) -> asyncio.Task[None]:
        """Take ``message``'s place in its conversation now and answer it on ``surface`` in the background.

        Nothing here awaits, so whatever an adapter does after this call (acknowledging,
        deferring) cannot let a later message overtake this one.  A message with a platform id
        (``message.message_id``) or a ``reply_to`` address is recorded in the inbox before this
        returns: answered once however often it is delivered, and answered after a restart if the
        bot stops first (``reply_to`` is what the adapter's ``resume`` needs to find the place
        again).  The returned task never raises for a failed answer: the user is told and the
        error is logged.
        """
        message = clean_incoming(message)  # once, for every adapter: nothing after this sees raw bytes
        command = parse(message)
        if not self.accepting:
            self.metrics.message(message.key.platform, "refused")
            return self._spawn(self._guarded(partial(surface.send, STOPPING, Kind.PRIVATE), message, surface), None)
        row: int | None = None
        if message.message_id is not None or reply_to is not None:
            try:
                row = self._record(message, command, reply_to)
            except InboxError as error:  # answered all the same, only not after a restart
                log.error("Could not record a message from %s in the inbox: %s", message.author, error)
            else:
                if row is None:
                    log.debug("Skipped a repeated delivery of %s in %s", message.message_id, message.key)
                    return self._spawn(_nothing(), None)
        return self._route(message, command, surface, row)

    def _record(self, message: Incoming, command: Command, reply_to: str | None) -> int | None:
        """The message's inbox row (``None``: a repeat); chat is kept to answer after a restart.

        Files and threads are read when a message arrives, not kept: such a message is recorded
        without its text, and a restart asks its author to send it again.
        """
        answer = command.name in CHAT_COMMANDS and bool(question_of(message, command))
        recorded = message if kept_for_restart(message, command) else dataclasses.replace(message, text="")
        return self._inbox.accept(recorded, reply_to=reply_to, answer=answer)

    def _route(self, message: Incoming, command: Command, surface: Surface, row: int | None) -> asyncio.Task[None]:
        place: Place | None = None
        # Work is started only inside the task: a task cancelled before it runs leaves no coroutine behind.
        work: Work
        if command.name in CHAT_COMMANDS:
            question = question_of(message, command)
            refusal = self._refusal(message, question) if question else None
            if question and refusal is None:
                return self._chat(message, question, surface, row)
            self._count_refusal(message, refusal)
            self._finish_row(row)
            # A bare mention, /ask without a question, or a message the bot cannot take on now.
            work = partial(surface.send, refusal or answer_without_question(command), Kind.PRIVATE)
        elif command.name == "reset":
            resetting = self.manager.reset(message.key, row)
            place, work = resetting.place, partial(self._answers.reset, resetting, surface)
        elif command.name == "stats":
            work = partial(self._answers.stats, message.key, surface)
        elif command.name == "export":
            work = partial(self._answers.export, message.author, command.argument, surface)
        elif command.name == "persona":
            work = partial(self._answers.persona, message, command.argument, surface)
        else:
            work = partial(surface.send, HELP_TEXT, Kind.PRIVATE)
        if command.name not in CHAT_COMMANDS:
            self.metrics.message(message.key.platform, "answered")
        return self._spawn(self._guarded(work, message, surface), place)

    def _count_refusal(self, message: Incoming, refusal: str | None) -> None:
        # Commands and the help a bare mention gets count as answered; a full line is "busy".
        busy = refusal is not None and self._replies >= self._admission.limits.max_waiting
        outcome: Outcome = "answered" if refusal is None else "busy" if busy else "refused"
        self.metrics.message(message.key.platform, outcome)

    def _refusal(self, message: Incoming, text: str) -> str | None:
        return self._admission.refusal(message.author, text, self._replies, generating=self._lineup.generating)

    def _chat(
        self, message: Incoming, text: str, surface: Surface, row: int | None, *, resumed: bool = False
    ) -> asyncio.Task[None]:
        deadline_s = self._admission.limits.reply_deadline_s
        reply = self.manager.reply(
            message.key,
            text,
            time_limit_s=deadline_s,
            lineup=self._lineup,
            resumed=resumed,
            author=message.author.name or None,
            speaker=str(message.author),
            attachments=message.attachments,
            context=message.context,
            row=row,
        )
        note = RESTARTED_NOTE if resumed else None
        account = ReplyAccount(self.metrics, message, reply, row)
        work = partial(self._answer, reply, surface, note, account)
        task = self._spawn(self._guarded(work, message, surface, reply, account), reply.place)
        self._replies += 1

        def finished(_: object) -> None:
            self._replies -= 1
            # A reply cancelled by a stop stays in the inbox: the next start answers it.
            if not (task.cancelled() or account.stopped):
                self._finish_row(account.row)
            account.close(cancelled=task.cancelled())
            # Time spent generating, not waiting: the busy answer multiplies it by the replies in line.
            if reply.generating_s is not None:
                self._admission.timed(reply.generating_s)

        task.add_done_callback(finished)
        return task

    async def drain(self) -> int:
        """Stop taking messages, give answers in flight the grace period, cancel the rest; return how many.

        Every adapter calls this when it stops; the first call does the work, the others wait for it.
        """
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain())
        return await asyncio.shield(self._draining)

    async def _drain(self) -> int:
        # Answers that arrive meanwhile (each told that the bot is stopping) are waited for too.
        deadline = asyncio.get_running_loop().time() + self._stop_grace_s
        if self._in_flight:
            log.info("Stopping: letting %d answers finish (up to %.0f s)", len(self._in_flight), self._stop_grace_s)
        while self._in_flight and (left := deadline - asyncio.get_running_loop().time()) > 0:
            await asyncio.wait(set(self._in_flight), timeout=left)
        pending = set(self._in_flight)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("Stopping: cancelled %d answers still being written", len(pending))
            await asyncio.wait(pending)
        return len(pending)

    async def aclose(self) -> None:
        """Cancel whatever is still in flight and wait for it: the last step before the store and engine close.

        After a forced stop nothing may go on writing to a closed history or engine.
        """
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_future()
            self._draining.set_result(0)
        pending = set(self._in_flight)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    def _spawn(self, work: Coroutine[Any, Any, None], place: Place | None) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        if place is not None:
            # Given back on every path, also when the task is cancelled before it ever ran.
            task.add_done_callback(lambda _: place.leave())
        return task

    async def _guarded(
        self,
        work: Work,
        message: Incoming,
        surface: Surface,
        reply: Reply | None = None,
        account: ReplyAccount | None = None,
    ) -> None:
        # A reply keeps its place until everything about it is shown, a failure included.
        async with reply if reply is not None else contextlib.nullcontext():
            try:
                await work()
            except asyncio.CancelledError:
                if account is not None and not self.accepting:
                    account.stopped = True
                    later = account.row is not None and kept_for_restart(message, parse(message))
                    await self._tell_restarting(message, surface, answered_later=later)
                raise
            except SurfaceUnavailable as error:
                if account is not None:
                    account.failed = True
                log.warning("Could not answer %s in %s: %s", message.author, message.key, error)
            except Exception as error:  # the answer's boundary: tell the user in short, log it
                if account is not None:
                    account.failed = True
                await self._tell_failure(error, message, surface)

    @staticmethod
    async def _tell_failure(error: Exception, message: Incoming, surface: Surface) -> None:
        explained = isinstance(error, EXPLAINED_FAILURES)
        # A known failure says all there is to say; anything else is logged with its traceback.
        log.error("Could not answer %s in %s: %s", message.author, message.key, error, exc_info=not explained)
        try:
            await surface.send(f"{FAILED} ({error})" if explained else FAILED, Kind.INFO)
        except Exception as second:
            log.warning("Could not tell %s about the failure either: %s", message.author, second)

    @staticmethod
    async def _tell_restarting(message: Incoming, surface: Surface, *, answered_later: bool) -> None:
        # Already cancelled once: this send runs to its end unless the stop is forced.
        try:
            await surface.send(RESTARTING if answered_later else RESTARTING_ASK_AGAIN, Kind.NOTICE)
        except Exception as error:
            log.warning("Could not tell %s in %s that the bot is restarting: %s", message.author, message.key, error)

    async def resume(self, platform: str, surface_for: SurfaceFinder) -> int:
        """Answer the platform's messages that an earlier run accepted but never answered; return how many.

        An adapter calls this once it can post, before it takes new events.  ``surface_for``
        turns a recorded message back into the place to answer it (``None``: the place is gone).
        Messages older than the restart window are told to ask again instead.
        """
        resumed = 0
        try:
            left_over = self._inbox.unfinished(platform)
        except InboxError as error:  # the platform starts all the same; its old messages wait for the next start
            log.error("Cannot read the messages left unanswered (%s): %s", platform, error)
            return 0
        for left in left_over:
            try:
                surface = await surface_for(left)
            except Exception:  # one lost place must not keep the platform (or the next rows) from starting
                log.exception(
                    "Cannot find where to answer %s after the restart; trying again at the next start", left.message.key
                )
                continue
            resumed += self._resume_one(left, surface)
        if resumed:
            log.info("Answering %d messages left unanswered when the bot stopped (%s)", resumed, platform)
        return resumed

    def _resume_one(self, left: Unfinished, surface: Surface | None) -> bool:
        if not self.accepting:
            return False  # stopping again: it stays for the next start
        too_old = time.time() - left.received_at > self._restart_window_s
        question = parse(left.message).argument  # empty: its files or thread were not kept
        if surface is None or too_old or not question:
            self._finish_row(left.id)
            if surface is not None:
                self.metrics.message(left.message.key.platform, "refused")
                tell = partial(surface.send, ASK_AGAIN if question else SEND_AGAIN, Kind.NOTICE)
                self._spawn(self._guarded(tell, left.message, surface), None)
            return False
        self._chat(left.message, question, surface, left.id, resumed=True)
        return True

    def _finish_row(self, row: int | None) -> None:
        """The message is answered (or told why not): it is not answered again after a restart."""
        if row is None:
            return
        try:
            self._inbox.done(row)
        except InboxError as error:  # it may be answered once more after a restart; nothing is lost
            log.error("Could not mark message %d answered in the inbox: %s", row, error)

    async def _answer(self, reply: Reply, surface: Surface, note: str | None, account: ReplyAccount) -> None:
        if note is not None:
            await surface.send(note, Kind.NOTICE)
        pacing = surface.pacing
        sink = KindSink(surface, Kind.REPLY)
        # The indicator shows only once the reply generates; until then its place in line does.
        waiting = surface.indicate(Kind.REPLY)
        try:
            await stream_to_sink(reply, sink, pacing.budget, pacing.message_limit, waiting, queued=reply)
        except BaseException:
            await _finished(surface, complete=False)
            raise
        await _finished(surface, complete=True)
        # Delivered and stored: a stop from here on must not answer it again at the next start.
        self._finish_row(account.row)
        account.row = None
        for notice in reply.notices:
            await surface.send(notice, Kind.NOTICE)

    async def record_feedback(self, key: ConversationKey, message_id: str, who: Identity, *, helpful: bool) -> None:
        """Keep ``who``'s rating of the bot's reply ``message_id`` in ``key`` (a platform's feedback buttons).

        Counted per channel in /stats; a failure to keep it is logged, never shown.
        """
        try:
            await self.manager.record_feedback(key, message_id, who.user_id, helpful=helpful)
        except Exception:
            log.exception("Could not record feedback on %s in %s", message_id, key)
            return
        self.metrics.feedback(key.platform, helpful=helpful)


async def _finished(surface: Surface, *, complete: bool) -> None:
    """Tell the surface its reply has ended; a failure there is logged (the text is shown already)."""
    try:
        async with asyncio.timeout(MARK_TIMEOUT_S):
            await surface.finish(complete=complete)
    except Exception as error:
        log.warning("Could not finish a reply's message: %s", error)


async def _nothing() -> None:
    """The work of a message already answered (a repeated delivery)."""
