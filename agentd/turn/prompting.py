"""The system prompt of a turn: the agent's template rendered in a sandbox, plus presets."""
from __future__ import annotations

import logging

from jinja2 import TemplateError

from agentd.templating import TemplateBudgetError, compile_template, render_compiled

log = logging.getLogger("agentd.turn.prompting")

MOODS = {
    "serious": "Answer in a serious, precise and formal tone.",
    "friendly": "Answer in a warm, friendly and encouraging tone.",
    "normal": "",
}

WEB_HINT = "For this answer, prefer searching and reading the web with your web tools."


def render_template(template: str, variables: dict, strict: bool = False) -> str:
    """Render a system-prompt template; a broken template falls back to its raw text.

    `strict`: a template past its budget raises TemplateBudgetError (a caller's override
    is refused) instead of falling back.
    """
    try:
        return render_compiled(compile_template(template), variables)
    except TemplateBudgetError as exc:
        if strict:
            raise
        log.warning("system prompt template over its budget (%s); using it unrendered", exc)
        return template
    except TemplateError as exc:
        log.warning("system prompt template failed (%s); using it unrendered", exc.__class__.__name__)
        return template
    except Exception:  # the sandbox refusing an unsafe expression, or a bad filter argument
        log.warning("system prompt template refused; using it unrendered")
        return template


def system_prompt(template: str | None, context: dict | None, *, mood: str | None = None,
                  prefer_web: bool = False, strict: bool = False) -> str | None:
    """The final system prompt for a turn, or None when there is nothing to say."""
    parts = [render_template(template, dict(context or {}), strict=strict) if template else ""]
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
