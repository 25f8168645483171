"""MCP sessions, living on the loop thread: one per stdio server, one per caller's headers over HTTP.

A session is owned by one asyncio task from start to close, because the SDK's
anyio task groups must be exited by the task that entered them; calls from
other tasks go through the session's streams. A stdio server is one process
per worker process, shared by every agent with the same command, args and env,
started on first use, restarted when it died. An HTTP session is keyed by the
server and the caller's rendered headers, so two users whose headers differ
never share one; idle ones are closed and their number is bounded.
tools/list goes through the SDK's response cache: the server's `ttlMs` when it
gives one, else DEFAULT_LIST_TTL.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict

import httpx2
from mcp import Client
from mcp.client.caching import CacheConfig
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED

from agentd.mcp import stdio
from agentd.mcp.config import ServerSpec, ServerUnavailable

log = logging.getLogger("agentd.mcp")

DEFAULT_LIST_TTL = 300.0
MAX_HTTP_SESSIONS = 64   # per worker process, over all HTTP servers
HTTP_IDLE_SECONDS = 300.0
MAX_LIST_PAGES = 20
RETRY_AFTER = 10.0  # a server that failed to start is not tried again by every run


def describe(exc: BaseException) -> str:
    """A short reason for the log and the model: the innermost error, without headers or env."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).split("\n")[0][:200]
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


class Connection:
    """One live MCP session and the task that owns it."""

    def __init__(self, label: str, make_client):
        self.label, self.make_client = label, make_client
        self.client: Client | None = None
        self.process = None  # the stdio child (subprocess.Popen), when there is one
        self.last_used = time.monotonic()
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self, timeout: float) -> None:
        ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._own(ready))
        try:
            await asyncio.wait_for(asyncio.shield(ready), timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise ServerUnavailable(f"did not start within {timeout:g} s") from None
        except Exception as exc:
            raise ServerUnavailable(f"failed to start ({describe(exc)})") from None

    async def _own(self, ready: asyncio.Future) -> None:
        record: list = []
        stdio.spawned.set(record)
        try:
            async with self.make_client() as client:
                self.client, self.process = client, (record[0] if record else None)
                ready.set_result(True)
                await self._stop.wait()
        except BaseException as exc:  # startup failures go to start(); later ones end the session
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(describe(exc)))
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning("MCP session %s ended: %s", self.label, describe(exc))
        finally:
            self.client = None

    @property
    def alive(self) -> bool:
        if self.client is None or self._task is None or self._task.done():
            return False
        return self.process is None or self.process.poll() is None

    async def close(self, timeout: float = 8.0) -> None:
        self._stop.set()
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except (asyncio.TimeoutError, Exception):
                self._task.cancel()


def _stdio_client(spec: ServerSpec) -> Client:
    params = StdioServerParameters(command=spec.command, args=list(spec.args),
                                   env=stdio.child_environment(dict(spec.env)))
    return Client(params, cache=CacheConfig(default_ttl_ms=int(DEFAULT_LIST_TTL * 1000)))


class _HttpTransport:
    """The SDK's Streamable HTTP transport over an httpx2 client carrying one caller's headers.

    The SDK leaves a client it was given open; this closes it with the session.
    """

    def __init__(self, spec: ServerSpec, headers: dict):
        self.http = create_mcp_http_client(headers=headers, timeout=httpx2.Timeout(spec.timeout, read=300.0))
        self.inner = streamable_http_client(spec.url, http_client=self.http)

    async def __aenter__(self):
        await self.http.__aenter__()
        return await self.inner.__aenter__()

    async def __aexit__(self, *exc):
        try:
            return await self.inner.__aexit__(*exc)
        finally:
            await self.http.aclose()


def _http_client(spec: ServerSpec, headers: dict) -> Client:
    return Client(_HttpTransport(spec, headers), cache=CacheConfig(default_ttl_ms=int(DEFAULT_LIST_TTL * 1000)))


def headers_key(spec: ServerSpec, headers: dict) -> str:
    canonical = repr((spec.key, sorted(headers.items())))
    return hashlib.sha256(canonical.encode()).hexdigest()


class Hub:
    """Every MCP session of this worker process; all methods run on the loop thread."""

    def __init__(self):
        self.sessions: OrderedDict[str, Connection] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._failed: dict[str, tuple[float, str]] = {}  # key -> (when, why) of the last failed start

    async def connection(self, spec: ServerSpec, headers: dict | None) -> Connection:
        """A live session for this server (and these headers), started when needed."""
        key = spec.key if spec.transport == "stdio" else headers_key(spec, headers or {})
        async with self._locks.setdefault(key, asyncio.Lock()):
            current = self.sessions.get(key)
            if current is not None and current.alive:
                current.last_used = time.monotonic()
                self.sessions.move_to_end(key)
                return current
            if current is not None:
                log.warning("MCP server %s is gone; starting it again", spec.name)
                await current.close(timeout=2.0)
            failed = self._failed.get(key)
            if failed and time.monotonic() - failed[0] < RETRY_AFTER:
                raise ServerUnavailable(f"{failed[1]}; not retried for {RETRY_AFTER:g} s")
            label = f"{spec.name} ({spec.transport})"
            make = (lambda: _stdio_client(spec)) if spec.transport == "stdio" else (lambda: _http_client(spec, headers))
            connection = Connection(label, make)
            try:
                await connection.start(spec.timeout)
            except ServerUnavailable as exc:
                self._failed[key] = (time.monotonic(), str(exc))
                raise
            self._failed.pop(key, None)
            self.sessions[key] = connection
            await self._sweep()
            return connection

    async def _sweep(self) -> None:
        """Close idle HTTP sessions, and the oldest beyond the cap (stdio ones stay)."""
        now = time.monotonic()
        http = [k for k, c in self.sessions.items() if c.process is None]
        idle = [k for k in http if now - self.sessions[k].last_used > HTTP_IDLE_SECONDS]
        excess = [k for k in http if k not in idle][: max(0, len(http) - len(idle) - MAX_HTTP_SESSIONS)]
        for key in idle + excess:
            connection = self.sessions.pop(key)
            if not self._locks.get(key, asyncio.Lock()).locked():
                self._locks.pop(key, None)
            asyncio.ensure_future(connection.close())

    async def forget(self, connection: Connection) -> None:
        """Drop a session whose transport failed, so the next use connects again."""
        for key, value in list(self.sessions.items()):
            if value is connection:
                del self.sessions[key]
        await connection.close(timeout=2.0)

    async def list_tools(self, spec: ServerSpec, headers: dict | None, retry: bool = True) -> list:
        connection = await self.connection(spec, headers)
        tools, cursor = [], None
        try:
            for _ in range(MAX_LIST_PAGES):
                page = await connection.client.list_tools(cursor=cursor)
                tools += page.tools
                cursor = page.next_cursor
                if cursor is None:
                    break
        except Exception as exc:
            await self.forget(connection)
            if retry:  # a session that died since its last use: one fresh start
                return await self.list_tools(spec, headers, retry=False)
            raise ServerUnavailable(f"did not list its tools ({describe(exc)})") from None
        return tools

    async def call_tool(self, spec: ServerSpec, headers: dict | None, name: str, arguments: dict,
                        progress=None):
        connection = await self.connection(spec, headers)
        try:
            return await connection.client.call_tool(name, arguments, read_timeout_seconds=spec.timeout,
                                                     progress_callback=progress)
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                await self.forget(connection)
            raise
        except (OSError, httpx2.TransportError):
            await self.forget(connection)
            raise

    async def close_all(self) -> None:
        connections = list(self.sessions.values())
        self.sessions.clear()
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
