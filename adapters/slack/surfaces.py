"""Where the core's output lands on Slack (a thread, a slash command's response): how each ``Kind`` is posted."""

from __future__ import annotations

import contextlib
from contextlib import AbstractAsyncContextManager

from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient
from slack_sdk.webhook.webhook_response import WebhookResponse

from adapters.slack.mrkdwn import escape, to_mrkdwn
from adapters.slack.state import SharedThreads
from bot.surface import Kind, Pacing, SurfaceUnavailable
from bot.types import Incoming

CANNOT_POST = "I can't post in this channel ({error}). Invite me to it, or message me directly."
# A response_url takes 5 answers; the last two are kept for texts that must arrive (an outcome, a failure).
RESPONSES_PER_COMMAND = 5
RESPONSES_KEPT = 2
# The bot's own texts answer a slash command through its response_url (PRIVATE ones to the asker only).
_OWN_TEXTS = frozenset({Kind.INFO, Kind.PRIVATE})


def render(text: str, kind: Kind) -> str:
    """The core's text as Slack mrkdwn; whatever the text says, it can never ping anybody."""
    if kind is Kind.REPLY:
        return to_mrkdwn(text)
    if kind is Kind.NOTICE:
        return f"_{escape(text)}_"
    return escape(text)


class _SlackSurface:
    def __init__(self, client: AsyncWebClient, pacing: Pacing) -> None:
        self.pacing = pacing
        self._client = client

    def indicate(self, kind: Kind) -> AbstractAsyncContextManager[object]:
        """Nothing: a Slack bot has no typing indicator outside the assistant API."""
        return contextlib.nullcontext()

    async def finish(self, *, complete: bool) -> None:
        """Nothing stays open after a reply here."""


class ThreadSurface(_SlackSurface):
    """A Slack thread (``thread_ts=None``: the channel itself); links are never unfurled."""

    def __init__(self, client: AsyncWebClient, channel: str, thread_ts: str | None, pacing: Pacing) -> None:
        super().__init__(client, pacing)
        self.channel = channel
        self._thread_ts = thread_ts

    async def send(self, text: str, kind: Kind) -> str:
        """Post in the thread; the handle is the message's ts."""
        return await self.post(render(text, kind))

    async def edit(self, handle: object, text: str, kind: Kind) -> None:
        """Replace the text of a message posted by ``send``."""
        await self._client.chat_update(channel=self.channel, ts=str(handle), text=render(text, kind))

    async def post(self, mrkdwn: str) -> str:
        """Post text that is already safe mrkdwn; return its ts."""
        response = await self._client.chat_postMessage(
            channel=self.channel, thread_ts=self._thread_ts, text=mrkdwn, unfurl_links=False, unfurl_media=False
        )
        # Slack answers with the channel id even when it was addressed another way.
        self.channel = str(response.get("channel") or self.channel)
        return str(response["ts"])


class CommandSurface(_SlackSurface):
    """A slash command: the bot's own texts answer through its response_url, the model's reply in a visible thread.

    The invocation itself is invisible to the channel, so the first reply text posts the
    question as a thread's header; the thread then continues the channel's conversation.
    """

    def __init__(
        self, client: AsyncWebClient, command: Incoming, respond: AsyncRespond, pacing: Pacing, threads: SharedThreads
    ) -> None:
        super().__init__(client, pacing)
        self._command = command
        self._respond = respond
        self._threads = threads
        self._thread: ThreadSurface | None = None
        self._responses = 0

    async def send(self, text: str, kind: Kind) -> object:
        """Respond through the response_url, or post in the answer's thread (starting it first)."""
        if kind in _OWN_TEXTS:
            await self._answer(text, kind, replace=False)
            return None
        thread = self._thread or await self._start_thread()
        return await thread.send(text, kind)

    async def edit(self, handle: object, text: str, kind: Kind) -> None:
        """Replace the ephemeral response, or a message in the answer's thread.

        Ephemeral edits stop short of the response_url's limit, keeping room for the texts that must arrive.
        """
        if kind in _OWN_TEXTS:
            if self._responses < RESPONSES_PER_COMMAND - RESPONSES_KEPT:
                await self._answer(text, kind, replace=True)
            return
        assert self._thread is not None, "edited a thread message before posting one"
        await self._thread.edit(handle, text, kind)

    async def _answer(self, text: str, kind: Kind, *, replace: bool) -> None:
        self._responses += 1
        visibility = "ephemeral" if kind is Kind.PRIVATE else "in_channel"
        response = await self._post_response(escape(text), response_type=visibility, replace_original=replace)
        # The webhook client returns an error status rather than raising (an expired or used-up response_url).
        if response.status_code >= 400:
            raise RuntimeError(f"Slack refused a slash command's response ({response.status_code}: {response.body})")

    async def _start_thread(self) -> ThreadSurface:
        command, top = self._command, ThreadSurface(self._client, self._command.key.channel, None, self.pacing)
        try:
            # Escaped inside the mention too: <@…> can only ever name a user.
            ts = await top.post(f"<@{escape(command.author.user_id)}> asked: {escape(command.text)}")
        except SlackApiError as error:
            # The core's failure text cannot say why; the asker can fix this one.
            reason = str(error.response.get("error"))
            await self._post_response(CANNOT_POST.format(error=escape(reason)))
            raise SurfaceUnavailable(f"cannot post in {command.key.channel}: {reason}") from error
        await self._threads.follow(top.channel, ts, command.key)  # its replies go on with the channel's
        self._thread = ThreadSurface(self._client, top.channel, ts, self.pacing)
        return self._thread

    async def _post_response(
        self, text: str, *, response_type: str | None = None, replace_original: bool | None = None
    ) -> WebhookResponse:
        """Bolt's ``respond``, with the Web API client's retries (bolt's own retries only a dropped connection, once).

        Without a response_url (never, for a slash command) bolt's ``respond`` says why.
        """
        url = self._respond.response_url
        if url is None:
            return await self._respond(text, response_type=response_type, replace_original=replace_original)
        webhook = AsyncWebhookClient(
            url=url, proxy=self._respond.proxy, ssl=self._respond.ssl, retry_handlers=list(self._client.retry_handlers)
        )
        return await webhook.send(text=text, response_type=response_type, replace_original=replace_original)
