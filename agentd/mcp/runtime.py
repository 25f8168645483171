"""One asyncio event loop per worker process, on a real OS thread, for the async MCP SDK.

agentd is sync (Flask, gevent under gunicorn); the `mcp` SDK is async (anyio).
The loop thread is started lazily on first use, after gunicorn forked, and is a
real thread even under gevent's monkey-patching (the original
`start_new_thread`). A caller submits a coroutine and waits for it without
blocking the gevent hub: under gevent the waiting greenlet sleeps on a hub
`async_` watcher that the loop thread wakes (the one cross-thread wakeup gevent
supports); without gevent it is a plain `Future.result`.

Inside the loop thread, code that the SDK runs in an executor (DNS lookups)
needs real threads too: under gevent, `threading` makes greenlets that would
never run there, so the loop's default executor starts original threads.
"""
from __future__ import annotations

import _thread
import asyncio
import atexit
import collections
import concurrent.futures
import logging
import os
import selectors
import sys
import threading
import time
from typing import Any, Awaitable, Callable

log = logging.getLogger("agentd.mcp")


def _gevent_patched() -> bool:
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey
    return monkey.is_module_patched("threading")


def _original(module: str, name: str, default):
    if not _gevent_patched():
        return default
    from gevent import monkey
    return monkey.get_original(module, name)


def start_real_thread(target: Callable[[], None]) -> None:
    """Run `target` on a new OS thread, whatever gevent did to `threading`."""
    _original("_thread", "start_new_thread", _thread.start_new_thread)(target, ())


class RealThreadExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor: one short-lived real thread per job (DNS lookups, rare).

    A ThreadPoolExecutor only because asyncio insists; its own pool is never used.
    """

    def submit(self, fn, /, *args, **kwargs):
        future: concurrent.futures.Future = concurrent.futures.Future()

        def work():
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the awaiting coroutine
                future.set_exception(exc)

        start_real_thread(work)
        return future


class LoopThread:
    """An asyncio loop running forever on its own OS thread."""

    def __init__(self):
        self.pid = os.getpid()
        selector = _original("selectors", "DefaultSelector", selectors.DefaultSelector)()
        self.loop = asyncio.SelectorEventLoop(selector)
        self.loop.set_default_executor(RealThreadExecutor())
        start_real_thread(self._run)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def submit(self, coro: Awaitable) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)


class Relay:
    """Messages from the loop thread to the waiting caller (MCP progress lines), delivered
    by `wait` in the caller's own thread or greenlet, where it is safe to hand them on."""

    def __init__(self, deliver: Callable[[Any], None]):
        self.deliver = deliver
        self.items: collections.deque = collections.deque()
        self.wake: Callable[[], None] | None = None

    def post(self, item) -> None:  # called on the loop thread
        self.items.append(item)
        wake = self.wake
        if wake is not None:
            wake()

    def drain(self) -> None:
        while self.items:
            self.deliver(self.items.popleft())


class _ThreadWaker:
    def __init__(self):
        self.event = threading.Event()
        self.wake = self.event.set

    def wait(self, timeout: float) -> None:
        self.event.wait(timeout)
        self.event.clear()

    def close(self) -> None:
        pass


class _GeventWaker:
    """Sleeps the current greenlet on a hub `async_` watcher that any thread may wake."""

    def __init__(self):
        import gevent
        import gevent.event

        self.watcher = gevent.get_hub().loop.async_()
        self.event = gevent.event.Event()
        self.guard = _original("threading", "Lock", threading.Lock)()
        self.open = True
        self.watcher.start(self.event.set)

    def wake(self) -> None:  # from the loop thread; never after close
        with self.guard:
            if self.open:
                self.watcher.send()

    def wait(self, timeout: float) -> None:
        self.event.wait(timeout)
        self.event.clear()

    def close(self) -> None:
        with self.guard:
            self.open = False
        self.watcher.stop()
        self.watcher.close()


def wait(future: concurrent.futures.Future, timeout: float | None, relay: Relay | None = None) -> Any:
    """The future's result, waiting cooperatively under gevent; raises TimeoutError.

    On a timeout the future is cancelled, which cancels the coroutine in the loop thread.
    """
    waker = _GeventWaker() if _gevent_patched() else _ThreadWaker()
    deadline = None if timeout is None else time.monotonic() + timeout
    future.add_done_callback(lambda _future: waker.wake())
    if relay is not None:
        relay.wake = waker.wake
    try:
        while not future.done():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            waker.wait(left)
            if relay is not None:
                relay.drain()
    finally:
        if relay is not None:
            relay.wake = None
            relay.drain()
        waker.close()
    if not future.done():
        future.cancel()
        raise TimeoutError("no answer in time")
    return future.result()


_lock = threading.Lock()
_current: LoopThread | None = None
_closers: list[Callable[[], Awaitable]] = []


def loop_thread() -> LoopThread:
    """This process's loop thread, started on first use (and again in a forked child)."""
    global _current
    current = _current
    if current is not None and current.pid == os.getpid():
        return current
    with _lock:
        if _current is None or _current.pid != os.getpid():
            _current = LoopThread()
            _closers.clear()
            atexit.register(shutdown)
        return _current


def run(coro: Awaitable, timeout: float | None, relay: Relay | None = None) -> Any:
    """Run a coroutine on the loop thread and wait for its result (at most `timeout` s)."""
    return wait(loop_thread().submit(coro), timeout, relay)


def on_shutdown(closer: Callable[[], Awaitable]) -> None:
    """Register a coroutine function run on the loop at process exit (stopping servers)."""
    _closers.append(closer)


def shutdown(timeout: float = 8.0) -> None:
    """Run the shutdown coroutines, then stop the loop; called at exit."""
    global _current
    current = _current
    if current is None or current.pid != os.getpid():
        return
    closers = list(_closers)
    _closers.clear()

    async def close_all():
        await asyncio.gather(*(closer() for closer in closers), return_exceptions=True)

    try:
        wait(current.submit(close_all()), timeout)
    except Exception:  # a server that will not stop must not hang the exit
        log.warning("MCP servers did not all stop within %.0f s", timeout)
    current.stop()
    _current = None

