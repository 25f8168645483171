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

from typing import Callable, Iterator

from agentd.errors import GuardrailBlocked  # noqa: F401  (re-exported)
from agentd.hookcalls import checked_answer
from agentd.hookspecs import hookimpl
from agentd.vocab import MessageContext, ProviderChunk, Verdict  # noqa: F401  (Verdict re-exported)

log = logging.getLogger("agentd.policies.guardrails")

DEFAULT_REDACTION = "[redacted]"


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


def message_verdict(agent, text: str) -> Verdict | None:
    """The built-in rules' verdict; a refused message with personal data is stored masked."""
    verdict = builtin_verdict(agent, text)
    if verdict and verdict.refuse and _settings(agent).get("pii", "off") != "off":
        # PII never lands in storage, even in a refused message.
        return dataclasses.replace(verdict, stored=find_pii(text)[0])
    return verdict


def history_verdict(agent, history) -> Verdict | None:
    """The rules on earlier user messages a client sent itself (`ChatInput.history`).

    They reach the model like the new message, so they pass the same rules: one
    refused refuses the request; personal data in one is masked in place (a
    Verdict speaks only of the new message), so it is stored and sent masked.
    """
    for message in history:
        if message.role != "user" or not message.content:
            continue
        verdict = builtin_verdict(agent, message.content)
        if verdict and verdict.refuse:
            return verdict
        if verdict and verdict.rewrite is not None:
            message.content = verdict.rewrite
    return None


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


def guards_output(agent, hook) -> bool:
    """Whether anything but the built-in plugin looks at this agent's answers."""
    rules = _settings(agent)
    others = [i for i in hook.check_answer.get_hookimpls() if not isinstance(i.plugin, GuardrailsPlugin)]
    return bool(rules.get("output_blocked_patterns")) or bool(others)


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


class GuardrailsPlugin:
    """The built-in guardrails, registered on the plugin manager like any plugin.

    Its message and answer rules run first (`tryfirst`), so personal data is masked
    before a plugin's check sees the text; its model-call wrapper runs last
    (`trylast`), so the deltas it holds back are the final ones.
    """

    def __init__(self, hook_caller: Callable):
        self.hook = hook_caller  # () -> the manager's hook relay

    @hookimpl(tryfirst=True)
    def check_message(self, agent, message, chat_input):
        earlier = history_verdict(agent, chat_input.history)
        if earlier is not None:  # the new message is stored as refused: masked, where PII is watched
            masked = find_pii(message)[0] if _settings(agent).get("pii", "off") != "off" else None
            return Verdict(refuse=earlier.refuse, stored=masked)
        return message_verdict(agent, message)

    @hookimpl(tryfirst=True)
    def check_answer(self, agent, content):
        return filter_answer(agent, content)

    @hookimpl(trylast=True)
    def wrap_model_call(self, run, caller):
        hook = self.hook()
        if not run.inp.stream or not guards_output(run.agent, hook):
            return None
        check = lambda text: checked_answer(hook, run.agent, run.principal, text) or text  # noqa: E731
        return HeldBackCaller(caller, check)
