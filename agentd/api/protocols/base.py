"""One abstract adapter, a small subclass per protocol (after pydantic-ai's `ui/` package).

An adapter turns a protocol's request body into a `ChatInput` (run input in) and
the turn's own events into the protocol's frames or final body (the agent's
event stream out). Everything between is the one chat path every route uses:
`ChatService.start_turn` (keys, ownership, limits, guardrails, quotas, the
cache) and `Turn.events()`. `Idempotency-Key` is honoured the same way as on
`POST …/chat`: the stored record is the native final message, and a replay is
projected by the same adapter from a `start` + `done` pair built from it, so a
replayed answer has the protocol's own shape.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from typing import Iterable, Iterator

from flask import Response, current_app, g, request, stream_with_context

from agentd.api.streaming import SSE_HEADERS, as_event, connection_releaser, shutting_down_error, stop_on_leave
from agentd.errors import ApiError, ConversationNotFound, Forbidden
from agentd.policies import idempotency
from agentd.store import messages as store
from agentd.vocab import ChatInput, Event


def state():
    return current_app.extensions["agentd"]


def refuse_widget_sessions() -> None:
    """before_request of every protocol route: a widget session may only chat through the widget.

    Its token names one agent for one site's visitors, with the widget's own
    limits on tools and events; no other protocol may carry it.
    """
    principal = getattr(g, "principal", None)
    if principal is not None and principal.kind == "widget":
        raise Forbidden("A widget session can only chat")


def sse(data, event: str | None = None) -> str:
    """One SSE frame holding `data` (a dict as compact JSON, or a literal string)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (f"event: {event}\n" if event else "") + f"data: {text}\n\n"


class Adapter:
    """A protocol projection of one turn. Subclasses set `name`/`channel` and the projections."""

    name = "native"
    channel = "api"
    headers: dict = {}

    def __init__(self, agent_id: str, body: dict):
        self.agent_id, self.body = agent_id, body

    # -- run input in ---------------------------------------------------------------
    def chat_input(self) -> ChatInput:
        raise NotImplementedError

    # -- the agent's events out -----------------------------------------------------
    def frames(self, events: Iterable[Event]) -> Iterator[str]:
        """SSE text for the turn's events (None from the pump means: send a keep-alive)."""
        raise NotImplementedError

    def answer(self, final: dict) -> dict:
        """The non-streamed body for the final message (`{…message, "usage"}`)."""
        raise NotImplementedError

    def response_headers(self, conversation_id: str) -> dict:
        return dict(self.headers)

    def decisions(self):
        """(conversation id, [(approval id, approve?, reason)]) when the body answers held tool
        calls (agentd.api.protocols.decisions), or None for a new message."""
        return None


CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


def client_thread(thread_id, agent_id: str) -> tuple[str | None, str | None]:
    """A client-named thread as (conversation to continue, id for a new conversation).

    AG-UI and AI SDK clients name their threads themselves. A name that is one
    of the caller's conversations continues it (another user's is 403); a new
    one becomes the new conversation's id when it is as hard to guess as ours
    (16 to 64 of `A-Za-z0-9_-`: uuids, nanoids), else the server picks the id.
    """
    if not isinstance(thread_id, str) or not thread_id:
        return None, None
    try:
        store.get_owned_conversation(thread_id, g.principal.user_id, agent_id)
    except ConversationNotFound:
        return None, thread_id if CLIENT_ID.fullmatch(thread_id) else None
    return thread_id, None


# -- the one chat path -----------------------------------------------------------------

def serve(adapter: Adapter) -> Response:
    """Run (or replay) one turn for `adapter`, answering JSON or SSE."""
    state().chat.agent(adapter.agent_id, g.principal)  # 404 first, as on POST …/chat
    answered = adapter.decisions()
    if answered is not None:
        return _resume(adapter, *answered)
    inp = adapter.chat_input()
    key = _idempotency_key()
    record = _claim(adapter, key) if key else None
    if record is not None:
        final = record.response
        return _respond(adapter, inp, final["conversation_id"], _replayed(final),
                        {"Idempotent-Replayed": "true"})
    if key and inp.stream:
        idempotency.expect_run(g.principal.user_id, key)
    try:
        turn = state().chat.start_turn(adapter.agent_id, g.principal, inp)
    except BaseException:
        if key:
            idempotency.run_bound()
            idempotency.abandon(g.principal.user_id, key)
        raise
    events = pump_events(turn) if inp.stream else drive(turn)
    if key and not idempotency.run_bound():
        events = _recorded(events, g.principal.user_id, key)
    return _respond(adapter, inp, turn.conversation_id, events, {})


