"""The per-agent policies: rate limits, quotas, guardrails, the response cache.

Each policy is a module of its own that knows nothing of the others. This
package registers them on the app's plugin manager as ordinary pluggy plugins,
through the same hooks a user's plugin implements (`check_message`,
`check_answer`, `wrap_model_call`, `on_event`). For a message they run:

1. rate limits (cheapest, and a flood should not reach anything else),
2. the token quota,
3. the built-in guardrail rules (may refuse, storing the message as `refused`,
   or redact it), then the plugins' `check_message` hooks;
then, once the turn exists, the response cache may answer it instead of the
model, and the output guardrails check the answer.
"""
from __future__ import annotations

from flask import Flask

from agentd.hookspecs import hookimpl
from agentd.policies import cache, guardrails
from agentd.policies.quota import Quotas, utc_now
from agentd.policies.ratelimit import RateLimiter


class LimitsPlugin:
    """Rate limits and token quotas: first of all message checks (`tryfirst`)."""

    def __init__(self, limiter: RateLimiter, quotas: Quotas):
        self.limiter, self.quotas = limiter, quotas

    @hookimpl(tryfirst=True)
    def check_message(self, agent, principal, chat_input):
        self.limiter.check(agent, principal, chat_input)
        self.quotas.check(agent, principal, chat_input)

    @hookimpl(trylast=True)
    def on_event(self, run, event):
        if event.type == "done":
            self.quotas.observe(run, run.outcome)


class CachePlugin:
    """The response cache: answers a repeated first question from storage."""

    def __init__(self, responses: cache.ResponseCache):
        self.responses = responses

    @hookimpl(trylast=True)
    def wrap_model_call(self, run, caller):
        return self.responses.wrap(run, caller)

    @hookimpl(trylast=True)
    def on_event(self, run, event):
        if event.type == "done":
            self.responses.observe(run, run.outcome)


def install_policies(app: Flask, state) -> None:
    """Register every policy on the app's plugin manager, and the cache header on responses."""
    if not hasattr(state, "clock"):
        state.clock = utc_now  # tests replace it to move to another day
    manager = state.registry.manager
    limiter = RateLimiter(state.config.rate_limit_storage, state.config.global_rate_limit)
    quotas = Quotas(lambda: state.clock())
    state.rate_limiter = limiter
    # Registration order decides the order among equals: pluggy calls the latest first.
    # Guardrails before limits, so the limits' check runs first; the cache after the
    # guardrails, so the cache wraps the provider and the held-back deltas wrap the cache.
    manager.register(guardrails.GuardrailsPlugin(lambda: manager.hook), name="agentd.guardrails")
    manager.register(LimitsPlugin(limiter, quotas), name="agentd.limits")
    manager.register(CachePlugin(cache.ResponseCache()), name="agentd.cache")
    app.after_request(cache.add_header)
