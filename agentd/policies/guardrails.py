"""Guardrails: rules a user's message passes before the model sees it, and the answer after.

Per agent (YAML `guardrails:`): `max_length`, `blocked_patterns`, `pii`
(off | redact | refuse) and, for answers, `output_blocked_patterns` with
`output_replacement`. Plugins add rules through the `check_message` and
`check_answer` hooks. A refused message is stored with status `refused` (so
the history shows it and the model's history window skips it) and answered
with 422 GUARDRAIL_BLOCKED; nothing reaches the model and no turn lock is taken.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from typing import Callable, Iterator

from agentd.errors import ApiError
from agentd.providers.base import ProviderChunk
from agentd.store import messages as store
from agentd.store.models import Message, db

log = logging.getLogger("agentd.policies.guardrails")

DEFAULT_REDACTION = "[redacted]"


@dataclass(frozen=True)
class Verdict:
    """What a `check_message` plugin decides: refuse (with the reason shown to the user) or rewrite."""

    refuse: str | None = None    # the reason, sent back in the 422's `message`
    rewrite: str | None = None   # the text to send to the model instead


@dataclass(frozen=True)
class MessageContext:
    """What a `check_message` hook knows besides the agent and the text."""

    agent_id: str
    user_id: str
    principal_kind: str
    channel: str
    conversation_id: str | None
    context: dict | None


class GuardrailBlocked(ApiError):
    status, code = 422, "GUARDRAIL_BLOCKED"


# -------------------------------------------------------------------- PII

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# Written as one block, or in groups of four as printed on statements.
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)\b")
PHONE = re.compile(r"(?<![\w+])(?:\+|00)?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\(?\d{2,4}\)?){1,5}(?![\w])")
DATE_LIKE = re.compile(r"^\d{1,4}[./-]\d{1,2}[./-]\d{1,4}$")
US_PHONE = re.compile(r"^\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}$")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number carries."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """ISO 13616 mod-97 check: an IBAN-shaped string that is a real IBAN."""
    iban = re.sub(r"\s", "", text).upper()
    if not 15 <= len(iban) <= 34:
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _card(match: re.Match) -> bool:
    digits = re.sub(r"\D", "", match.group())
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _phone(match: re.Match) -> bool:
    """A phone number, told apart from order numbers, prices and dates by its shape."""
    text = match.group()
    digits = re.sub(r"\D", "", text)
    if not 7 <= len(digits) <= 15 or DATE_LIKE.match(text):
        return False
    if text.startswith(("+", "00", "(")) or US_PHONE.match(text):
        return True
    # A national number starts with its trunk prefix 0; a bare run of digits is something else.
    return text.startswith("0") and len(digits) >= 9


# Order matters: validated numbers first, so a card is not also taken for a phone number.
PII_KINDS: list[tuple[str, str, re.Pattern, Callable[[re.Match], bool]]] = [
    ("email", "email address", EMAIL, lambda m: True),
    ("iban", "IBAN", IBAN, lambda m: iban_ok(m.group())),
    ("card", "credit card number", CARD, _card),
    ("phone", "phone number", PHONE, _phone),
]


def find_pii(text: str) -> tuple[str, list[str]]:
    """The text with personal data replaced by `[EMAIL]`, `[PHONE]`…, and the kinds found."""
    found = []
    for kind, label, pattern, valid in PII_KINDS:
        def swap(match, kind=kind, label=label, valid=valid):
            if not valid(match):
                return match.group()
            if label not in found:
                found.append(label)
            return f"[{kind.upper()}]"
        text = pattern.sub(swap, text)
    return text, found


# ---------------------------------------------------------- the input rules

def _settings(agent) -> dict:
    return agent.setting("guardrails") or {}


def builtin_verdict(agent, text: str) -> Verdict | None:
    """The agent's own rules (max_length, blocked_patterns, pii) on a message."""
    rules = _settings(agent)
    limit = rules.get("max_length")
    if limit and len(text) > limit:
        return Verdict(refuse=f"The message is longer than {limit} characters")
    for pattern in rules.get("blocked_patterns") or []:
        if re.search(pattern, text):
            # The pattern itself stays private: naming it would teach how to get around it.
            return Verdict(refuse="The message contains content this agent does not accept")
    mode = rules.get("pii", "off")
    if mode != "off":
        redacted, kinds = find_pii(text)
        if kinds and mode == "refuse":
            return Verdict(refuse=f"The message contains personal data ({', '.join(kinds)}); "
                                  "remove it and send it again")
        if kinds:
            return Verdict(rewrite=redacted)
    return None


