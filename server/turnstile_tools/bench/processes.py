"""The servers under test, each in its own process: Turnstile (`turnstile serve`) and the echo.

Separate processes keep the load generator off the servers' event loops and let the bench read
a server's memory from `/proc/<pid>/status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import turnstile
import turnstile_server
import turnstile_tools
from turnstile_tools.bench.graphs import GRAPHS

START_SECONDS = 60.0
STOP_SECONDS = 15.0
PR_SET_PDEATHSIG = 1  # prctl(2)
_SERVING = re.compile(r"serving on [^\s:]+:(\d+)")


def _environment() -> dict[str, str]:
    """The environment for a child: the same interpreter finds the same packages."""
    roots = {
        str(Path(turnstile_server.__file__).resolve().parent.parent),
        str(Path(turnstile_tools.__file__).resolve().parent.parent),
        str(Path(turnstile.__file__).resolve().parent.parent),
    }
    paths = [*sorted(roots), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


# Run by a fresh interpreter between the bench and the child it starts: it asks Linux to send
# the child SIGTERM when the bench dies (a bench that is killed leaves no server behind), puts it
# on the given cores (its threads inherit them), then becomes the child with exec.
_LAUNCHER = f"""
import ctypes, os, sys
cpus, argv = sys.argv[1], sys.argv[2:]
if sys.platform == "linux":
    ctypes.CDLL(None, use_errno=True).prctl({PR_SET_PDEATHSIG}, {int(signal.SIGTERM)})
if cpus:
    os.sched_setaffinity(0, {{int(cpu) for cpu in cpus.split(",")}})
os.execv(argv[0], argv)
"""


def _launched(argv: list[str], cpus: set[int] | None) -> list[str]:
    """`argv` started through the launcher, with `cpus`.

    Not `preexec_fn`: that makes subprocess fork() instead of vfork(), and in a forked child of
    a process that uses gRPC, gRPC's fork handlers restart its poller on an epoll descriptor
    that close_fds has just closed, so the child can die with "epoll_wait error: Bad file
    descriptor" before it runs (grpc/grpc#43055).
    """
    cores = ",".join(str(cpu) for cpu in sorted(cpus or ()))
    return [sys.executable, "-c", _LAUNCHER, cores, *argv]


def pin_self(cpus: Iterable[int]) -> None:
    """Puts this process, every thread it has already started included, on `cpus`."""
    cores = set(cpus)
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task), cores)


def memory(pid: int) -> dict[str, int]:
    """Returns the process's `VmRSS` and `VmHWM` (peak RSS) in bytes, from /proc."""
    figures: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                figures[key] = int(value.split()[0]) * 1024
    return figures


def cpu_seconds(pid: int) -> float:
    """Returns the CPU time (user and system) the process has used, from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Child:
    """A child process that logs to a file and stops on SIGTERM."""

    def __init__(self, process: asyncio.subprocess.Process, log: IO[bytes], port: int) -> None:
        self.process = process
        self.port = port
        self._log = log

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    @property
    def address(self) -> str:
        """Where clients connect."""
        return f"127.0.0.1:{self.port}"

    def memory(self) -> dict[str, int]:
        """The child's current and peak RSS, in bytes."""
        return memory(self.pid)

    def cpu_seconds(self) -> float:
        """The CPU time the child has used so far."""
        return cpu_seconds(self.pid)

    async def stop(self) -> None:
        """Sends SIGTERM, then SIGKILL if the child has not exited in time."""
        try:
            if self.process.returncode is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(STOP_SECONDS):
                        await self.process.wait()
                except TimeoutError:
                    self.process.kill()
                    await self.process.wait()
        finally:
            self._log.close()


class TurnstileProcess(_Child):
    """`turnstile serve` on a free port, with the bench graphs registered."""

    @classmethod
    async def start(
        cls,
        database: Path | str,
        log_path: Path,
        extra_args: list[str] | None = None,
        *,
        cpus: set[int] | None = None,
    ) -> TurnstileProcess:
        """Starts the server on `database` (a SQLite path or a database URL) and returns
        once it serves."""
        graphs = [f"--graph={name}={target}" for name, target in GRAPHS.items()]
        log = _open_log(log_path)
        process = await asyncio.create_subprocess_exec(
            *_launched(
                [
                    sys.executable,
                    "-m",
                    "turnstile_server.cli",
                    "serve",
                    "--port=0",
                    f"--database={database}",
                    *graphs,
                    *(extra_args or []),
                ],
                cpus,
            ),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=_environment(),
        )
        child = cls(process, log, 0)
        try:
            async with asyncio.timeout(START_SECONDS):
                while not child.port:
                    if process.returncode is not None:
                        raise RuntimeError(f"turnstile serve exited: {_tail(log_path)}")
                    found = _SERVING.search(await asyncio.to_thread(_read, log_path))
                    if found:
                        child.port = int(found.group(1))
                    else:
                        await asyncio.sleep(0.05)
        except BaseException:
            await child.stop()
            raise
        return child


class EchoProcess(_Child):
    """The raw gRPC echo server (`turnstile_tools.bench.echo_server`)."""

    @classmethod
    async def start(cls, log_path: Path, *, cpus: set[int] | None = None) -> EchoProcess:
        """Starts the echo server and returns once it has printed its port."""
        log = _open_log(log_path)
        process = await asyncio.create_subprocess_exec(
            *_launched([sys.executable, "-m", "turnstile_tools.bench.echo_server"], cpus),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=_environment(),
        )
        child = cls(process, log, 0)
        try:
            assert process.stdout is not None
            async with asyncio.timeout(START_SECONDS):
                line = (await process.stdout.readline()).decode()
            if not line.startswith("port "):
                raise RuntimeError(f"echo server did not start: {_tail(log_path)}")
            child.port = int(line.split()[1])
        except BaseException:
            await child.stop()
            raise
        return child


def _open_log(path: Path) -> IO[bytes]:
    """Opens a child's log; the child writes it until `stop()` closes it."""
    return open(path, "wb")


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"
