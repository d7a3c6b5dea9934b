"""llama.cpp's OpenAI-compatible server on loopback, for `bot bench` and the remote-engine tests.

``llama_server(model)`` starts ``python -m llama_cpp.server`` (the ``bench`` extra) serving one GGUF file on
127.0.0.1, waits until ``/v1/models`` answers and stops the server on exit (terminate, then kill). The server
writes its log to a file, so a server that fails to start is reported with the end of its log, and tests can
read which requests it served.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
_POLL_S = 0.25
_LOG_TAIL_LINES = 20
# The server extra's own modules: llama_cpp alone (the bench's decode baseline) cannot serve.
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


class LlamaServerError(RuntimeError):
    """llama.cpp's server is not installed, did not start, or stopped answering."""


@dataclass
class LlamaServer:
    """A running llama.cpp server: ``url`` is its OpenAI-compatible API base (``http://127.0.0.1:PORT/v1``)."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def port(self) -> int:
        """The loopback port it listens on."""
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def kill(self) -> None:
        """SIGKILL the server at once (a server that dies mid-reply); safe to call twice."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def log_text(self) -> str:
        """Everything the server has logged so far (its access log names every request it served)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of its log."""
        return "\n".join(self.log_text().splitlines()[-lines:])


def require_server_extra() -> None:
    """Raise a clear ``LlamaServerError`` when llama.cpp's server (the ``bench`` extra) is not installed."""
    missing = [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise LlamaServerError(
            f"llama.cpp's server is not installed (missing {', '.join(missing)}): "
            "install the bench extra with `pip install -e '.[bench]'`."
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def llama_server(
    model: Path,
    *,
    n_ctx: int = 2048,
    port: int | None = None,
    api_key: str | None = None,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
) -> AsyncIterator[LlamaServer]:
    """Serve ``model`` (a GGUF file) with llama.cpp's server on 127.0.0.1 until the block ends.

    Raises ``LlamaServerError`` (with the end of the server's log) if it exits or does not answer
    ``/v1/models`` within ``startup_timeout_s``. With ``api_key`` the server requires it (as a bearer token).
    The model's id on the server is the file's stem.
    """
    server = _start(model, n_ctx, port, api_key)
    try:
        await _wait_ready(server, startup_timeout_s)
        yield server
    finally:
        await asyncio.to_thread(_stop, server)


@contextlib.contextmanager
def llama_server_sync(
    model: Path,
    *,
    n_ctx: int = 2048,
    port: int | None = None,
    api_key: str | None = None,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
) -> Iterator[LlamaServer]:
    """``llama_server`` for code without an event loop (blocking)."""
    server = _start(model, n_ctx, port, api_key)
    try:
        asyncio.run(_wait_ready(server, startup_timeout_s))
        yield server
    finally:
        _stop(server)


def _start(model: Path, n_ctx: int, port: int | None, api_key: str | None) -> LlamaServer:
    require_server_extra()
    if not model.is_file():
        raise LlamaServerError(f"llama.cpp's server needs a GGUF model file; {model} is not one.")
    port = port or free_port()
    log_file = tempfile.NamedTemporaryFile(prefix=f"llama-server-{port}-", suffix=".log", delete=False)  # noqa: SIM115
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--n_ctx", str(n_ctx), "--model_alias", model.stem]
    # By default a new request cuts the one streaming (it ends early, looking complete): queue them instead.
    command += ["--interrupt_requests", "False"]
    # Its default is half the cores; the in-process engine uses them all, so a comparison would not be fair.
    command += ["--n_threads", str(os.cpu_count() or 1)]
    # A prompt cache in memory, as OVMS's prefix caching: a conversation's next turn evaluates only what is new,
    # also after other conversations ran in between (without it only the last prompt's prefix is reused).
    command += ["--cache", "True", "--cache_type", "ram"]
    if api_key:
        command += ["--api_key", api_key]
    # Idle OpenMP threads sleep instead of spinning: beside the bot on a few cores, spinning threads took the CPU
    # the others needed (a 257-token prompt: 7-13 s spinning, 3 s passive, on 2 busy cores).
    environment = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    with log_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            env=environment,
        )
    return LlamaServer(url=f"http://127.0.0.1:{port}/v1", process=process, log_path=Path(log_file.name))


def _die_with_parent() -> None:
    # A test run or bench that is killed must not leave a server holding the CPU (Linux only; elsewhere a no-op).
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def _wait_ready(server: LlamaServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            code = server.process.poll()
            if code is not None:
                raise LlamaServerError(
                    f"llama.cpp's server exited with code {code} while starting; its log ends with:\n"
                    f"{server.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                # Any HTTP answer means it is serving (401 when it requires an API key).
                if (await client.get(f"{server.url}/models")).status_code in (200, 401):
                    return
            if time.monotonic() > deadline:
                raise LlamaServerError(
                    f"llama.cpp's server at {server.url} did not answer within {timeout_s:.0f} s; "
                    f"its log ends with:\n{server.log_tail()}"
                )
            await asyncio.sleep(_POLL_S)


def _stop(server: LlamaServer) -> None:
    """Terminate, give it ``STOP_TIMEOUT_S`` to exit, then kill (blocking)."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.kill()
    with contextlib.suppress(OSError):
        server.log_path.unlink()
