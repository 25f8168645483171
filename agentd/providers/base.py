"""The adapter interface every model provider implements.

A provider turns a `ModelRequest` into either a `Completion` (`complete`) or a
stream of `ProviderChunk`s ending in one `Completion` (`stream`). Wire formats,
tool-call deltas, reasoning fields and usage fields stay inside the adapter.
"""
from __future__ import annotations

import logging
import re

from typing import Callable, Iterator

import httpx

from agentd.vocab import Completion, ModelRequest, ProviderChunk  # noqa: F401  (re-exported)

log = logging.getLogger("agentd.providers")


class ProviderError(Exception):
    """A model call failed.

    `unavailable` means nothing usable could be reached (connection refused,
    timeouts): 503 PROVIDER_UNAVAILABLE. Otherwise the provider answered with
    an error or garbage: 502 MODEL_ERROR. `retryable` and `retry_after` let the
    resilience layer decide whether to try again.
    """

    def __init__(self, message: str, *, unavailable: bool = False, retryable: bool = False,
                 retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.unavailable = unavailable
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class Provider:
    """Base class for adapters. `config` is the agent's `model` block (plus any override)."""

    def __init__(self, config: dict, http: httpx.Client | None = None):
        self.config = config
        self.http = http or httpx.Client(timeout=default_timeout(config))

    @property
    def model(self) -> str:
        return self.config.get("name", "")

    def complete(self, request: ModelRequest) -> Completion:
        """One non-streamed call."""
        raise NotImplementedError

    def stream(self, request: ModelRequest) -> Iterator[ProviderChunk]:
        """One streamed call; the last chunk carries the completion."""
        raise NotImplementedError

    def close(self) -> None:
        self.http.close()


class HttpProvider(Provider):
    """The skeleton every HTTP adapter shares (template method): send, map errors, parse.

    An adapter supplies only its wire format: `label`, `endpoint`, `headers`, `body`,
    `parse_answer` for a whole answer, and `stream_state` + `stream_chunks` for a
    streamed one. The state object assembles the answer and tells `finished`,
    `produced` (some text reached the client) and `completion()`.
    """

    label = "provider"
    MALFORMED = (ValueError, KeyError, IndexError, TypeError, AttributeError)

    def endpoint(self, request: ModelRequest, stream: bool) -> str:
        raise NotImplementedError

    def headers(self) -> dict:
        return {}

    def body(self, request: ModelRequest, stream: bool) -> dict:
        raise NotImplementedError

    def parse_answer(self, data, request: ModelRequest) -> Completion:
        raise NotImplementedError

    def stream_state(self, request: ModelRequest):
        raise NotImplementedError

    def stream_chunks(self, response: httpx.Response, state) -> Iterator[ProviderChunk]:
        """The chunks of a streamed answer; returns once the state is finished."""
        raise NotImplementedError

    def complete(self, request: ModelRequest) -> Completion:
        try:
            response = self.http.post(self.endpoint(request, False), json=self.body(request, False),
                                      headers=self.headers(), timeout=default_timeout(self.config))
        except httpx.HTTPError as exc:
            raise ProviderError(f"{self.label}: {exc.__class__.__name__}", unavailable=True,
                                retryable=True) from exc
        if response.status_code >= 400:
            raise status_error(response, self.label)
        try:
            return self.parse_answer(response.json(), request)
        except self.MALFORMED as exc:
            raise ProviderError(f"{self.label} sent a malformed answer: {exc!r}") from exc

    def stream(self, request: ModelRequest) -> Iterator[ProviderChunk]:
        state = self.stream_state(request)
        try:
            with self.http.stream("POST", self.endpoint(request, True), json=self.body(request, True),
                                  headers=self.headers(), timeout=default_timeout(self.config)) as response:
                if response.status_code >= 400:
                    raise status_error(response, self.label)
                yield from self.stream_chunks(response, state)
                if state.finished:
                    yield ProviderChunk("completion", completion=state.completion())
                    # The router stops at the completion; reading on to the body's end
                    # (off the turn's path) lets the connection go back to the pool: a
                    # response closed early costs a new connection on the next call.
                    for _ in response.iter_bytes():
                        pass
        except httpx.HTTPError as exc:
            if state.finished:
                return  # the answer was complete; only the body's tail failed
            raise ProviderError(f"{self.label} stream failed: {exc.__class__.__name__}",
                                unavailable=not state.produced, retryable=True) from exc
        if not state.finished:
            raise ProviderError(f"{self.label} stream ended before the answer was complete")


ProviderFactory = Callable[..., Provider]


# Seconds. first_byte: until the provider starts answering (first chunk; the whole
# answer when not streamed); idle: the longest silence between chunks; total: a call.
DEFAULT_TIMEOUTS = {"connect": 10.0, "first_byte": 120.0, "idle": 60.0, "total": 600.0}


def timeouts_of(config: dict) -> dict:
    """The model block's `timeouts`, completed with the defaults."""
    return {**DEFAULT_TIMEOUTS, **(config.get("timeouts") or {})}


def default_timeout(config: dict) -> httpx.Timeout:
    """Socket-level timeouts from the model block.

    A socket read may wait for the first byte or sit through an idle gap, so it
    gets the larger of the two, plus a grace second: the router enforces each one
    exactly per chunk and should be the one that fires (its error names the limit).
    """
    timeouts = timeouts_of(config)
    read = max(timeouts["first_byte"], timeouts["idle"]) + 1.0
    return httpx.Timeout(connect=timeouts["connect"], read=read, write=30.0, pool=10.0)


def status_error(response: httpx.Response, provider: str) -> ProviderError:
    """Map a non-2xx upstream response to a ProviderError with retry hints."""
    retryable = response.status_code in (408, 409, 429) or response.status_code >= 500
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    try:
        body = response.read().decode("utf-8", "replace")[:300]
    except httpx.HTTPError:
        body = ""
    # The body goes to the (redacted) log only: the error message reaches API clients,
    # widget visitors included, and upstream error bodies echo keys, prompts, hosts.
    log.warning("%s answered HTTP %s: %s", provider, response.status_code, body)
    return ProviderError(f"{provider} answered HTTP {response.status_code}",
                         retryable=retryable, retry_after=retry_after,
                         status=response.status_code)


def upstream_error(provider: str, kind: str, detail: str, *, retryable: bool = False) -> ProviderError:
    """An error the provider reported inside a 200 answer or stream.

    Its text goes to the (redacted) log only, like status_error's body: clients see
    the provider and a short error kind, never upstream text.
    """
    log.warning("%s reported an error (%s): %s", provider, kind, detail[:300])
    kind = re.sub(r"[^A-Za-z0-9_.-]", "", str(kind))[:40] or "error"
    return ProviderError(f"{provider} reported an error ({kind})", retryable=retryable)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (dates are ignored)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
