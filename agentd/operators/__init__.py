"""The operator's view: the usage ledger, reports, search, export and tracing.

`install(state)` registers the built-in `on_event` consumers (the ledger, and
the tracer when OpenTelemetry is configured) on the plugin manager.
"""
from __future__ import annotations

import logging

log = logging.getLogger("agentd.operators")


def install(state) -> None:
    from agentd.operators import pricing, tracing
    from agentd.operators.ledger import UsageLedger

    consumers = [UsageLedger()]
    tracer = tracing.from_env()
    if tracer is not None:
        consumers.append(tracer)
    state.operators = consumers
    for consumer in consumers:
        state.registry.manager.register(consumer, name=f"agentd.operators.{type(consumer).__name__}")
    pricing.warm_up()