def plugin_verdict(hook, agent, text: str, context: MessageContext) -> Verdict | None:
    """The plugins' say: any refusal wins; otherwise the first rewrite."""
    results = [r for r in hook.check_message(agent=agent, message=text, context=context) if r]
    for verdict in results:
        if isinstance(verdict, Verdict) and verdict.refuse:
            return verdict
    return next((v for v in results if isinstance(v, Verdict) and v.rewrite is not None), None)


def _store_refused(agent, principal, inp, text: str) -> None:
    """Keep the refused message in the history, outside the model's window, with no turn lock."""
    with db.atomic():
        if inp.conversation_id:
            conversation = store.get_owned_conversation(inp.conversation_id, principal.user_id, agent.id)
        else:
            conversation = store.create_conversation(agent.id, principal.user_id, inp.channel, inp.context)
        Message.create(conversation=conversation.id, agent_id=agent.id, user_id=principal.user_id,
                       role="user", content=text, metadata=inp.metadata, status="refused")


def message_check(hook_caller) -> Callable:
    """A `message_checks` entry running the built-in rules, then the plugins' hooks."""
    def check(agent, principal, inp):
        text = inp.message
        context = MessageContext(agent.id, principal.user_id, principal.kind, inp.channel,
                                 inp.conversation_id, inp.context)
        for decide in (lambda t: builtin_verdict(agent, t),
                       lambda t: plugin_verdict(hook_caller(), agent, t, context)):
            verdict = decide(text)
            if verdict and verdict.refuse:
                # PII never lands in storage, even in a refused message.
                stored = find_pii(text)[0] if _settings(agent).get("pii", "off") != "off" else text
                _store_refused(agent, principal, inp, stored)
                raise GuardrailBlocked(verdict.refuse)
            if verdict and verdict.rewrite is not None:
                text = verdict.rewrite
        return dataclasses.replace(inp, message=text) if text != inp.message else None
    return check


# ---------------------------------------------------------- the answer rules

def filter_answer(agent, content: str | None) -> str | None:
    """`output_blocked_patterns`: the whole answer becomes `output_replacement`, or matches are redacted."""
    rules = _settings(agent)
    patterns = rules.get("output_blocked_patterns") or []
    if not content or not patterns:
        return None
    hits = [p for p in patterns if re.search(p, content)]
    if not hits:
        return None
    if "output_replacement" in rules:
        return rules["output_replacement"]
    for pattern in hits:
        content = re.sub(pattern, DEFAULT_REDACTION, content)
    return content


def answer_check(hook_caller) -> Callable:
    """An `answer_checks` entry: the agent's output rules, then the `check_answer` hooks in turn."""
    def check(agent, principal, content):
        original = content
        content = filter_answer(agent, content) or content
        for replacement in hook_caller().check_answer(agent=agent, content=content,
                                                      context={"user_id": principal.user_id,
                                                               "principal_kind": principal.kind}):
            if isinstance(replacement, str):
                content = replacement
        return content if content != original else None
    return check


def guards_output(agent, hook_caller) -> bool:
    rules = _settings(agent)
    return bool(rules.get("output_blocked_patterns")) or bool(hook_caller().check_answer.get_hookimpls())


class HeldBackCaller:
    """Holds a streamed answer's deltas until the output rules have seen the whole text.

    Without it a stream would show the client text that the stored answer
    later replaces; with it the client gets the checked answer as one delta.
    """

    def __init__(self, inner, check: Callable[[str], str]):
        self.inner, self.check = inner, check

    @property
    def used(self) -> dict:
        return self.inner.used

    def __call__(self, request) -> Iterator[ProviderChunk]:
        held = []
        for chunk in self.inner(request):
            if chunk.type == "delta":
                held.append(chunk.content)
            elif chunk.type == "completion":
                text = chunk.completion.message.content if chunk.completion else "".join(held)
                if text:
                    yield ProviderChunk("delta", content=self.check(text))
                yield chunk
            else:
                yield chunk


def output_wrapper(hook_caller) -> Callable:
    """A `caller_wrappers` entry: hold back streamed deltas for agents whose answers are checked."""
    def wrap(turn, caller):
        if not turn.inp.stream or not guards_output(turn.agent, hook_caller):
            return None
        check = answer_check(hook_caller)
        return HeldBackCaller(caller, lambda text: check(turn.agent, turn.principal, text) or text)
    return wrap
