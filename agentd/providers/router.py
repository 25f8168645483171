"""Choosing a provider for a turn, and failure handling in one place.

Retries (exponential backoff with jitter, honouring a capped Retry-After) and
then the agent's `fallbacks`, in order — but only before the first delta
reached the client. After that a failure is final and the partial answer stays.
"""
from __future__ import annotations

import contextvars
import logging
import os
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import httpx

from agentd.errors import ApiError, InvalidRequest, ModelError, ProviderUnavailable
from agentd.providers.base import Provider, ProviderChunk, ProviderError, timeouts_of

log = logging.getLogger("agentd.providers")

RETRY_AFTER_CAP = 10.0


@dataclass
class RetryPolicy:
    retries: int = 2
    base_delay: float = 0.25
    max_delay: float = 4.0
    retry_after_cap: float = RETRY_AFTER_CAP  # a provider asking for minutes is not waited for
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int, error: ProviderError) -> float:
        if error.retry_after is not None:
            return min(error.retry_after, self.retry_after_cap)
        backoff = min(self.max_delay, self.base_delay * (2 ** attempt))
        return backoff * (0.5 + random.random() / 2)


def model_chain(model: dict) -> list[dict]:
    """The primary model block followed by its fallbacks, each a complete model block."""
    primary = {k: v for k, v in model.items() if k not in ("fallbacks", "candidates", "allow_override",
                                                          "title_model")}
    return [primary] + list(model.get("fallbacks") or [])


def choose_candidate(model: dict, probe: Callable[[str], bool] | None = None) -> dict:
    """For `provider: auto`: the first candidate whose key is set or whose server answers."""
    if model.get("provider") != "auto":
        return model
    for candidate in model.get("candidates") or []:
        if candidate.get("requires_env") and not os.environ.get(candidate["requires_env"]):
            continue
        if candidate.get("requires_url") and not (probe or _answers)(candidate["requires_url"]):
            continue
        return {**{k: v for k, v in model.items() if k not in ("candidates", "provider")}, **candidate}
    raise ProviderUnavailable("no model candidate of this agent is available")


def _answers(url: str) -> bool:
    try:
        # In the background (Agent.probe_candidates): no request waits on this.
        return httpx.get(url, timeout=2.0).status_code < 500
    except httpx.HTTPError:
        return False


class ModelRouter:
    """Builds providers from model blocks and calls them with retries and fallbacks."""

    def __init__(self, factories: dict[str, Callable], http: httpx.Client | None = None,
                 policy: RetryPolicy | None = None):
        self.factories = factories
        self.http = http
        self.policy = policy or RetryPolicy()
        self._cache: dict[tuple, Provider] = {}

    def provider(self, block: dict) -> Provider:
        key = tuple(sorted((k, repr(v)) for k, v in block.items()))
        if key not in self._cache:
            factory = self.factories.get(block["provider"])
            if factory is None:
                raise InvalidRequest(f"unknown provider '{block['provider']}'")
            self._cache[key] = factory(block, http=self.http)
        return self._cache[key]

    def caller(self, model: dict, stream: bool, request_options: dict | None = None):
        """A ModelCaller over the chain; `used` tells which block answered."""
        return _ChainCaller(self, model_chain(model), stream)


