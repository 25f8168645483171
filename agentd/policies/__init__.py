"""Wiring the per-agent policies into the app: rate limits, quotas, guardrails, the response cache.

Each policy is a module of its own that knows nothing of the others; this is
the one place that hooks them onto the chat service's extension points, in
the order they must run for a message:

1. rate limits (cheapest, and a flood should not reach anything else),
2. the token quota,
3. guardrails (may refuse, storing the message as `refused`, or redact it),
then, once the turn exists, the response cache may answer it instead of the
model, and output guardrails check the answer.
"""
from __future__ import annotations

from flask import Flask

from agentd.policies import cache, guardrails
from agentd.policies.quota import Quotas, utc_now
from agentd.policies.ratelimit import RateLimiter


def install_policies(app: Flask, state) -> None:
    """Attach every policy to `state`'s extension lists and `app`'s response hooks."""
    if not hasattr(state, "clock"):
        state.clock = utc_now  # tests replace it to move to another day

    def hooks():
        return state.registry.manager.hook

    limiter = RateLimiter(state.config.rate_limit_storage, state.config.global_rate_limit)
    quotas = Quotas(lambda: state.clock())
    responses = cache.ResponseCache()
    state.rate_limiter = limiter
    state.message_checks += [limiter.check, quotas.check, guardrails.message_check(hooks)]
    state.answer_checks.append(guardrails.answer_check(hooks))
    state.chat.caller_wrappers += [responses.wrap, guardrails.output_wrapper(hooks)]
    state.turn_observers += [quotas.observe, responses.observe]
    app.after_request(cache.add_header)
