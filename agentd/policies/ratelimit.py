"""Rate limits on chat turns, with the `limits` library.

Three limits, each a moving window:

- per agent and user: the agent's `rate_limit` (`widget.rate_limit` for widget
  visitors, falling back to `rate_limit`), counted per API key user, widget
  visitor, or client IP in open local mode;
- per client address, for widget visitors: `widget.rate_limit_per_ip` (30/minute
  by default) on turns and `widget.sessions_per_ip` (10/minute) on new widget
  sessions, so minting fresh visitor ids does not reset anything (the address
  is the forwarded one behind AGENTD_TRUSTED_PROXIES);
- global: `AGENTD_GLOBAL_RATE_LIMIT`, every turn on the server together.

Counters live in `AGENTD_RATE_LIMIT_STORAGE`: `memory://` for one process,
`redis://host:port` when several processes serve, so they share one count.
A turn over a limit is refused before anything is stored: 429 RATE_LIMITED
with `Retry-After` in seconds. Flask-Limiter's decorators key limits by route;
ours come from each agent's YAML, so `limits` is used directly.
"""
from __future__ import annotations

import logging
import math
import time
from functools import lru_cache

from flask import has_request_context, request
from limits import RateLimitItem, parse, storage, strategies

from agentd.errors import ApiError

log = logging.getLogger("agentd.policies.ratelimit")


class RateLimited(ApiError):
    status, code = 429, "RATE_LIMITED"


@lru_cache(maxsize=256)
def parse_rate(text: str) -> RateLimitItem:
    """`20/minute`, `5 per second`, `100/2 hours` as a limits item."""
    return parse(text)


def _client_ip() -> str:
    return request.remote_addr if has_request_context() and request.remote_addr else "unknown"


def principal_key(principal) -> str:
    """Who is counted: the key's user, the widget visitor, or the client's IP in open mode."""
    if principal.kind in ("key", "widget"):
        return f"{principal.kind}:{principal.user_id}"
    return f"ip:{_client_ip()}"


WIDGET_TURNS_PER_IP = "30/minute"
WIDGET_SESSIONS_PER_IP = "10/minute"


def agent_rate(agent, principal) -> str | None:
    if principal.kind == "widget":
        return agent.widget.get("rate_limit") or agent.setting("rate_limit")
    return agent.setting("rate_limit")


class RateLimiter:
    """The app's limiter over one storage; `check` refuses a message over a limit (429)."""

    def __init__(self, storage_url: str, global_limit: str = ""):
        self.storage = storage.storage_from_string(storage_url or "memory://")
        self.limiter = strategies.MovingWindowRateLimiter(self.storage)
        self.global_limit = parse_rate(global_limit) if global_limit.strip() else None

    def _refuse(self, item: RateLimitItem, identifiers: tuple) -> RateLimited:
        reset, _ = self.limiter.get_window_stats(item, *identifiers)
        retry = max(1, math.ceil(reset - time.time()))
        what = "new widget sessions" if identifiers[0] == "widget-session" else "messages"
        return RateLimited(f"Too many {what}: the limit is {item}; try again in {retry} s",
                           headers={"Retry-After": str(retry)})

    def _limits(self, agent, principal) -> list[tuple[RateLimitItem, tuple]]:
        limits = []
        rate = agent_rate(agent, principal)
        if rate:
            limits.append((parse_rate(rate), ("agent", agent.id, principal_key(principal))))
        if principal.kind == "widget":
            per_ip = agent.widget.get("rate_limit_per_ip") or WIDGET_TURNS_PER_IP
            limits.append((parse_rate(per_ip), ("widget-ip", agent.id, _client_ip())))
        if self.global_limit is not None:
            limits.append((self.global_limit, ("global",)))
        return limits

    def check(self, agent, principal, inp):
        """Count this turn against the agent's per-user limit and the global one."""
        self._enforce(self._limits(agent, principal))
        return None

    def check_session(self, agent) -> None:
        """Count a new widget session against the agent's per-address limit (429 when over)."""
        per_ip = agent.widget.get("sessions_per_ip") or WIDGET_SESSIONS_PER_IP
        self._enforce([(parse_rate(per_ip), ("widget-session", agent.id, _client_ip()))])

    def _enforce(self, limits: list[tuple[RateLimitItem, tuple]]) -> None:
        try:
            # Test every limit before counting, so a refusal by one does not use up the other.
            for item, identifiers in limits:
                if not self.limiter.test(item, *identifiers):
                    raise self._refuse(item, identifiers)
            for item, identifiers in limits:
                if not self.limiter.hit(item, *identifiers):
                    raise self._refuse(item, identifiers)
        except RateLimited:
            raise
        except Exception:
            # A limiter store that is down must not take chat down with it: serve, and say so.
            log.exception("rate limit storage unavailable; the request is not limited")
