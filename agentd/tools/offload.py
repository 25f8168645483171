"""Blocking or CPU-heavy tool work, run off the gevent hub with a time budget.

Under gunicorn's gevent worker every request of a worker shares one OS thread,
the hub. A tool that computes (trafilatura on a 2 MB page) or blocks inside C
(sqlite3) would freeze every other stream of that worker while it runs, and
past gunicorn's `timeout` the worker would be killed with all its streams.
`run(fn, …, timeout=…)` hands such work to a pool of real OS threads:

- under gevent's monkey-patching, a `gevent.threadpool.ThreadPool` of native
  threads of its own (not the hub's, which serves DNS lookups, so a page of
  tool work cannot hold up name resolution); the calling greenlet waits
  cooperatively;
- otherwise (the development server, in-process tests), a
  `concurrent.futures.ThreadPoolExecutor`.

The budget counts from submission. When it runs out the caller gets `Expired`;
work still queued then never starts (it looks at its deadline when it reaches
a thread); work already running cannot be stopped (Python cannot kill a
thread), so it finishes in its thread and its result is dropped.

Python code in a native thread still competes with the hub for the GIL: each
time the hub comes back from waiting on a socket it must win the GIL from the
busy threads, and with CPython's default 5 ms switch interval a request took
about a second while eight pure-Python burners ran on two cores. So the pool
lowers the switch interval to 0.1 ms when it starts, and it is small (2
threads by default): every thread running Python lengthens the hub's wait,
and under the GIL they add no CPU throughput. bench/responsive.py measures
this (figures in docs/benchmarks.md). Running the pool's threads at a lower
OS priority halved the median but not the tail (and risks a descheduled
thread holding the GIL on a busy machine), so it is not done. A process pool
would isolate CPU work completely but cannot run arbitrary plugin functions
(closures, the ToolContext's status callback), and forking under gevent left
hung children, so agentd does not use one.
"""
from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable

DEFAULT_THREADS = 2   # Python runs one thread at a time: more only add GIL contention for CPU work
SWITCH_INTERVAL = 0.0001  # seconds; see the module docstring

_threads = DEFAULT_THREADS
_native = None      # gevent ThreadPool, made in the worker process on first use
_executor = None    # ThreadPoolExecutor when gevent is not patched in
_executor_size = 0
_setup = threading.Lock()


class Expired(Exception):
    """The work did not finish within its budget (if it was still queued, it never ran)."""


def configure(threads: int) -> None:
    """Set the pool size (AGENTD_TOOL_THREADS); a running pool is resized."""
    global _threads, _executor
    _threads = max(1, int(threads))
    if _native is not None:
        _native.maxsize = _threads
    if _executor is not None and _executor_size != _threads:
        old, _executor = _executor, None
        old.shutdown(wait=False)  # queued work still runs there; new work goes to a new pool


def gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def _native_pool():
    global _native
    if _native is None:
        with _setup:
            if _native is None:
                from gevent.threadpool import ThreadPool
                sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
                _native = ThreadPool(_threads)
    return _native


def _thread_pool() -> ThreadPoolExecutor:
    global _executor, _executor_size
    if _executor is None:
        with _setup:
            if _executor is None:
                _executor_size = _threads
                _executor = ThreadPoolExecutor(max_workers=_threads, thread_name_prefix="agentd-offload")
    return _executor


class _Job:
    """One piece of work; it skips itself when it reaches a thread after its deadline."""

    def __init__(self, fn: Callable, args: tuple, kwargs: dict, deadline: float):
        self.fn, self.args, self.kwargs, self.deadline = fn, args, kwargs, deadline
        self.cancelled = False

    def __call__(self):
        if self.cancelled or time.monotonic() >= self.deadline:
            return False, None  # timed out while queued: never runs
        try:
            return True, self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 — handed to the caller, not logged by the pool
            return None, exc


def run(fn: Callable, *args, timeout: float, **kwargs) -> Any:
    """`fn(*args, **kwargs)` on a pool thread; its result or exception, or Expired after `timeout`."""
    job = _Job(fn, args, kwargs, time.monotonic() + max(0.0, timeout))
    try:
        ran, value = _wait_native(job, timeout) if gevent_patched() else _wait_thread(job, timeout)
    except Expired:
        job.cancelled = True
        raise
    if ran is None:
        raise value
    if not ran:
        raise Expired("the work waited in the queue past its time budget")
    return value


def _wait_native(job: _Job, timeout: float):
    import gevent
    # The Timeout also covers waiting for room in a full pool.
    with gevent.Timeout(max(timeout, 0.0), Expired("the work ran out of time")):
        return _native_pool().spawn(job).get()


def _wait_thread(job: _Job, timeout: float):
    future = _thread_pool().submit(job)
    try:
        return future.result(timeout=max(timeout, 0.0))
    except FutureTimeout:
        future.cancel()
        raise Expired("the work ran out of time") from None


def hub_callback(fn: Callable) -> Callable:
    """`fn` made callable from a pool thread: under gevent it runs on the hub that made it.

    A native thread must not touch the hub's gevent objects (a gevent queue a
    greenlet waits on) directly; the loop's thread-safe callback hands the call over.
    """
    if not gevent_patched():
        return fn
    import gevent
    loop = gevent.get_hub().loop

    def call(*args):
        loop.run_callback_threadsafe(fn, *args)  # from the hub's own thread too: it just runs a bit later
    return call
