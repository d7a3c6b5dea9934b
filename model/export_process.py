"""The converter child process, started so that it cannot reach the bot's secrets or outlive it.

With ``--trust-remote-code`` a checkpoint's own Python code runs in the converter, so the child:

- gets an environment built from an allowlist (what optimum and the Hugging Face Hub need, nothing else:
  no ``DISCORD_*``, ``SLACK_*`` or ``BOT_*`` variable);
- starts in a fresh scratch directory, not the bot's working directory next to ``.env``;
- cannot read the bot's environment through ``/proc/<ppid>/environ``: the bot and the launcher make
  themselves non-dumpable, and the converter runs without any capability (a bot run as root would
  otherwise pass them on, and they override that);
- runs in its own session and process group, so that a cancel or a time-out kills everything it started;
- on Linux dies with its whole process group when the bot dies, even by ``kill -9`` (``PR_SET_PDEATHSIG``).

The Linux-only steps happen in a tiny single-threaded launcher that supervises the converter (see
``_LAUNCHER``); no ``preexec_fn`` runs in the bot, which has threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import SecretStr

log = logging.getLogger(__name__)

# Exact names, then prefixes, of the variables the converter may see.
ALLOWED_VARIABLES = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "TMPDIR",
        "TZ",
        "HF_HOME",
        "HF_ENDPOINT",
        "XDG_CACHE_HOME",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "VIRTUAL_ENV",
    }
)
ALLOWED_PREFIXES = ("LC_", "HF_HUB_", "TRANSFORMERS_", "HF_DATASETS_")
# Never passed on, whatever an allowlist entry would say.
_WITHHELD_PREFIXES = ("DISCORD_", "SLACK_", "BOT_")
# Tracing warnings would drown the progress; errors and tracebacks still come through.
_PYTHON_SETTINGS = {"PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}

_PR_SET_DUMPABLE = 4
_IS_LINUX = sys.platform.startswith("linux")

# A tiny supervisor, run as ``python -I -c _LAUNCHER <bot pid> <program> <args...>`` in its own session:
# when the bot dies (even by SIGKILL) the kernel sends it SIGTERM (PR_SET_PDEATHSIG), and it kills its whole
# process group (the converter and whatever that started) with SIGKILL.  The converter also dies if the
# launcher itself is killed.  Isolated mode (-I): nothing is imported from the scratch directory.
_LAUNCHER = """
import ctypes, os, signal, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
def die_with_parent(sig):
    if libc.prctl(1, sig, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
        os._exit(126)
def kill_group(*_):
    os.killpg(0, signal.SIGKILL)  # the converter, what it started, and this launcher
signal.signal(signal.SIGTERM, kill_group)
die_with_parent(signal.SIGTERM)
libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: the converter cannot read this process's /proc files
try:  # a bot run as root: the converter gets no capability (it would read /proc/<bot>/environ with some)
    last_cap = int(open("/proc/sys/kernel/cap_last_cap").read())
except (OSError, ValueError):
    last_cap = 40
for cap in range(last_cap + 1):
    libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP: fails harmlessly where not held
libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: no set-user-id program gives them back
if os.getppid() != int(sys.argv[1]):
    kill_group()  # the bot died before the death signal was armed
try:
    child = subprocess.Popen(sys.argv[2:], preexec_fn=lambda: die_with_parent(signal.SIGKILL))
except OSError as error:
    sys.exit(f"Cannot start the converter {sys.argv[2]}: {error}")
code = child.wait()
if code < 0:  # report a signal as the converter's own death, as if there were no launcher
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def child_environment(hf_token: SecretStr | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The converter's environment: the allowlisted variables of ``environ`` (the bot's), and ``HF_TOKEN``."""
    source = os.environ if environ is None else environ
    allowed = {
        name: value
        for name, value in source.items()
        if (name in ALLOWED_VARIABLES or name.startswith(ALLOWED_PREFIXES)) and not name.startswith(_WITHHELD_PREFIXES)
    }
    if hf_token is not None and hf_token.get_secret_value():
        allowed["HF_TOKEN"] = hf_token.get_secret_value()
    return {**allowed, **_PYTHON_SETTINGS}


def make_non_dumpable() -> bool:
    """Stop other processes of this user (the converter) from reading this one's ``/proc`` files; Linux only."""
    if not _IS_LINUX:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_DUMPABLE, 0) failed (errno %d)", ctypes.get_errno())
        return False
    return True


def launch_command(command: Sequence[str]) -> list[str]:
    """``command`` behind the launcher that ties it to the bot's life (Linux), or as it is elsewhere."""
    if not _IS_LINUX:
        return list(command)
    return [sys.executable, "-I", "-c", _LAUNCHER, str(os.getpid()), *command]


async def start_converter(command: Sequence[str], cwd: Path, env: Mapping[str, str]) -> asyncio.subprocess.Process:
    """Start ``command`` as the converter child (see the module docstring), its output on one pipe."""
    make_non_dumpable()
    return await asyncio.create_subprocess_exec(
        *launch_command(command),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=cwd,
        env=dict(env),
        start_new_session=os.name == "posix",
    )


async def kill_converter(process: asyncio.subprocess.Process) -> None:
    """Kill the converter's whole process group (its own children too) and reap it, unless it already exited."""
    if process.returncode is None:
        # Not reaped yet, so its pid (the group id) cannot have been reused by another process.
        if os.name == "posix":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    await process.wait()
