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
import concurrent.futures
import logging
import os
import selectors
import sys
import threading
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


def wait(future: concurrent.futures.Future, timeout: float | None) -> Any:
    """The future's result, waiting cooperatively under gevent; raises TimeoutError."""
    if _gevent_patched() and not future.done():
        _wait_gevent(future, timeout)
    try:
        return future.result(timeout=0 if _gevent_patched() else timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()  # cancels the coroutine in the loop thread, too
        raise TimeoutError("no answer in time") from None


def _wait_gevent(future: concurrent.futures.Future, timeout: float | None) -> None:
    import gevent
    import gevent.event

    hub = gevent.get_hub()
    watcher = hub.loop.async_()
    done = gevent.event.Event()
    guard = _original("threading", "Lock", threading.Lock)()
    open_ = [True]
    watcher.start(done.set)

    def wake(_future) -> None:  # runs in the loop thread
        with guard:
            if open_[0]:
                watcher.send()

    future.add_done_callback(wake)
    try:
        done.wait(timeout)
    finally:
        with guard:
            open_[0] = False
        watcher.stop()
        watcher.close()


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


def run(coro: Awaitable, timeout: float | None) -> Any:
    """Run a coroutine on the loop thread and wait for its result (at most `timeout` s)."""
    return wait(loop_thread().submit(coro), timeout)


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

