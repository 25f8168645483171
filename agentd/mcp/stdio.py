"""The stdio transport: the SDK's `stdio_client`, with two of its seams replaced.

1. The environment. The SDK merges HOME, LOGNAME, SHELL, TERM and USER from
   agentd's environment into the child's; agentd's contract is that a child
   sees only the `env` its YAML gives plus PATH (never a provider key or
   anything else of ours), so the inherited part is PATH alone.
2. The spawn. `anyio.open_process` goes through asyncio's subprocess support,
   which under gevent's monkey-patching reaches gevent's `subprocess.Popen`
   from the loop thread ("child watchers are only available on the default
   loop"), and gevent leaves the original `Popen` unusable. The child is
   started with `os.posix_spawn` instead (no Python-level fork, nothing gevent
   patches) and its pipes are attached to the loop, wrapped as the
   `anyio.abc.Process` the SDK expects; its shutdown sequence (close stdin,
   wait, kill the group) is the SDK's own.
The SDK version is pinned; tests/test_mcp_stdio.py proves both seams.
"""
from __future__ import annotations

import asyncio
import contextvars
import os
import shutil
import signal
from pathlib import Path

import anyio
import anyio.abc
from anyio._backends._asyncio import StreamReaderWrapper, StreamWriterWrapper
from mcp.client import stdio as sdk_stdio

from agentd.mcp.runtime import _original

# The owner task of a connection sets this to a list; the spawn appends its process,
# so the connection knows its child (liveness, pid) without another SDK seam.
spawned: contextvars.ContextVar[list | None] = contextvars.ContextVar("agentd_mcp_spawned", default=None)


class Child:
    """A process started with os.posix_spawn: no fork in Python, nothing gevent patched."""

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = _original("os", "waitpid", os.waitpid)(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else (gevent's SIGCHLD handling)
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)


class PipeProcess(anyio.abc.Process):
    """The child as the `anyio.abc.Process` the SDK drives, its pipes on the running loop."""

    def __init__(self, child: Child, stdin: StreamWriterWrapper, stdout: StreamReaderWrapper):
        self.child, self._stdin, self._stdout = child, stdin, stdout

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def returncode(self) -> int | None:
        return self.child.poll()

    @property
    def stdin(self):
        return self._stdin

    @property
    def stdout(self):
        return self._stdout

    @property
    def stderr(self):
        return None

    async def wait(self) -> int:
        while self.child.poll() is None:
            await anyio.sleep(0.02)
        return self.child.returncode

    def terminate(self) -> None:
        self.child.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.child.send_signal(signal.SIGKILL)

    def send_signal(self, sig: int) -> None:
        self.child.send_signal(sig)

    async def aclose(self) -> None:
        await self._stdin.aclose()
        await self._stdout.aclose()
        await self.wait()


def _posix_spawn(command: str, args: list[str], env: dict[str, str]) -> tuple[Child, int, int]:
    """Start the child with its stdin/stdout on new pipes; returns it and our pipe ends."""
    executable = shutil.which(command, path=env.get("PATH", os.defpath))
    if executable is None:
        raise FileNotFoundError(f"command not found: {command}")
    child_in, to_child = os.pipe()
    from_child, child_out = os.pipe()
    try:
        # A new session, so the SDK's shutdown can signal the server's whole process group;
        # SIGPIPE back to default as subprocess does; stderr stays agentd's own (the log).
        pid = _original("os", "posix_spawn", os.posix_spawn)(executable, [command, *args], env, setsid=True,
                             setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                             file_actions=[(os.POSIX_SPAWN_DUP2, child_in, 0),
                                           (os.POSIX_SPAWN_DUP2, child_out, 1)])
    except BaseException:
        for fd in (to_child, from_child):
            os.close(fd)
        raise
    finally:
        os.close(child_in)
        os.close(child_out)
    return Child(pid), to_child, from_child


async def spawn(command: str, args: list[str], env: dict[str, str] | None = None,
                errlog=None, cwd: Path | str | None = None) -> PipeProcess:
    """Start the server process (the SDK's `_create_platform_compatible_process` seam)."""
    child, to_child, from_child = _posix_spawn(command, args, env or {})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(from_child, "rb", 0))
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                        os.fdopen(to_child, "wb", 0))
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    record = spawned.get()
    if record is not None:
        record.append(child)
    return PipeProcess(child, StreamWriterWrapper(writer), StreamReaderWrapper(reader))


def child_environment(env: dict[str, str]) -> dict[str, str]:
    """What a stdio child sees: agentd's PATH, overlaid with the YAML's `env`."""
    return {"PATH": os.environ.get("PATH", os.defpath), **env}


def install() -> None:
    """Replace the two seams in the SDK's stdio module (idempotent)."""
    sdk_stdio.get_default_environment = lambda: {}
    sdk_stdio._create_platform_compatible_process = spawn
