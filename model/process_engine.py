"""Continuous batching in a child process, so that generating never stalls the asyncio loop.

``ContinuousBatchingPipeline.step()`` holds the GIL for the whole forward pass, so a
``BatchingEngine`` stepping on a thread of the bot's process delays every callback
of its event loop (heartbeats included) while replies generate.  ``ProcessEngine``
runs the same ``Scheduler`` in a child interpreter that owns the pipeline and
talks to this process over a pipe:

* parent → child: ``("load", info, device, properties, cache_tokens)`` once, then
  ``("submit", id, prompt, params)``, ``("cancel", id)`` and ``("close",)``;
* child → parent: ``("ready", stop_ids, control_tokens)`` or ``("failed", message)``
  after loading, then one ``("events", [...], kv_cache_use)`` per step with every
  request's new ids and ends and the share of the KV cache in use, and ``("closed",)``
  before it exits.

The tokenizer is loaded a second time here (while the child compiles the model),
so rendering, counting and detokenizing never wait on the child.  A reader thread
blocks on the pipe, which releases the GIL, and hands events to the streams' loops.

The child is a fresh interpreter (``python -c``) rather than a ``multiprocessing``
spawn: spawn re-runs the parent's main script in the child, which for the ``bot``
command would import the whole bot and its platform libraries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import openvino_genai as ov_genai

from model.batching_engine import BatchingFrontend, Request
from model.engine import GenerationParams, ModelInfo, ModelLoadError
from model.openvino_engine import ChatTokenizer
from model.scheduler import Event, RequestEnd, Scheduler, load_pipeline

log = logging.getLogger(__name__)

# Once asked to close, the child finishes its running requests and says so; it then only has to exit.
_EXIT_TIMEOUT_S = 10.0
_CHILD_CODE = "import sys; from model.process_engine import child_main; child_main(int(sys.argv[1]))"
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


class ProcessEngine(BatchingFrontend):
    """A chat model served by ``ContinuousBatchingPipeline`` in a child process: replies run concurrently.

    Satisfies ``model.engine.Engine``.  If the child dies, every open stream and every
    new one fails with ``EngineError``.
    """

    def __init__(self, process: subprocess.Popen[bytes], conn: Connection, chat: ChatTokenizer) -> None:
        super().__init__(chat, chat.info)
        self._process = process
        self._conn = conn
        self._requests: dict[int, Request] = {}  # open requests by id
        # Orders registering a request and sending it against closing and the child's death;
        # held only around sends, never by the reader while it waits on the pipe.
        self._send_lock = threading.Lock()
        self._closing = False
        self._stopped: str | None = None  # why no request can run any more
        self._reader = threading.Thread(target=self._read, name="ov-process-reader", daemon=True)
        self._reader.start()
        # Without aclose (the loop went away first, say), the interpreter's exit still ends and reaps the child.
        self._finalizer = weakref.finalize(self, _reap, process, 0)

    @classmethod
    def load(cls, info: ModelInfo, device: str, properties: Mapping[str, str], cache_tokens: int) -> ProcessEngine:
        """Start the model process and load the tokenizer here meanwhile (blocking; call from a thread).

        A failure in the child is raised as a ``RuntimeError`` with OpenVINO's message.
        """
        process, conn = _start_child()
        try:
            conn.send(("load", info, device, dict(properties), cache_tokens))
            chat = ChatTokenizer(ov_genai.Tokenizer(str(info.path)), info)
            _await_ready(process, conn, chat)
        except BaseException:
            conn.close()
            _reap(process, timeout_s=0)
            raise
        return cls(process, conn, chat)

    @property
    def pid(self) -> int:
        """The model process's id."""
        return self._process.pid

    async def aclose(self) -> None:
        """Drop requests not yet started, finish running ones, then let the model process exit."""
        with self._send_lock:
            self._closing = True
            self._send(("close",))
        # The reader ends when the child says it is done, or when its pipe closes.
        await asyncio.to_thread(self._reader.join)
        self._finalizer.detach()
        await asyncio.to_thread(_reap, self._process, _EXIT_TIMEOUT_S)
        self._conn.close()  # only now: closing it under a reader blocked in recv could hand it a reused fd
        await self._close_tokenizer()

    def submit(self, prompt: str, params: GenerationParams) -> Request:
        """Send a request to the model process; call on the loop that will consume it."""
        request = Request(next(self._ids), prompt, params)
        with self._send_lock:
            refusal = "the model was unloaded" if self._closing else self._stopped
            if refusal is None:
                self._requests[request.id] = request
                self._send(("submit", request.id, prompt, params))
        if refusal is not None:
            request.post(RequestEnd(None, refusal))
        return request

    def cancel(self, request: Request) -> None:
        """Ask the model process to drop ``request`` at its next step."""
        request.cancelled.set()
        with self._send_lock:
            if request.id in self._requests:
                self._send(("cancel", request.id))

    def _send(self, message: tuple[Any, ...]) -> None:
        """Send under ``_send_lock``; a dead child is noticed (and reported) by the reader instead.

        It blocks only while the pipe's buffer is full, which the child drains between steps.
        """
        with contextlib.suppress(OSError):
            self._conn.send(message)

    # --- the reader thread ---

    def _read(self) -> None:
        """Hand each step's events to the streams until the child closes or dies."""
        reason = "the model was unloaded"
        try:
            while (message := self._conn.recv())[0] == "events":
                self._kv_cache_use = message[2]
                self._dispatch(message[1])
        except (EOFError, OSError):
            reason = f"the model process stopped unexpectedly ({_exit_status(self._process)})"
            log.error("%s; every reply in progress has failed", reason)
        self._end_all(reason)

    def _dispatch(self, events: list[Event]) -> None:
        for request_id, item in events:
            request = self._requests.get(request_id)
            if request is None:
                continue
            if isinstance(item, RequestEnd):
                del self._requests[request_id]
            if not request.post(item):
                self.cancel(request)  # its loop has closed: nobody reads this reply

    def _end_all(self, reason: str) -> None:
        """No more events will come: fail whatever is still open, and refuse new requests."""
        with self._send_lock:
            self._stopped = reason
            orphans = list(self._requests.values())
            self._requests.clear()
        for request in orphans:
            request.post(RequestEnd(None, reason))


