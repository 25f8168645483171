"""The system prompt of a turn: the agent's template rendered in a sandbox, plus presets."""
from __future__ import annotations

import functools
import logging

from jinja2 import ChainableUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

log = logging.getLogger("agentd.turn.prompting")

MOODS = {
    "serious": "Answer in a serious, precise and formal tone.",
    "friendly": "Answer in a warm, friendly and encouraging tone.",
    "normal": "",
}

WEB_HINT = "For this answer, prefer searching and reading the web with your web tools."

# A missing variable renders as nothing (ChainableUndefined), and the sandbox keeps
# templates from reaching Python internals: context comes from untrusted callers.
_env = ImmutableSandboxedEnvironment(undefined=ChainableUndefined, autoescape=False)


@functools.lru_cache(maxsize=64)
def _compiled(template: str):
    # Compiling is ~0.3 ms and the same few agent templates render on every
    # turn; a compiled template is immutable and safe to share across threads.
    # A template that fails to compile raises here and is not cached.
    return _env.from_string(template)


def render_template(template: str, variables: dict) -> str:
    """Render a system-prompt template; a broken template falls back to its raw text."""
    try:
        return _compiled(template).render(**variables)
    except TemplateError as exc:
        log.warning("system prompt template failed (%s); using it unrendered", exc.__class__.__name__)
        return template
    except Exception:  # the sandbox refusing an unsafe expression, or a bad filter argument
        log.warning("system prompt template refused; using it unrendered")
        return template


def system_prompt(template: str | None, context: dict | None, *, mood: str | None = None,
                  prefer_web: bool = False) -> str | None:
    """The final system prompt for a turn, or None when there is nothing to say."""
    parts = [render_template(template, dict(context or {})) if template else ""]
    if mood and MOODS.get(mood):
        parts.append(MOODS[mood])
    if prefer_web:
        parts.append(WEB_HINT)
    text = "\n\n".join(p.strip() for p in parts if p and p.strip())
    return text or None


def title_from(message: str, limit: int = 60) -> str:
    """A conversation title from its first message: the first line, cut at a word."""
    line = " ".join(message.strip().split())
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0] or line[:limit]
    return cut.rstrip(",.;:") + "…"
