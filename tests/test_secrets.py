"""No secret in any output: every `bot` command at DEBUG with fake tokens of each kind set.

Each command runs as the operator runs it (a subprocess, its stdout and stderr captured),
all at once so the file stays short.  `bot run` talks only to the Discord and Slack
stand-ins on 127.0.0.1: once with tokens they accept (and a question answered), once with
tokens they reject.  Nothing reaches the internet (HF_HUB_OFFLINE, local API bases).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.discord.standin import DiscordStandIn
from tests.slack.conftest import CHANNEL, USER
from tests.slack.standin import APP_TOKEN, BOT_TOKEN, BOT_USER_ID, SlackStandIn, message_event
from tests.test_console import bot_env

pytestmark = pytest.mark.model

# Fake secrets of every kind; each has a tail (the part after its kind's prefix) no log line has by chance.
TAILS = {
    "DISCORD_TOKEN": ("MTA5ODc2NTQzMjEw.GfAkEd.", "h4DiscordSecretQm7vX2"),
    "SLACK_BOT_TOKEN": ("xoxb-", "h4-0000-slack-bot-secret-Zt5"),
    "SLACK_APP_TOKEN": ("xapp-1-", "A000-h4-slack-app-secret-Kp8"),
    "SLACK_SIGNING_SECRET": ("", "h4signingsecret8c1f0e2d9b7a"),
    "HF_TOKEN": ("hf_", "h4HuggingFaceSecretWq3Nc9"),
}
SECRETS = {name: prefix + tail for name, (prefix, tail) in TAILS.items()}
# The stand-in's own Slack tokens, which `bot run` uses where Slack must accept it.
STANDIN_TAILS = {BOT_TOKEN: BOT_TOKEN.removeprefix("xoxb-"), APP_TOKEN: APP_TOKEN.removeprefix("xapp-")}
LIMIT_S = 240.0  # every command together, on a loaded two-core runner
STOP_AFTER_S = 3.0  # how long `bot run` goes on serving, once it has answered, before SIGTERM


@dataclass
class Ran:
    """What one command printed, stdout and stderr together, and how it exited."""

    output: str
    returncode: int | None


@dataclass
class Outcome:
    """Every command's output, and whether the fake tokens really reached the stand-ins."""

    ran: dict[str, Ran]
    discord_identified: bool  # the accepting Discord stand-in saw DISCORD_TOKEN's gateway session
    slack_got_token: bool  # the Slack stand-in was called with the fake xoxb- token (and refused it)


def home(root: Path, name: str) -> Path:
    """A fresh working and data directory for one command."""
    directory = root / name.replace(" ", "_").replace(",", "")
    directory.mkdir()
    return directory


def environment(model: Path, directory: Path, **extra: str) -> dict[str, str]:
    """The bot's environment at DEBUG with every fake secret set (``extra`` overrides), offline."""
    env = bot_env(model, directory, BOT_LOG_LEVEL="DEBUG", HF_HUB_OFFLINE="1", HF_HOME=str(directory / "hf"), **SECRETS)
    env.update(extra)
    return env