class _ChainCaller:
    def __init__(self, router: ModelRouter, chain: list[dict], stream: bool):
        self.router, self.chain, self.stream = router, chain, stream
        self.used: dict = chain[0]

    def __call__(self, request) -> Iterator[ProviderChunk]:
        last_error: ProviderError | None = None
        for block in self.chain:
            self.used = block
            try:
                yield from self._attempts(block, request)
                return
            except ProviderError as exc:
                if getattr(exc, "after_first_delta", False):
                    raise _as_api_error(exc) from exc
                last_error = exc
                log.warning("provider %s failed, trying the next: %s", block["provider"], exc)
        raise _as_api_error(last_error)

    def _attempts(self, block: dict, request) -> Iterator[ProviderChunk]:
        provider = self.router.provider(block)
        request = _with_model(request, block)
        retries = block.get("retries", self.router.policy.retries)
        for attempt in range(retries + 1):
            started = False
            try:
                for chunk in watched(lambda: self._call(provider, request), timeouts_of(block),
                                     block["provider"]):
                    if chunk.type == "progress":
                        continue  # only the watchdog cares
                    started = started or chunk.type in ("delta", "reasoning")
                    yield chunk
                    if chunk.type == "completion":
                        # The answer is whole: the turn need not wait for the provider's
                        # call to wind down (it finishes in its worker).
                        return
                return
            except ProviderError as exc:
                if started:
                    exc.after_first_delta = True
                    raise
                if not exc.retryable or attempt == retries:
                    raise
                log.info("provider %s failed (%s), retry %d", block["provider"], exc, attempt + 1)
                self.router.policy.sleep(self.router.policy.delay(attempt, exc))

    def _call(self, provider: Provider, request) -> Iterator[ProviderChunk]:
        if self.stream:
            yield from provider.stream(request)
        else:
            yield ProviderChunk("completion", completion=provider.complete(request))


# --- deadlines ------------------------------------------------------------------
# Socket timeouts cannot tell "no first token yet" from "silent mid-stream", and
# cannot bound a whole call; so the call runs in a worker thread and we wait on
# its chunks with the right deadline for each. This holds for every provider,
# plugins included, whatever HTTP client they use.

_CHUNK, _ERROR, _END = "chunk", "error", "end"


def watched(make_chunks: Callable[[], Iterator[ProviderChunk]], limits: dict,
            label: str) -> Iterator[ProviderChunk]:
    """Chunks of `make_chunks()`, failing with a ProviderError when a deadline passes.

    first_byte bounds the wait for the first chunk, idle every later gap, total the call.
    """
    chunks: queue.Queue = queue.Queue()
    cancel = threading.Event()
    worker = threading.Thread(target=contextvars.copy_context().run,
                              args=(_pump, make_chunks, chunks, cancel), daemon=True,
                              name=f"agentd-model-{label}")
    worker.start()
    deadline = time.monotonic() + limits["total"]
    first = True
    try:
        while True:
            kind, value = _next(chunks, limits, deadline, first, label)
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            first = False
            yield value
    finally:
        cancel.set()  # the worker stops at its next chunk and closes the upstream response


def _next(chunks: queue.Queue, limits: dict, deadline: float, first: bool, label: str):
    which = "first_byte" if first else "idle"
    wait = limits[which]
    if deadline - time.monotonic() < wait:
        which, wait = "total", max(deadline - time.monotonic(), 0.0)
    try:
        return chunks.get(timeout=wait)
    except queue.Empty:
        # docs/api.md: timeouts are PROVIDER_UNAVAILABLE, even after some text arrived.
        raise ProviderError(f"{label} timed out ({which} timeout of {limits[which]}s)",
                            unavailable=True, retryable=True) from None


def _pump(make_chunks, chunks: queue.Queue, cancel: threading.Event) -> None:
    """Worker side: move chunks into the queue until done, failed or cancelled."""
    iterator = make_chunks()
    try:
        for chunk in iterator:
            if cancel.is_set():
                break
            chunks.put((_CHUNK, chunk))
    except Exception as exc:  # noqa: BLE001 — handed to the waiting side, which raises it
        chunks.put((_ERROR, exc))
    finally:
        chunks.put((_END, None))
        _close(iterator)


def _close(iterator) -> None:
    """Close a provider's generator (and so its upstream response) from the thread that ran it."""
    try:
        close = getattr(iterator, "close", None)
        if close:
            close()
    except Exception:  # noqa: BLE001 — nobody is waiting for this call any more
        log.warning("closing a provider call failed", exc_info=True)


def _with_model(request, block: dict):
    from dataclasses import replace
    return replace(request, model=block.get("name") or request.model,
                   temperature=block.get("temperature", request.temperature),
                   max_tokens=block.get("max_tokens", request.max_tokens))


def _as_api_error(exc: ProviderError | None) -> ApiError:
    if exc is None:
        return ProviderUnavailable("no provider could be reached")
    if exc.unavailable:
        return ProviderUnavailable(f"the model provider could not be reached: {exc}")
    return ModelError(f"the model provider failed: {exc}")