def _resume(adapter: Adapter, conversation_id: str, decisions) -> Response:
    """Decide held tool calls; the resumed run (or the step still waiting) in the protocol's frames."""
    from agentd.api.protocols.decisions import resumed_events
    turn, waiting = resumed_events(adapter, conversation_id, decisions)
    events = pump_events(turn) if turn is not None else iter(waiting)
    return _respond(adapter, ChatInput(message="", stream=True), conversation_id, events, {})


# The two places that know how a turn is driven: as a run (agentd.turn.runs), like
# every turn; everything else only reads events.

def drive(turn) -> Iterator[Event]:
    """A non-streamed turn's events, its run driven in this request."""
    run = state().runs.begin(turn)
    yield from run.drive()
    if run.abort_error is not None:  # cancelled or shut down from outside: say why
        exc = run.abort_error
        yield Event("error", {"error": {"code": exc.code, "message": exc.message}}, payload=exc)


def pump_events(turn) -> Iterator[Event | None]:
    """A streamed turn's events from its run's worker, None while it is silent (keep-alive time)."""
    release = connection_releaser(state().db)
    release()  # the request's own connection is not needed while the stream runs
    run = state().runs.begin(turn)
    idempotency.bind_run(run)  # a claimed Idempotency-Key follows the run, not this connection
    run.start(release=release)
    return followed(run.follow(), on_leave=run.leave if stop_on_leave(turn.agent) else None)


def followed(items, on_leave=None) -> Iterator[Event | None]:
    """A run's numbered events (from `Run.follow` or the bus) as Events; None while silent.

    The client going away leaves the run going, unless `on_leave` says otherwise.
    """
    finished = False
    try:
        for item in items:
            yield None if item is None else as_event(item[1])
        finished = True
    finally:
        items.close()
        if not finished and on_leave is not None:
            on_leave()


def _respond(adapter, inp, conversation_id, events, extra) -> Response:
    headers = {**adapter.response_headers(conversation_id), **extra}
    if not inp.stream:
        response = current_app.json.response(adapter.answer(final_of(events)))
        response.headers.update(headers)
        return response
    return Response(stream_with_context(adapter.frames(events)), mimetype="text/event-stream",
                    headers={**SSE_HEADERS, **headers})


def final_of(events: Iterable[Event]) -> dict:
    """Drive a non-streamed turn: the final message with its usage, or the turn's error raised."""
    try:
        for event in events:
            if event is None:
                continue
            if event.type == "done":
                return {**event.data["message"], "usage": event.data["usage"]}
            if event.type == "error":
                raise error_of(event)
    finally:
        close = getattr(events, "close", None)
        if close:
            close()  # runs the turn's own ending (lock, live-turn registry) now, not at GC
    raise shutting_down_error()  # only a turn ended from outside stops without done or error


def error_of(event: Event) -> ApiError:
    """The ApiError an `error` event carries."""
    if isinstance(event.payload, ApiError):
        return event.payload
    return ApiError(event.data["error"]["message"], code=event.data["error"]["code"])


# -- Idempotency-Key -----------------------------------------------------------------------

def _idempotency_key() -> str | None:
    raw = request.headers.get(idempotency.HEADER)
    return None if raw is None else idempotency.valid_key(raw)


def _claim(adapter: Adapter, key: str):
    idempotency.purge_expired()
    stale_after = dt.timedelta(seconds=state().config.turn_lease_seconds)
    # The protocol is part of what was asked: the same key on two protocols is a reused key.
    digest = idempotency.body_hash(adapter.agent_id, {"protocol": adapter.name, "body": adapter.body})
    return idempotency.claim(g.principal.user_id, key, adapter.agent_id, digest, stale_after)


def _replayed(final: dict) -> list[Event]:
    start = Event("start", {"id": final.get("id"), "conversation_id": final.get("conversation_id"),
                            "provider": final.get("provider"), "model": final.get("model")})
    return [start, Event("done", {"message": dict(final), "usage": final.get("usage")})]


def _recorded(events: Iterable, user_id: str, key: str) -> Iterator:
    """Pass the events through; record the final message, or drop the claim if none came."""
    final = None
    try:
        for event in events:
            if event is not None and event.type == "done":
                final = {**event.data["message"], "usage": event.data["usage"]}
            yield event
    finally:
        close = getattr(events, "close", None)
        if close:
            close()
        with state().db.connection_context():
            if final is not None:
                idempotency.finish(user_id, key, final, 200)
            else:
                idempotency.abandon(user_id, key)


def now() -> int:
    return int(dt.datetime.now(dt.timezone.utc).timestamp())
