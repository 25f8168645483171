"""gunicorn settings for agentd: `gunicorn -c gunicorn.conf.py wsgi:app`.

Streams are long (a turn can stream for minutes) and mostly idle (waiting for
the model's next token), so the worker is gevent: one process holds thousands
of open streams as greenlets, where gthread would hold only as many as threads.

- Monkey-patching: gunicorn's gevent worker calls `gevent.monkey.patch_all()`
  in each worker right after the fork. Nothing of agentd may be imported before
  that, so this file imports nothing of agentd at module level and
  `preload_app` stays off: wsgi.py (and with it peewee, psycopg and httpx) is
  imported in the patched worker. psycopg 3 (≥ 3.1.14) then picks a
  cooperative wait function by itself when it sees `select` patched;
  `post_worker_init` checks that it did, and that sockets are gevent's.
- Timeouts: for an async worker `timeout` only watches the worker's own loop
  (it pings the master every second, whatever the requests do), so a long
  stream is never killed by it; a loop blocked that long is a bug worth a
  restart. `keepalive` only bounds the idle wait for the next request on a
  connection. `graceful_timeout` is how long running streams may go on after
  SIGTERM.
- Shutdown: on SIGTERM gunicorn stops accepting; streams that finish within
  `graceful_timeout` finish normally; shortly before it runs out the rest are
  ended with an `error` event and their partial answers stored (see
  `_end_streams_before_the_deadline`), so the worker exits cleanly before the
  master's SIGKILL. SIGINT/SIGQUIT (quick shutdown) store the partials at once.
  A run whose client went away holds no connection, so gunicorn's own wait
  would not wait for it: `worker_exit` gives it the same grace, then the same end.

Settings come from AGENTD_HOST, AGENTD_PORT, AGENTD_WORKERS; gunicorn's own
command-line flags override any of them (e.g. `--graceful-timeout 5`).
"""
import os

bind = f"{os.environ.get('AGENTD_HOST', '127.0.0.1')}:{os.environ.get('AGENTD_PORT', '8000')}"
workers = int(os.environ.get("AGENTD_WORKERS", "1"))  # one per core with PostgreSQL; SQLite: keep 1
worker_class = "gevent"
worker_connections = 4000       # open connections per worker: ≥ 2,000 streams with room for the rest
timeout = 60                    # watches the worker's event loop only, never a request (see above)
graceful_timeout = 30           # running streams may finish within this after SIGTERM
keepalive = 75                  # idle seconds between requests; above common proxies' idle timeouts
preload_app = False             # the app must be imported after gevent's monkey-patching
max_requests = 0                # a worker restart would cut every stream it holds
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = None                 # agentd logs each request itself (one JSON line with its request id)
# gunicorn 27's control socket defaults to one fixed path per user: several
# instances on one host (blue/green, tests) would take it from each other.
control_socket_disable = True
errorlog = "-"

# How long before graceful_timeout runs out the remaining streams are ended,
# leaving the worker time to send their error events and exit on its own.
SHUTDOWN_MARGIN = 5.0


def post_worker_init(worker):
    """In the (patched) worker, once the app is loaded: check greenness, watch for shutdown."""
    import gevent

    global _shutdown_watch
    _check_cooperative(worker)
    _shutdown_watch = gevent.spawn(_end_streams_before_the_deadline, worker)


# The greenlet ending the runs before the deadline (post_worker_init).
_shutdown_watch = None


def worker_exit(server, worker):
    """In the worker, once gunicorn let go of its connections: runs without a client
    (their client left) may still finish within the grace period; the rest are ended."""
    if _shutdown_watch is None:
        return  # called in the master (for a worker already gone): no run lives here
    _shutdown_watch.join(timeout=float(worker.cfg.graceful_timeout))
    _abort_turns(worker, "worker exit")


def worker_int(worker):
    """SIGINT/SIGQUIT: the worker exits now; store every live turn's partial answer first."""
    _abort_turns(worker, "quick shutdown")


def worker_abort(worker):
    """SIGABRT (the worker's loop was stuck past `timeout`): store what can be stored."""
    _abort_turns(worker, "worker timeout")


# Keep-alive connections waiting for their next request. At shutdown they are
# closed at once; otherwise each would hold the worker up to `keepalive` (a
# browser or proxy keeps them open), and a stream that finished during the
# grace period would leave its connection waiting too.
_idle_connections = None


def _idle():
    global _idle_connections
    if _idle_connections is None:
        import weakref
        _idle_connections = weakref.WeakSet()
    return _idle_connections


def pre_request(worker, req):
    sock = getattr(getattr(req, "unreader", None), "sock", None)
    if sock is not None:
        _idle().discard(sock)


def post_request(worker, req, environ, resp):
    sock = environ.get("gunicorn.socket") if environ else None
    if sock is None:
        return
    if worker.alive:
        _idle().add(sock)
    else:
        _close_connection(sock)  # the response is complete; no next request on this one


def _close_connection(sock):
    import socket
    try:
        sock.shutdown(socket.SHUT_RDWR)  # the keep-alive read sees EOF and the handler ends
    except OSError:
        pass


def child_exit(server, worker):
    """In the master: a dead worker's gauge samples must drop out of /metrics (docs/deploy.md)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(worker.pid)


def _end_streams_before_the_deadline(worker):
    import gevent
    from agentd.turn.liveturns import live_turns

    while worker.alive:
        gevent.sleep(0.25)
    live_turns.closing = True  # idle WebSockets close; no turn should start any more
    for sock in list(_idle()):
        _close_connection(sock)
    grace = float(worker.cfg.graceful_timeout)
    margin = min(SHUTDOWN_MARGIN, max(grace * 0.3, 0.5))
    deadline = gevent.get_hub().loop.now() + max(grace - margin, 0.0)
    while len(live_turns) and gevent.get_hub().loop.now() < deadline:
        gevent.sleep(0.25)
    _abort_turns(worker, "graceful timeout")


def _abort_turns(worker, why):
    try:
        from agentd.api.streaming import abort_live_turns
        ended = abort_live_turns()
    except Exception:  # noqa: BLE001 — shutting down anyway; say why the partials may be missing
        worker.log.exception("could not end the running turns (%s)", why)
        return
    if ended:
        worker.log.warning("%s: ended %d running turn(s), partial answers stored", why, ended)


def _check_cooperative(worker):
    """Warn loudly when something would block every stream of this worker."""
    import socket
    import sys

    from gevent import monkey

    if not monkey.is_module_patched("socket") or "gevent" not in socket.socket.__module__:
        worker.log.error("sockets are not gevent's: streams will block each other")
    waiting = sys.modules.get("psycopg.waiting")
    if waiting is not None and getattr(waiting, "wait", None) is getattr(waiting, "wait_c", object()):
        worker.log.error("psycopg was imported before monkey-patching and uses a blocking wait; "
                         "keep preload_app off and import nothing of agentd in gunicorn.conf.py")