def _start_child() -> tuple[subprocess.Popen[bytes], Connection]:
    parent_end, child_end = multiprocessing.Pipe()
    env = dict(os.environ)
    # The child imports this package from where the parent did, whatever its working directory.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", _CHILD_CODE, str(child_end.fileno())],
            pass_fds=[child_end.fileno()],
            stdin=subprocess.DEVNULL,
            env=env,
        )
    finally:
        child_end.close()  # the child holds its own copy: its exit now reads as EOF here
    return process, parent_end


def _await_ready(process: subprocess.Popen[bytes], conn: Connection, chat: ChatTokenizer) -> None:
    """Wait for the child's pipeline; check that its tokenizer agrees with the one loaded here."""
    try:
        message = conn.recv()
    except EOFError:
        raise RuntimeError(f"the model process stopped while loading ({_exit_status(process)})") from None
    if message[0] == "failed":
        raise RuntimeError(message[1])
    _, stop_ids, control_tokens = message
    if stop_ids != chat.stop_token_ids or control_tokens != chat.control_tokens:
        raise ModelLoadError(
            f"The tokenizer of {chat.info.path} loaded alone differs from the pipeline's "
            f"(stop ids {sorted(chat.stop_token_ids)} vs {sorted(stop_ids)}, "
            f"control tokens {sorted(chat.control_tokens ^ control_tokens)} in one only). "
            "Set BOT_ENGINE=pipeline for this model."
        )


def _reap(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for the child to exit, else terminate it (and kill it if that fails)."""
    try:
        process.wait(timeout_s)
        return
    except subprocess.TimeoutExpired:
        if timeout_s > 0:
            log.warning("the model process did not exit within %.0f s; terminating it", timeout_s)
    process.terminate()
    try:
        process.wait(_EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _exit_status(process: subprocess.Popen[bytes]) -> str:
    try:
        code = process.wait(_EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "its pipe closed, but it is still running"
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exit status {code}"


# --- the child process ---


def child_main(fd: int) -> None:
    """The model process: load the pipeline, then serve requests until closed or orphaned."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when this process ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    try:
        _, info, device, properties, cache_tokens = conn.recv()
        pipeline = load_pipeline(info, device, properties, cache_tokens)
        chat = ChatTokenizer(pipeline.get_tokenizer(), info)
    except EOFError:
        return  # the parent went away before asking for anything
    except Exception as error:  # every load failure goes back to the parent, which raises it
        conn.send(("failed", str(error)))
        return
    conn.send(("ready", chat.stop_token_ids, chat.control_tokens))
    with contextlib.suppress(EOFError, OSError):  # the parent has gone: nothing left to serve
        _serve(conn, Scheduler(pipeline, chat))


def _serve(conn: Connection, scheduler: Scheduler) -> None:
    """Take messages (waiting only while idle), step, and send each step's events in one message."""
    closing = False
    cache_use: float | None = None
    while True:
        for message in _receive(conn, wait=not scheduler.busy and not closing):
            if message[0] == "submit":
                scheduler.submit(*message[1:])
            elif message[0] == "cancel":
                scheduler.cancel(message[1])
            else:
                closing = True
        events = scheduler.drop_queued() if closing else []
        used = cache_use
        if scheduler.busy:
            events += scheduler.step()
            cache_use = scheduler.cache_use()
        if events or cache_use != used:
            conn.send(("events", events, cache_use))
        if closing and not scheduler.busy:
            conn.send(("closed",))
            return


def _receive(conn: Connection, wait: bool) -> list[tuple[Any, ...]]:
    """Every message already sent; when ``wait``, block for the first one."""
    messages: list[tuple[Any, ...]] = []
    while (wait and not messages) or conn.poll():
        messages.append(conn.recv())
    return messages
