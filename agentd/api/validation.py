"""Parsing request bodies and query strings into validated values (400 names the field)."""
from __future__ import annotations

import base64
import binascii
import json

from flask import Request

from agentd.vocab import ChatInput
from agentd.errors import InvalidRequest
from agentd.vocab import Image

IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MOODS = ("serious", "friendly", "normal")
MAX_INT = 2**63 - 1  # the largest integer both databases store; larger ones would be a 500


def _bounded_int(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_INT:
        raise InvalidRequest(f"body: integer {text[:24]}… is out of range")
    return value


def _not_a_number(name: str):
    # Python's json accepts NaN and ±Infinity; JSON does not, and neither database stores them.
    raise InvalidRequest(f"body: {name} is not a JSON number")


def json_body(request: Request) -> dict:
    """The request's JSON object, or 400."""
    try:
        body = json.loads(request.get_data(cache=True) or b"null", parse_int=_bounded_int,
                          parse_constant=_not_a_number)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("body: malformed JSON") from None
    except RecursionError:  # `[[[[…` a hundred thousand deep: the parser's stack, not ours
        raise InvalidRequest("body: JSON nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object")
    return body


def _typed(body: dict, name: str, kind, default=None, nullable=True):
    value = body.get(name, default)
    if value is None and nullable:
        return default
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        names = {str: "a string", bool: "true or false", dict: "an object", list: "an array"}
        raise InvalidRequest(f"{name}: must be {names.get(kind, kind.__name__)}")
    return value


def _image(item, index: int) -> Image:
    where = f"images[{index}]"
    if not isinstance(item, dict) or not isinstance(item.get("data"), str):
        raise InvalidRequest(f"{where}: must be an object with base64 'data' and 'mime_type'")
    if not isinstance(item.get("mime_type"), str) or item["mime_type"] not in IMAGE_TYPES:
        raise InvalidRequest(f"{where}.mime_type: must be one of {', '.join(sorted(IMAGE_TYPES))}")
    data = item["data"].strip()
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{where}.data: not valid base64") from None
    if not raw:
        raise InvalidRequest(f"{where}.data: empty image")
    if len(raw) > MAX_IMAGE_BYTES:
        raise InvalidRequest(f"{where}.data: image larger than {MAX_IMAGE_BYTES} bytes")
    return Image(data=data, mime_type=item["mime_type"])


def chat_input(body: dict, channel: str = "api") -> ChatInput:
    """docs/api.md's POST /chat body as a ChatInput."""
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        raise InvalidRequest("message: required, a non-empty string")
    mood = _typed(body, "mood", str)
    if mood is not None and mood not in MOODS:
        raise InvalidRequest(f"mood: must be one of {', '.join(MOODS)}")
    images = _typed(body, "images", list, default=[])
    return ChatInput(
        message=message, conversation_id=_typed(body, "conversation_id", str),
        stream=_typed(body, "stream", bool, default=False), context=_typed(body, "context", dict),
        system_prompt=_typed(body, "system_prompt", str), provider=_typed(body, "provider", str),
        model=_typed(body, "model", str), mood=mood, web=_typed(body, "web", bool, default=False),
        images=[_image(item, i) for i, item in enumerate(images)],
        metadata=_typed(body, "metadata", dict), auto_title=_typed(body, "auto_title", bool, default=True),
        channel=channel)


def int_arg(args, name: str, default: int | None, low: int, high: int | None = None) -> int | None:
    """An integer query parameter within [low, high], or 400 naming it."""
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name}: must be an integer") from None
    if value < low or value > (MAX_INT if high is None else high):
        bound = f"between {low} and {MAX_INT if high is None else high}"
        raise InvalidRequest(f"{name}: must be {bound}")
    return value
