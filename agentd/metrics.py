"""Prometheus metrics at /metrics: requests, turns, tool calls, provider timings, errors, streams.

Each app gets its own CollectorRegistry, so several apps in one process (the
tests) never collide. Under gunicorn with several workers set
PROMETHEUS_MULTIPROC_DIR: every worker then writes its samples to files in that
folder and /metrics aggregates all of them (the active-streams gauge is summed
over live processes). Turn-level timings are kept per turn in `timings()`, so the
turn log line can report the same time-to-first-token the histogram saw.
"""
from __future__ import annotations

import logging
import os
import time
import weakref
from dataclasses import dataclass

from flask import Flask, Response, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)
from prometheus_client import multiprocess

from agentd.hookspecs import hookimpl

log = logging.getLogger("agentd.metrics")

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
# The method is the client's to choose (`FOO1 /`, `FOO2 /`…): others count as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


@dataclass
class TurnTimings:
    """What the observer measured of one turn (monotonic seconds)."""

    started: float
    call_started: float
    first_token: float | None = None   # seconds from turn start to its first delta
    provider_calls: int = 0
    tool_calls: int = 0
    streamed: bool = False
    token_seen_in_call: int = -1       # the provider call whose first token was already timed


_TIMINGS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def timings(turn) -> TurnTimings | None:
    """The timings measured for a turn so far, if the metrics observer saw it."""
    return _TIMINGS.get(turn)


class Metrics:
    """The app's metric families and the hooks that feed them."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("agentd_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.request_seconds = Histogram("agentd_http_request_duration_seconds",
                                         "Time to the response headers, by route", ["route"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.turns = Counter("agentd_turns", "Finished turns by agent and outcome",
                             ["agent", "outcome"], registry=r)
        self.tool_calls = Counter("agentd_tool_calls", "Tool calls by tool and outcome",
                                  ["tool", "outcome"], registry=r)
        self.provider_latency = Histogram("agentd_provider_latency_seconds",
                                          "One model call, request to complete answer",
                                          ["provider"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("agentd_provider_time_to_first_token_seconds",
                              "One model call, request to its first streamed token",
                              ["provider"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("agentd_errors", "Errors answered, by API error code", ["code"], registry=r)
        self.tokens = Counter("agentd_tokens", "Provider-reported tokens by agent and kind",
                              ["agent", "kind"], registry=r)
        self.active_streams = Gauge("agentd_active_streams", "Streamed turns running now",
                                    registry=r, multiprocess_mode="livesum")

    # --- HTTP -------------------------------------------------------------------
    def before_request(self) -> None:
        g.metrics_started = time.monotonic()

    def after_request(self, response):
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method = request.method if request.method in METHODS else "other"
        self.requests.labels(method, route, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            self.request_seconds.labels(route).observe(time.monotonic() - started)
        if response.status_code >= 400 and response.is_json:
            error = (response.get_json(silent=True) or {}).get("error")
            if isinstance(error, dict) and error.get("code"):
                self.errors.labels(error["code"]).inc()
        return response

    # --- turns ------------------------------------------------------------------
    def observe(self, turn, event) -> None:
        """Event observer: (turn, event) for start, loop events, error and finish."""
        now = time.monotonic()
        t = _TIMINGS.get(turn)
        if t is None:
            t = _TIMINGS[turn] = TurnTimings(started=now, call_started=now, streamed=bool(turn.inp.stream))
            if t.streamed:
                self.active_streams.inc()
        handler = getattr(self, "_on_" + event.type, None)
        if handler is not None:
            handler(turn, event, t, now)

    def _provider(self, turn) -> str:
        # The recorder follows the provider that actually answered (after fallbacks).
        return getattr(turn.recorder, "provider", None) or turn.block.get("provider") or "unknown"

    def _on_delta(self, turn, event, t: TurnTimings, now: float) -> None:
        if t.first_token is None:
            t.first_token = now - t.started
        if t.token_seen_in_call != t.provider_calls:
            t.token_seen_in_call = t.provider_calls
            self.ttft.labels(self._provider(turn)).observe(now - t.call_started)

    _on_reasoning = _on_delta

    def _on_assistant_message(self, turn, event, t: TurnTimings, now: float) -> None:
        self.provider_latency.labels(self._provider(turn)).observe(now - t.call_started)
        t.provider_calls += 1

    def _on_answer(self, turn, event, t: TurnTimings, now: float) -> None:
        self._on_assistant_message(turn, event, t, now)
        usage = event.payload.usage
        self.tokens.labels(turn.agent.id, "prompt").inc(usage.prompt_tokens)
        self.tokens.labels(turn.agent.id, "completion").inc(usage.completion_tokens)

    def _on_tool_result(self, turn, event, t: TurnTimings, now: float) -> None:
        # Only the agent's own tool names become label values: a name the model made up
        # would add a series per request (and /metrics is open).
        name = event.data.get("name")
        if name not in turn.agent.tools:
            name = "unknown"
        is_error = event.data.get("is_error")
        self.tool_calls.labels(name, "error" if is_error else "ok").inc()
        t.tool_calls += 1
        t.call_started = now  # the next model call starts once the tool results are in

    def _on_error(self, turn, event, t: TurnTimings, now: float) -> None:
        if t.streamed:  # a non-streamed turn's error is counted as its HTTP response
            self.errors.labels(event.data["error"]["code"]).inc()

    def _on_finish(self, turn, event, t: TurnTimings, now: float) -> None:
        self.turns.labels(turn.agent.id, event.data.get("status", "unknown")).inc()
        if t.streamed:
            self.active_streams.dec()

    # --- exposition -------------------------------------------------------------
    def render(self) -> Response:
        path = multiprocess_dir()
        if path:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=path)
            body = generate_latest(registry)
        else:
            body = generate_latest(self.registry)
        return Response(body, mimetype=None, content_type=CONTENT_TYPE_LATEST)


class MetricsPlugin:
    """Counts every run's events; first of the observers (the turn log reads what it measured)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    @hookimpl(tryfirst=True)
    def on_event(self, run, event):
        self.metrics.observe(run, event)


def install(app: Flask, state) -> Metrics:
    """Create the app's metrics, count every request and turn, and serve /metrics (open)."""
    metrics = Metrics()
    app.extensions["agentd.metrics"] = metrics
    app.before_request(metrics.before_request)
    app.after_request(metrics.after_request)
    state.registry.manager.register(MetricsPlugin(metrics), name="agentd.metrics")
    app.add_url_rule("/metrics", "metrics", metrics.render, methods=["GET"])
    return metrics
