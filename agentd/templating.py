"""Jinja2 templates from agent files and callers, rendered in a sandbox with a budget.

System prompts (agentd.turn.prompting) and db_lookup's caller-bound query
parameters render here. The sandbox keeps templates from reaching Python
internals; the budget keeps them from holding a worker: `*` and `**` are
checked, the output is counted as it streams, and the time is checked on every
line the template's own code runs. Depends on nothing else of agentd.
"""
from __future__ import annotations

import functools
import sys
import time

from jinja2 import ChainableUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

RENDER_SECONDS = 0.5          # a system prompt renders in well under a millisecond
RENDER_MAX_CHARS = 100_000    # longer than any sensible prompt, far below a memory problem


class TemplateBudgetError(Exception):
    """A template ran past its time or size budget (a loop of 10**9, a string times 10**9)."""


class _BudgetedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with `*` and `**` checked so one expression cannot build gigabytes."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise TemplateBudgetError("an exponent larger than 64")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) \
                        and len(seq) * times > RENDER_MAX_CHARS:
                    raise TemplateBudgetError(f"a value longer than {RENDER_MAX_CHARS} characters")
        return super().call_binop(context, operator, left, right)


# A missing variable renders as nothing (ChainableUndefined), and the sandbox keeps
# templates from reaching Python internals: context comes from untrusted callers.
_env = _BudgetedSandbox(undefined=ChainableUndefined, autoescape=False)


@functools.lru_cache(maxsize=64)
def _compiled(template: str):
    # Compiling is ~0.3 ms and the same few agent templates render on every
    # turn; a compiled template is immutable and safe to share across threads.
    # A template that fails to compile raises here and is not cached.
    return _env.from_string(template)


def compile_template(template: str):
    """A compiled template (raises jinja2's TemplateSyntaxError for a broken one)."""
    return _compiled(template)


def render_compiled(compiled, variables: dict) -> str:
    """Render within RENDER_SECONDS and RENDER_MAX_CHARS; TemplateBudgetError past either.

    The size is counted as the output streams; the time is checked on every line the
    template's own code runs (a trace function on template frames only), so even a
    loop that prints nothing, `{% for i in range(99999) %}{% for j in range(99999) %}`,
    stops at the deadline instead of holding the worker for hours.
    """
    deadline = time.monotonic() + RENDER_SECONDS

    def on_line(frame, event, arg):
        if time.monotonic() > deadline:
            raise TemplateBudgetError(f"took longer than {RENDER_SECONDS:g} s to render")
        return on_line

    def on_call(frame, event, arg):
        return on_line if frame.f_code.co_filename == "<template>" else None

    parts, size = [], 0
    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        for piece in compiled.generate(**variables):
            size += len(piece)
            if size > RENDER_MAX_CHARS:
                raise TemplateBudgetError(f"renders to more than {RENDER_MAX_CHARS} characters")
            parts.append(piece)
    except OverflowError:  # the sandbox's own cap on range()
        raise TemplateBudgetError("a range larger than the sandbox allows") from None
    finally:
        sys.settrace(previous)
    return "".join(parts)
