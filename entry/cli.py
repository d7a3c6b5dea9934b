"""The `bot` command line: run, chat, ask."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import typer

from adapters.base import Adapter, PlatformStartupError
from adapters.console import ConsoleAdapter, answer_once
from bot.core import Core
from bot.inbox import InboxError
from bot.settings import Settings, SettingsError
from bot.store import HistoryStoreError
from bot.trimming import ContextTooSmall
from entry.bench.run import FULL, QUICK, run_bench
from entry.compose import open_core
from entry.export_cli import export as export_command
from entry.history_cli import history_app
from entry.platforms import MissingExtra, load_adapters, run_observed
from entry.startup import EXIT_BAD_SETTINGS, settings_or_exit
from model.engine import EngineError, ModelLoadError
from model.export_checks import ExportError

app = typer.Typer(
    help="A self-hosted team-chat bot answering with a local OpenVINO model.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals would include settings and tokens
)


def _serve(settings: Settings, session: Callable[[Core], Awaitable[None]], *, persistent: bool) -> None:
    async def main() -> None:
        typer.echo("Loading the model…", err=True)
        async with open_core(settings, persistent=persistent, follow_exports=persistent) as core:
            await session(core)

    try:
        asyncio.run(main())
    except ModelLoadError as error:
        typer.echo(f"Model error: {error}", err=True)
        raise typer.Exit(1) from None
    except SettingsError as error:  # a platform found a setting it needs missing or wrong
        typer.echo(f"Invalid settings:\n{error}", err=True)
        raise typer.Exit(EXIT_BAD_SETTINGS) from None
    except (PlatformStartupError, HistoryStoreError, InboxError, EngineError, ContextTooSmall) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None


@app.callback(invoke_without_command=True)
def main(context: typer.Context) -> None:
    """With no command: `bot run`."""
    if context.invoked_subcommand is None:
        run()


@app.command()
def run() -> None:
    """Start every platform whose tokens are set; the console chat when none are."""
    settings = settings_or_exit()
    try:
        adapters = load_adapters(settings)
    except (MissingExtra, SettingsError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_BAD_SETTINGS) from None
    if not adapters:
        chat()
        return
    _serve(settings, lambda core: run_observed(adapters, core, settings), persistent=True)


@app.command()
def chat() -> None:
    """Chat in the terminal; replies stream as they are generated."""
    settings = settings_or_exit()
    console: Adapter = ConsoleAdapter(sys.stdout)
    _serve(settings, lambda core: console.serve(core, asyncio.Event()), persistent=True)


@app.command()
def ask(question: Annotated[str, typer.Argument(help="The question to answer.")]) -> None:
    """Print one answer and exit."""
    settings = settings_or_exit()

    async def one_answer(core: Core) -> None:
        if not await answer_once(core, question, sys.stdout, sys.stderr):
            raise typer.Exit(1)  # the bot said why on stderr

    _serve(settings, one_answer, persistent=False)


@app.command()
def bench(
    quick: Annotated[bool, typer.Option(help="A short smoke run: it shows everything works, not the targets.")] = False,
    output: Annotated[Path, typer.Option(help="Where to write the report.")] = Path("BENCHMARKS.md"),
    phi3_shape: Annotated[
        bool, typer.Option(help="Also P6: P1-P3 on a Phi-3-mini-shaped model (needs the export extra; minutes).")
    ] = False,
    engine_url: Annotated[
        list[str] | None,
        typer.Option(
            "--engine-url",
            help="Measure P1/P2 through these model servers (OpenAI-compatible API bases; repeatable or "
            "comma-separated) instead of llama.cpp's server on loopback.",
        ),
    ] = None,
) -> None:
    """Measure how the bot serves many people (P1-P5) on the bundled model; write BENCHMARKS.md."""
    settings = settings_or_exit()
    plan = QUICK if quick else FULL
    try:
        report = asyncio.run(run_bench(settings, plan, output, phi3_shape=phi3_shape, engine_urls=engine_url or []))
    except (ModelLoadError, EngineError, ExportError) as error:
        typer.echo(f"Benchmark failed: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(report.markdown())


app.command("export")(export_command)
app.add_typer(history_app, name="history")
