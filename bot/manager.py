"""The conversation manager: history, trimming, rendering and streaming, per conversation.

The core calls ``reply(key, text)`` and iterates the returned ``Reply`` for text
chunks inside ``async with``.  Messages of one conversation are answered one at a time in arrival order;
different conversations only share the engine, never a lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from bot.attachments import DEFAULT_LIMIT_BYTES, read_files
from bot.attribution import attribute, transcript, typed
from bot.channel_store import Feedback
from bot.guard import guard_for
from bot.lineup import Lineup
from bot.ordering import ArrivalOrder, Place
from bot.reply import PendingReset, Reply
from bot.store import HistoryStore
from bot.threads import ThreadMap
from bot.trimming import ContextTooSmall, FittedPrompt, Render, fit_prompt
from bot.types import Attachment, ConversationKey, Said
from model.engine import ChatMessage, Engine, GenerationParams, ReplyStats, TokenStream
from model.phi3 import PHI3_CONTROL_TOKENS, render_phi3
from model.slot import EngineSlot

log = logging.getLogger(__name__)

# Stats of the last reply are kept for this many recently active conversations.
STATS_KEPT = 10_000
CUT_NOTICE = "Your message was too long for the model's context; only its beginning was read."
DEADLINE_NOTICE = "Stopped here: a reply may take at most {seconds:.0f} s."
OLDER_LEFT_OUT = (
    "The discussion is too long for the model's context: I read only its newest {kept} of {total} messages."
)
DISCUSSION_TOO_LONG = "the discussion's newest message alone is too long for the model's context"
# The last turn of a catch-up prompt, after the discussion's messages.
ABOUT_THE_ABOVE = "The messages above are the discussion I am asking about. {question}"


# Waits until every earlier message of a conversation that another bot process took is answered
# (the PostgreSQL inbox's ``turn``): one conversation's answers stay in order across processes.
SharedTurn = Callable[[ConversationKey, int | None], Awaitable[None]]


@dataclass(frozen=True)
class ConversationConfig:
    """How replies are generated."""

    system_prompt: str
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    history_limit: int = 200
    attachment_limit_bytes: int = DEFAULT_LIMIT_BYTES


class ConversationManager:
    """Keeps every conversation's history and turns new messages into streamed replies."""

    def __init__(
        self,
        engines: EngineSlot,
        store: HistoryStore,
        config: ConversationConfig,
        *,
        shared_turn: SharedTurn | None = None,
    ) -> None:
        self._engines = engines
        self._store = store
        self._config = config
        self._shared_turn = shared_turn
        self._order = ArrivalOrder()
        self._last_stats: OrderedDict[ConversationKey, ReplyStats] = OrderedDict()

    @property
    def model_name(self) -> str:
        """Name of the model that answers new messages."""
        return self._engines.current.info.name

    @property
    def threads(self) -> ThreadMap:
        """The platform threads the bot follows, kept with the history (shared by the processes sharing it)."""
        return self._store.threads

    @property
    def kv_cache_use(self) -> float | None:
        """How full the answering engine's KV cache is (0-1); ``None`` where the engine cannot tell."""
        return self._engines.kv_cache_use

    def reply(
        self,
        key: ConversationKey,
        text: str,
        *,
        time_limit_s: float | None = None,
        lineup: Lineup | None = None,
        resumed: bool = False,
        author: str | None = None,
        speaker: str | None = None,
        attachments: tuple[Attachment, ...] = (),
        context: tuple[Said, ...] = (),
        row: int | None = None,
    ) -> Reply:
        """Queue ``text`` in conversation ``key`` (its place is taken now); use the result with ``async with``.

        ``time_limit_s`` after this call (waiting in line included) the reply stops at its next chunk, with a notice.
        With a ``lineup``, the reply generates only while it holds one of the lineup's slots.  A ``resumed`` reply
        answers a message again after a restart: its user turn is not stored twice.  ``author`` (a display name)
        and ``speaker`` (who it is, never shown) are stored with the turn, so that a conversation of several
        people names each one to the model, two of the same name apart; text ``attachments`` are read into the
        turn.  With ``context`` (a thread to catch up on) the prompt is that discussion, newest messages kept,
        and ``text`` the question about it; the question and the answer are stored in ``key`` as other turns are.
        ``row`` is the message's inbox row: a ``shared_turn`` waits for earlier rows other bot processes answer.
        """
        reply = Reply(self, key, text, self._order.take_place(key), time_limit_s, lineup)
        reply.resumed, reply.row = resumed, row
        reply.author, reply.speaker, reply.attachments, reply.context = author, speaker, attachments, context
        return reply

    def reset(self, key: ConversationKey, row: int | None = None) -> PendingReset:
        """Forget a conversation's history once the messages before it are answered; await it for the turns removed.

        The place in line is taken now, before the result is awaited, as ``reply`` does; ``row`` (its inbox row)
        also waits for earlier messages other bot processes answer.
        """
        return PendingReset(self, key, self._order.take_place(key), row)

    async def _reset(self, key: ConversationKey, place: Place, row: int | None) -> int:
        try:
            await place.wait()
            if self._shared_turn is not None:
                await self._shared_turn(key, row)
            self._last_stats.pop(key, None)
            return await self._store.reset(key)
        finally:
            place.leave()

    def waiting(self, key: ConversationKey) -> int:
        """How many replies and resets of ``key`` hold a place in its line now (the one being served included)."""
        return self._order.waiting(key)

    def last_stats(self, key: ConversationKey) -> ReplyStats | None:
        """Measurements of the last reply in ``key``, if any."""
        return self._last_stats.get(key)

    async def persona(self, key: ConversationKey) -> str | None:
        """The instructions (system prompt) an admin set for ``key``'s channel, or ``None`` for the default."""
        return await self._store.persona(key)

    @property
    def default_persona(self) -> str:
        """The system prompt of channels without their own."""
        return self._config.system_prompt

    async def set_persona(self, key: ConversationKey, prompt: str | None, set_by: str) -> None:
        """Give ``key``'s channel its own instructions (``None``: back to the default) from its next reply on."""
        await self._store.set_persona(key, prompt, set_by)

    async def record_feedback(self, key: ConversationKey, message_id: str, user_id: str, *, helpful: bool) -> None:
        """Keep one person's rating of the reply ``message_id`` in ``key``."""
        await self._store.record_feedback(key, message_id, user_id, helpful=helpful)

    async def feedback(self, key: ConversationKey) -> Feedback:
        """How people rated the replies in ``key``'s channel."""
        return await self._store.feedback(key)

    async def _run(self, reply: Reply) -> AsyncGenerator[str]:
        try:
            await self._read_files(reply)  # before its turn: downloads overlap the replies ahead of it
            await reply.place.wait()
            await self._wait_shared_turn(reply)
            async with reply._generating(), self._engines.lease() as engine:
                await self._store_user_turn(reply)
                stream = await self._start(engine, reply)
                reply.interrupted = True  # until the stream runs to its end
                try:
                    async for chunk in stream:
                        reply.text += chunk
                        yield chunk
                        if self._past_deadline(reply):
                            break
                    else:
                        reply.interrupted = False
                finally:
                    await stream.aclose()
                    await self._record(reply, stream.stats)
        finally:
            if not reply._held:
                reply.place.leave()

    async def _wait_shared_turn(self, reply: Reply) -> None:
        """Wait for earlier messages other processes answer, no longer than the reply's own deadline allows."""
        if self._shared_turn is None:
            return
        try:
            async with asyncio.timeout_at(reply.deadline):
                await self._shared_turn(reply.key, reply.row)
        except TimeoutError:
            log.warning("Earlier messages of %s in other bot processes outlasted this reply's deadline", reply.key)

    async def _read_files(self, reply: Reply) -> None:
        if not reply.attachments:
            return
        files = await read_files(reply.attachments, self._config.attachment_limit_bytes)
        reply.prompt_text = (reply.prompt_text + files.text).strip()
        reply.notices.extend(files.notices)

    async def _store_user_turn(self, reply: Reply) -> None:
        turn = ChatMessage("user", reply.prompt_text, reply.author, reply.speaker)
        if reply.resumed:
            # A run killed after storing the turn (and before any answer) must not leave it there twice.
            last = await self._store.history(reply.key, 1)
            if last and (last[-1].role, last[-1].content) == (turn.role, turn.content):
                return
        await self._store.append(reply.key, turn)

    def _past_deadline(self, reply: Reply) -> bool:
        if reply.deadline is None or asyncio.get_running_loop().time() < reply.deadline:
            return False
        reply.notices.append(DEADLINE_NOTICE.format(seconds=reply.time_limit_s))
        return True

    async def _start(self, engine: Engine, reply: Reply) -> TokenStream:
        system = await self._store.persona(reply.key) or self._config.system_prompt
        if reply.context:
            return await self._start_catch_up(engine, reply, system)
        history = attribute(await self._store.history(reply.key, self._config.history_limit))
        fitted = await self._fit(engine, merge_consecutive_turns(history), system)
        if fitted.cut_message:
            reply.notices.append(CUT_NOTICE)
        return engine.stream(fitted.prompt, self._params(reply.key))

    async def _start_catch_up(self, engine: Engine, reply: Reply, system: str) -> TokenStream:
        # One turn per message, so the trimmer drops the oldest first; they are joined into one turn to render.
        messages = transcript(reply.context)
        # Rendered in one turn with the discussion: the asker's text must not pass for one of its messages.
        question = ChatMessage("user", ABOUT_THE_ABOVE.format(question=typed(reply.prompt_text)))
        fitted = await self._fit(engine, [*messages, question], system, joined=True)
        if messages and fitted.dropped_turns >= len(messages):
            raise ContextTooSmall(DISCUSSION_TOO_LONG)
        if fitted.dropped_turns:
            kept = len(messages) - fitted.dropped_turns
            reply.notices.append(OLDER_LEFT_OUT.format(kept=kept, total=len(messages)))
        if fitted.cut_message:
            reply.notices.append(CUT_NOTICE)
        return engine.stream(fitted.prompt, self._params(reply.key))

    async def _record(self, reply: Reply, stats: ReplyStats | None) -> None:
        # A stopped reply keeps the text it showed, so the history matches what users saw.
        if reply.text:
            await self._store.append(reply.key, ChatMessage("assistant", reply.text), interrupted=reply.interrupted)
        reply.stats = stats
        if stats is not None:
            self._remember_stats(reply.key, stats)

    def _remember_stats(self, key: ConversationKey, stats: ReplyStats) -> None:
        self._last_stats[key] = stats
        self._last_stats.move_to_end(key)
        if len(self._last_stats) > STATS_KEPT:
            self._last_stats.popitem(last=False)

    async def _fit(
        self, engine: Engine, turns: Sequence[ChatMessage], system_prompt: str, *, joined: bool = False
    ) -> FittedPrompt:
        """Fit ``turns`` (``joined``: rendered as one turn per role run) under the system prompt, all defused.

        The system prompt is the operator's, or a channel's persona set from chat: defused too, as chat text.
        """
        info = engine.info
        guard = guard_for(engine.control_tokens | (PHI3_CONTROL_TOKENS if info.family == "phi3" else frozenset()))
        base: Render = render_phi3 if info.family == "phi3" else engine.apply_chat_template
        render: Render = (lambda messages: base(merge_consecutive_turns(messages))) if joined else base
        if system_prompt != self._config.system_prompt:
            system_prompt = guard.defuse(system_prompt)
        system = ChatMessage("system", system_prompt) if system_prompt else None
        budget = info.context_size - self._config.max_new_tokens
        fitted = await fit_prompt(system, guard.defuse_messages(turns), render, engine.count_tokens, budget)
        if fitted.dropped_turns:
            log.debug("Dropped %d old turns to fit the context", fitted.dropped_turns)
        return fitted

    def _params(self, key: ConversationKey) -> GenerationParams:
        config = self._config
        return GenerationParams(
            config.max_new_tokens, config.temperature, config.top_p, config.repetition_penalty, affinity=str(key)
        )


def merge_consecutive_turns(history: Sequence[ChatMessage]) -> list[ChatMessage]:
    """Join turns of the same role that follow each other.

    A reply that failed or was stopped before any text leaves two user turns in a
    row; many chat templates (Llama 2, Mistral, Gemma) reject that.
    """
    merged: list[ChatMessage] = []
    for message in history:
        if merged and merged[-1].role == message.role:
            same = (merged[-1].name, merged[-1].speaker) == (message.name, message.speaker)
            name, speaker = (message.name, message.speaker) if same else (None, None)
            merged[-1] = ChatMessage(message.role, f"{merged[-1].content}\n\n{message.content}", name, speaker)
        else:
            merged.append(message)
    return merged