async def start(args: list[str], env: dict[str, str], cwd: Path, stdin: bytes | None) -> Process:
    """``bot ARGS`` in ``cwd`` (made by ``home``; no .env there), its stderr merged into stdout."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "entry",
        *args,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def finish(process: Process, stdin: bytes | None = None) -> Ran:
    """Wait for ``process`` (killed after ``LIMIT_S``) and return what it printed."""
    try:
        output, _ = await asyncio.wait_for(process.communicate(stdin), timeout=LIMIT_S)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
    return Ran(output.decode(errors="replace"), process.returncode)


async def serve_then_stop(process: Process, serving: Awaitable[object]) -> Ran:
    """Let `bot run` serve until ``serving`` is done (or it exits), a few seconds more, then SIGTERM it."""
    exited = asyncio.ensure_future(process.wait())
    served = asyncio.ensure_future(serving)
    await asyncio.wait({exited, served}, timeout=LIMIT_S, return_when=asyncio.FIRST_COMPLETED)
    served.cancel()
    if not exited.done():
        await asyncio.sleep(STOP_AFTER_S)
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    return await finish(process)


async def answered_on_both(discord: DiscordStandIn, slack: SlackStandIn) -> None:
    """Both platforms connected and a Slack question answered."""
    await discord.connected(LIMIT_S)
    await slack.wait_for(lambda: slack.socket_open or None, limit_s=LIMIT_S)
    ts = slack.next_ts()
    await slack.send_event(
        message_event(f"<@{BOT_USER_ID}> Name a colour.", channel=CHANNEL, user=USER, ts=ts, kind="app_mention")
    )
    await slack.wait_replies(CHANNEL, ts, limit_s=LIMIT_S)


# name -> (arguments, environment besides the secrets, stdin)
COMMANDS: dict[str, tuple[list[str], dict[str, str], bytes | None]] = {
    "chat": (["chat"], {}, b"/help\nWhat is the capital of France?\n/quit\n"),
    "ask": (["ask", "What is the capital of France?"], {}, None),
    "export --help": (["export", "--help"], {}, None),
    "export failing": (["export", "--model", "h4-org/private-model"], {}, None),
    "bench --help": (["bench", "--help"], {}, None),
    "history --help": (["history", "--help"], {}, None),
    "settings error": (["chat"], {"BOT_MAX_NEW_TOKENS": "many"}, b""),
    "a secret in the wrong setting": (["ask", "hi"], {"BOT_USER_RATE": SECRETS["HF_TOKEN"]}, None),
}
# What each command's output shows when it did its work, so that "no secret shown" is not "nothing ran".
SHOWS = {
    "run": "Stopped",
    "run, tokens refused": "rejected",
    "chat": "Paris",
    "ask": "Paris",
    "export --help": "Usage",
    "export failing": "h4-org/private-model",
    "bench --help": "Usage",
    "history --help": "Usage",
    "settings error": "Invalid settings",
    "a secret in the wrong setting": "BOT_USER_RATE",
}


@pytest.fixture(scope="module")
async def outcome(bundled_model: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Outcome]:
    """Every command run at once against fresh stand-ins."""
    root = tmp_path_factory.mktemp("secrets")
    started: list[Process] = []

    async def launch(name: str, args: list[str], extra: dict[str, str], stdin: bytes | None = None) -> Process:
        directory = home(root, name)
        started.append(await start(args, environment(bundled_model, directory, **extra), directory, stdin))
        return started[-1]

    accepting, refusing = DiscordStandIn(token=SECRETS["DISCORD_TOKEN"]), DiscordStandIn()
    await accepting.start()
    await refusing.start()
    try:
        async with SlackStandIn() as slack:
            runs: dict[str, Awaitable[Ran]] = {}
            for name, (args, extra, stdin) in COMMANDS.items():
                runs[name] = finish(await launch(name, args, extra, stdin), stdin)
            platforms = {"SLACK_API_URL": slack.api_url, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN}
            running = await launch("run", ["run"], {"DISCORD_API_BASE": accepting.api_base, **platforms})
            runs["run"] = serve_then_stop(running, answered_on_both(accepting, slack))
            refused = await launch(
                "refused", ["run"], {"DISCORD_API_BASE": refusing.api_base, "SLACK_API_URL": slack.api_url}
            )
            runs["run, tokens refused"] = serve_then_stop(refused, asyncio.Event().wait())  # it exits by itself
            results = await asyncio.gather(*runs.values())
            slack_got_token = any(call.token == SECRETS["SLACK_BOT_TOKEN"] for call in slack.calls)
    finally:
        for process in started:
            if process.returncode is None:  # only after a failure here: gather waited for every command
                process.kill()
                await process.wait()
        await accepting.close()
        await refusing.close()
    identified = bool(accepting.sessions or accepting.closed_sessions)
    yield Outcome(dict(zip(runs, results, strict=True)), identified, slack_got_token)


@pytest.mark.parametrize("name", list(SHOWS))
def test_no_secret_in_any_output(outcome: Outcome, name: str) -> None:
    ran = outcome.ran[name]
    assert SHOWS[name] in ran.output, f"`bot {name}` did not do its work (exit {ran.returncode}):\n{ran.output}"
    for secret, tail in [*((SECRETS[n], t) for n, (_, t) in TAILS.items()), *STANDIN_TAILS.items()]:
        assert secret not in ran.output and tail not in ran.output, f"`bot {name}` showed a secret:\n{ran.output}"


def test_the_fake_tokens_were_in_use(outcome: Outcome) -> None:
    """The tokens really went to the stand-ins, so their absence from the output means something."""
    assert outcome.discord_identified and outcome.slack_got_token
