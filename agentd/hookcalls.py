"""Calling hooks whose implementations build on each other's results.

pluggy calls every implementation with the same arguments and collects the
results. Some agentd hooks chain instead: a rewritten message is what the next
check sees, each `wrap_model_call` wraps what the previous one returned, and one
failing `on_event` observer must not keep the others from seeing the event.
These helpers walk the implementations in pluggy's own order (tryfirst ones
first, then the most recently registered) and hand each only the arguments it
declares, as pluggy does.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterator

log = logging.getLogger("agentd.plugins")


def each_impl(hook_caller) -> Iterator[Callable]:
    """One callable per implementation of a hook, in call order; each takes keyword arguments."""
    for impl in reversed(hook_caller.get_hookimpls()):
        if getattr(impl, "hookwrapper", False) or getattr(impl, "wrapper", False):
            continue
        yield _bound(impl)


def _bound(impl) -> Callable:
    def call(**kwargs):
        return impl.function(*[kwargs[name] for name in impl.argnames])
    return call


def checked_answer(hook, agent, principal, content: str | None) -> str | None:
    """The answer after every `check_answer` implementation; each sees the previous one's text."""
    context = {"user_id": principal.user_id, "principal_kind": principal.kind}
    for call in each_impl(hook.check_answer):
        replacement = call(agent=agent, content=content, context=context, principal=principal)
        if isinstance(replacement, str):
            content = replacement
    return content


def wrapped_caller(hook, run, caller):
    """The run's model caller after every `wrap_model_call` implementation."""
    for call in each_impl(hook.wrap_model_call):
        caller = call(run=run, caller=caller) or caller
    return caller


def notify(hook, run, event) -> None:
    """Tell every `on_event` implementation; an observer's failure is logged, never raised."""
    for call in each_impl(hook.on_event):
        try:
            call(run=run, event=event)
        except Exception:  # noqa: BLE001 — metrics or a plugin must never break the run
            log.exception("on_event observer failed")
