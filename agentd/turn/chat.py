"""The chat service: one turn from a user's message to a stored answer.

It loads the agent, the conversation and its history window, stores the user
message, runs the loop, stores what each event carries, and yields the public
events up. Errors a user caused are raised before the first event, so the API
layer can still answer them as plain JSON errors.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Iterator

from agentd.agents import Agent
from agentd.errors import AgentNotFound, ApiError, GuardrailBlocked, InvalidRequest
from agentd.turn.liveturns import live_turns
from agentd.turn import approvals
from agentd.turn.loop import LoopSettings, run_loop
from agentd.turn.pairing import paired
from agentd.turn.prompting import TemplateBudgetError, system_prompt, title_from
from agentd.store.recorder import TurnRecorder
from agentd.hookcalls import checked_answer, each_impl, notify, wrapped_caller
from agentd.store import approvals as approvals_store
from agentd.store import messages as store
from agentd.store.database import unavailable_error
from agentd.turn.runs import new_run_id
from agentd.turn.toolrun import ToolHooks, ToolRunSettings
from agentd.tools import ToolContext
from agentd.vocab import (ChatInput, Event, Image, Message as Msg, MessageContext, ModelRequest, Principal,
                          ToolCall, Verdict)

log = logging.getLogger("agentd.turn.chat")


def _model_block(agent: Agent, inp: ChatInput) -> dict:
    """The model block for this turn, honouring a per-message override the agent allows."""
    model = agent.resolved_model()
    if not (inp.provider or inp.model):
        return model
    allowed = model.get("allow_override") or {}
    provider = inp.provider or model["provider"]
    name = inp.model or model.get("name")
    if inp.provider and provider != model["provider"] and provider not in (allowed.get("providers") or []):
        raise InvalidRequest(f"provider: '{provider}' is not allowed for this agent")
    if inp.model and name != model.get("name") and name not in (allowed.get("models") or []):
        raise InvalidRequest(f"model: '{name}' is not allowed for this agent")
    known = [model] + list(model.get("fallbacks") or [])
    base = next((b for b in known if b["provider"] == provider), {"provider": provider})
    return {**base, "name": name, "fallbacks": []}


def _render_override(template: str, context: dict | None) -> str | None:
    """A caller's system prompt, rendered within its time and size budget, or 400."""
    try:
        return system_prompt(template, context, strict=True)
    except TemplateBudgetError as exc:
        raise InvalidRequest(f"system_prompt: the template {exc}") from None


def _history_messages(rows: list) -> list[Msg]:
    """The model's view of stored rows (store.history_window's, carrying WINDOW_FIELDS)."""
    out = []
    for row in rows:
        calls = [ToolCall.from_dict(c) for c in row.tool_calls] if row.tool_calls else None
        if row.role == "assistant" and not (row.content or calls):
            continue
        images = [Image(i["data"], i["mime_type"]) for i in (row.images or [])]
        out.append(Msg(row.role, row.content, tool_calls=calls, tool_call_id=row.tool_call_id,
                       name=row.name, images=images))
    return paired(out)  # rows an older version (or a dead process) left unpaired


def _history_row(m: Msg) -> dict:
    """A client-sent earlier message (ChatInput.history) as a message row's columns."""
    return {"role": m.role, "content": m.content, "tool_call_id": m.tool_call_id, "name": m.name,
            "tool_calls": [c.to_dict() for c in m.tool_calls] if m.tool_calls else None,
            "images": [{"data": i.data, "mime_type": i.mime_type} for i in m.images] or None}


class ChatService:
    """Runs turns for the app; built once by the app factory."""

    def __init__(self, state):
        self.state = state

    def agent(self, agent_id: str, principal: Principal | None = None) -> Agent:
        agent = self.state.agents.get(agent_id)
        if agent is None:
            raise AgentNotFound(f"Agent {agent_id} does not exist")
        if principal and principal.agents is not None and agent_id not in principal.agents:
            raise AgentNotFound(f"Agent {agent_id} does not exist")
        return agent

    def start_turn(self, agent_id: str, principal: Principal, inp: ChatInput) -> "Turn":
        """Validate, take the turn lock and store the user message; nothing runs yet."""
        agent = self.agent(agent_id, principal)
        limit = agent.setting("max_message_chars", self.state.config.max_message_chars)
        if len(inp.message) > limit:
            raise InvalidRequest(f"message: longer than {limit} characters")
        if inp.system_prompt is not None and not agent.setting("allow_system_prompt_override"):
            raise InvalidRequest("system_prompt: this agent does not allow overriding its system prompt")
        if inp.system_prompt is not None:
            _render_override(inp.system_prompt, inp.context)  # a runaway template: 400, nothing stored
        block = _model_block(agent, inp)
        inp = self._checked(agent, principal, inp)
        conversation, token = self._open_conversation(agent, principal, inp)
        return Turn(self, agent, principal, inp, conversation, token, block)

    def resume_turn(self, approval, principal: Principal, stream: bool, channel: str) -> "Turn":
        """Take the turn lock for the run resuming the fully decided step of `approval`,
        marking the step's approvals used (ApprovalResolved when another run took them)."""
        agent = self.agent(approval.agent_id, principal)
        inp = ChatInput(message="", conversation_id=approval.conversation_id, stream=stream, channel=channel)
        block = _model_block(agent, inp)
        conversation, token, rows = store.open_resume(approval.conversation_id, approval.step_id,
                                                      self.state.config.turn_lease_seconds, new_run_id())
        turn = Turn(self, agent, principal, inp, conversation, token, block)
        turn.resumed = rows
        return turn

    @property
    def hook(self):
        return self.state.registry.manager.hook

    def _checked(self, agent: Agent, principal: Principal, inp: ChatInput) -> ChatInput:
        """Run the `check_message` hooks in turn; each sees the text the previous one left."""
        text = inp.message
        context = MessageContext(agent.id, principal.user_id, principal.kind, inp.channel,
                                 inp.conversation_id, inp.context)
        for check in each_impl(self.hook.check_message):
            verdict = check(agent=agent, message=text, context=context, principal=principal,
                            chat_input=inp)
            if not isinstance(verdict, Verdict):
                continue
            if verdict.refuse:
                store.store_refused_message(agent.id, principal.user_id, inp.conversation_id, inp.channel,
                                            inp.context, verdict.stored or text, inp.metadata)
                raise GuardrailBlocked(verdict.refuse)
            if verdict.rewrite is not None:
                text = verdict.rewrite
        return dataclasses.replace(inp, message=text) if text != inp.message else inp

    def model_caller(self, turn: "Turn"):
        """The turn's ModelCaller: the provider chain, as the `wrap_model_call` hooks leave it."""
        return wrapped_caller(self.hook, turn, self.state.router.caller(turn.block, stream=turn.inp.stream))

    def _open_conversation(self, agent: Agent, principal: Principal, inp: ChatInput):
        message = {"role": "user", "content": inp.message, "metadata": inp.metadata,
                   "images": [{"data": i.data, "mime_type": i.mime_type} for i in inp.images] or None}
        title = title_from(inp.message) if inp.auto_title and not inp.conversation_id else None
        return store.open_turn(agent.id, principal.user_id, message, conversation_id=inp.conversation_id,
                               channel=inp.channel, context=inp.context, title=title,
                               lease=self.state.config.turn_lease_seconds,
                               history=[_history_row(m) for m in inp.history], new_id=inp.new_conversation_id,
                               run_id=new_run_id())  # any process can tell what runs here


class Turn:
    """One running turn; iterate `events()` once."""

    def __init__(self, service: ChatService, agent: Agent, principal: Principal, inp: ChatInput,
                 conversation, token: str, block: dict):
        self.service, self.agent, self.principal, self.inp = service, agent, principal, inp
        self.conversation, self.token, self.block = conversation, token, block
        self.cancelled = False
        self.recorder = TurnRecorder(conversation.id, agent.id, principal.user_id, eager=inp.stream,
                                     turn_id=getattr(conversation, "user_message_id", None))
        self.recorder.provider, self.recorder.model = block["provider"], block.get("name")
        self.caller = service.model_caller(self)
        self.started = time.monotonic()
        self.outcome = None
        # The worker storing events and a shutdown ending the turn from outside
        # take this lock, so exactly one of them writes the turn's final state.
        self._lock = threading.RLock()
        self._closed = False
        self._released = False  # the turn lock went with the answer's transaction
        self.listeners: list = []  # callables told of an error event when the turn is aborted
        self.tool_texts: list[str] = []  # this turn's tool results so far
        self.system_notes: list[str] = []  # run_tools implementations tell the model things here
        self.resumed: list | None = None  # the decided approvals of the step this run resumes
        self._tool_map: dict = {}  # the run's tools, by name (what approvals are asked about)

    @property
    def conversation_id(self) -> str:
        return self.conversation.id

    def cancel(self) -> None:
        self.cancelled = True

    def _request(self) -> ModelRequest:
        window = self.agent.setting("history", {}).get("max_messages", 40)
        rows = store.history_window(self.conversation.id, window)
        context = self.conversation.context or {}
        override = self.inp.system_prompt is not None
        template = self.inp.system_prompt if override else self.agent.setting("system_prompt")
        try:
            system = system_prompt(template, context, mood=self.inp.mood, strict=override,
                                   prefer_web=self.inp.web and any(n.startswith("web_") for n in self.allowed_tools()))
        except TemplateBudgetError as exc:  # the stored context made the caller's template run away
            raise InvalidRequest(f"system_prompt: the template {exc}") from None
        if self.system_notes:
            system = "\n\n".join(p for p in [system, *self.system_notes] if p)
        messages = _history_messages(rows)
        if messages and messages[-1].role == "user" and self.inp.images:
            messages[-1].images = list(self.inp.images)
        return ModelRequest(model=self.block.get("name", ""), messages=messages, system=system,
                            temperature=self.block.get("temperature"), max_tokens=self.block.get("max_tokens"))

    def _tools(self) -> dict:
        base = ToolContext(agent_id=self.agent.id, conversation_id=self.conversation.id,
                           user_id=self.principal.user_id, context=self.conversation.context or {},
                           transcript=self._transcript)
        allowed = self.allowed_tools()
        tools = {name: (bound.tool, ToolContext(**{**base.__dict__, "config": bound.config}))
                 for name, bound in self.agent.tools.items() if name in allowed}
        restricted = self.principal.kind == "widget" and self.agent.widget.get("tools") is not None
        manager = self.service.state.registry.manager
        for extra in (manager.hook.run_tools(run=self, tool_context=base) if manager else []):
            for name, pair in (extra or {}).items():
                if not restricted or name in self.agent.widget["tools"]:
                    tools.setdefault(name, pair)
        return tools

    def allowed_tools(self) -> set[str]:
        """The agent's tools this caller's turn may use: a widget visitor gets `widget.tools`."""
        names = set(self.agent.tools)
        if self.principal.kind == "widget" and self.agent.widget.get("tools") is not None:
            names &= set(self.agent.widget["tools"])
        return names

    def _transcript(self) -> list[str]:
        """What the caller and the tools put into this conversation (for `urls: seen`).

        Called from a tool's thread: the connection goes back at once. This turn's
        tool results are added from memory (a non-streamed turn stores them at the end).
        Error results are left out: they quote the model's own arguments back.
        """
        texts = store.conversation_texts(self.conversation.id, ("user", "tool"), own_connection=True)
        return texts + list(self.tool_texts)

    def _settings(self, tools: dict) -> LoopSettings:
        tool_settings = ToolRunSettings(
            timeout=self.agent.setting("tool_timeout", self.service.state.config.tool_timeout),
            max_output_chars=self.agent.setting("max_tool_output_chars", 20000),
            max_parallel=self.agent.setting("max_parallel_tool_calls", 8))
        return LoopSettings(max_tool_rounds=self.agent.setting("max_tool_rounds", 8),
                            repeat_limit=self.agent.setting("repeat_limit", 3), tools=tool_settings,
                            hold=lambda call: approvals.needs_approval(self.service.hook, self.agent, tools, call))

    def start_event(self) -> Event:
        # A resumed run stores its decided calls' results first: its answer row comes after them.
        row_id = self.recorder.open_row() if self.inp.stream and not self.resumed else None
        return Event("start", {"id": row_id, "conversation_id": self.conversation.id,
                               "user_message_id": self.conversation.user_message_id,
                               "provider": self.block["provider"], "model": self.block.get("name")})

    def events(self) -> Iterator[Event]:
        """The turn's events, ending with `done` or `error`; the lock is released at the end."""
        status = "partial"
        loop = None
        live_turns.add(self)  # from here on its lease is renewed until _finish
        try:
            start = self.start_event()
            self._observe(start)
            yield start
            # first: a tool source may add notes to the system prompt
            self._tool_map = tools = self._tools()
            settings, hooks = self._settings(tools), self.service.state.tool_hooks or ToolHooks()
            if self.resumed:
                loop = approvals.decided_results(self.resumed, tools, settings.tools, hooks)
                yield from self._resumed_results(loop)
                if self.cancelled or self._closed:
                    return
            loop = run_loop(self._request(), self.caller, tools, settings, hooks)
            for event in loop:
                if self.cancelled:
                    break
                done = self._record(event)
                if self._closed:
                    return  # aborted from outside; its error event went to the listeners
                if done is not None:
                    status = "complete"
                    yield from done  # `done`, after `approval_required` ones when the run paused
                    return
                if event.type in ("delta", "reasoning", "tool_call", "status", "tool_result"):
                    yield event
        except ApiError as exc:
            status = "error"
            yield self._error_event(exc)
        except Exception as exc:
            status = "error"
            unavailable = unavailable_error(exc)  # the database went away mid-turn: 503, not a bug
            if unavailable is None:
                log.exception("turn failed")
            yield self._error_event(unavailable or ApiError("the turn failed unexpectedly"))
        finally:
            if loop is not None:
                loop.close()  # closes the provider's request when the client went away
            self._finish_quietly(status)

    def _resumed_results(self, results) -> Iterator[Event]:
        """Record and pass on the decided calls' results; they are stored before the model is asked."""
        self.recorder.open_calls = {row.tool_call_id: row.tool_name for row in self.resumed}
        try:
            for event in results:
                if self.cancelled:
                    return
                self._record(event)
                if self._closed:
                    return
                if event.type in ("status", "tool_result"):
                    yield event
            with self._lock:
                if not self._closed:
                    self.recorder.flush()  # a buffered turn: the model's history must hold them
        finally:
            results.close()

    def abort(self, exc: ApiError) -> Event | None:
        """End the turn from another thread (shutdown): store what it has, tell the listeners.

        Returns the error event, or None when the turn had already ended or answered.
        """
        self.cancelled = True
        with self._lock:
            if self._closed or self.outcome is not None:
                return None
            self._finish("partial")
        event = self._error_event(exc)
        for listener in list(self.listeners):
            listener(event)
        return event

    def _record(self, event: Event) -> Event | None:
        """Store what an event carries; returns the `done` event once the answer is stored."""
        with self._lock:
            if self._closed:
                return None
            return self._store(event)

    def _store(self, event: Event) -> Event | None:
        self.recorder.provider = self.caller.used.get("provider", self.recorder.provider)
        self.recorder.model = self.caller.used.get("name", self.recorder.model)
        self._observe(event)
        if event.type in ("delta", "reasoning"):
            self.recorder.open_row()
            self.recorder.add_text(event.type, event.data["content"])
        elif event.type == "assistant_message":
            self.recorder.tool_step(event.payload)
        elif event.type == "tool_result":
            self.recorder.tool_result(event.payload)
            if not event.payload.is_error:  # errors quote the model's own arguments
                self.tool_texts.append(event.payload.content)
        elif event.type == "answer":
            return [self._done(event.payload)]
        elif event.type == "approval":
            return self._pause(event.payload)
        return None

    def _pause(self, pause) -> list[Event]:
        """Store the step as awaiting approval with one pending approval per held call, and
        release the lock, in one transaction; the run ends with `approval_required` events
        and `done`. Nothing waits: a decision starts a new run (`ChatService.resume_turn`)."""
        self.outcome = pause.outcome
        for call in pause.held:
            self.recorder.open_calls.pop(call.id, None)  # answered when the step resumes
        rows: list = []

        def also(step_id: int) -> None:
            rows.extend(approvals_store.create(approvals.pending_rows(self, self._tool_map, pause.held, step_id),
                                               approvals.ttl_seconds(self.agent)))
            self._release()
        step_id = self.recorder.pause(also)
        self._released = True
        message = store.message_by_id(step_id)
        message["usage"] = pause.outcome.usage.to_dict()
        events = [approvals.required_event(row) for row in rows]
        for event in events:
            self._observe(event)
        done = Event("done", {"message": message, "usage": pause.outcome.usage.to_dict(),
                              "approvals": [event.data["approval"] for event in events]})
        self._observe(done)
        return [*events, done]

    def _done(self, outcome) -> Event:
        self.outcome = outcome
        content = checked_answer(self.service.hook, self.agent, self.principal,
                                 outcome.completion.message.content)
        self.recorder.answer(outcome.completion, content, also=self._release)
        self._released = True  # only once that transaction committed
        # The row as stored, built from what was written rather than read back.
        message = store.written_message_dict(self.recorder.last_row)
        message["usage"] = outcome.usage.to_dict()
        done = Event("done", {"message": message, "usage": outcome.usage.to_dict()})
        self._observe(done)
        return done

    def _observe(self, event: Event) -> None:
        """Tell the `on_event` hooks (metrics, logs, quotas, plugins); a failure never breaks the turn."""
        notify(self.service.hook, self, event)

    def _error_event(self, exc: ApiError) -> Event:
        event = Event("error", {"error": {"code": exc.code, "message": exc.message}}, payload=exc)
        self._observe(event)
        return event

    def _release(self) -> None:
        """Release the turn lock (inside the answer's transaction)."""
        store.release_turn(self.conversation.id, self.token)

    def _finish(self, status: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if status != "complete":
                    self.recorder.fail("partial" if status == "partial" else "error")
            finally:
                live_turns.discard(self)
                try:
                    if not self._released:
                        store.release_turn(self.conversation.id, self.token)
                finally:
                    self._observe(Event("finish", {"status": status}))

    def _finish_quietly(self, status: str) -> None:
        """_finish, when the database is gone: the client already has its `error` event, and
        the conversation's lock frees itself when its lease runs out."""
        try:
            self._finish(status)
        except Exception as exc:
            if unavailable_error(exc) is None:
                raise
            log.warning("turn of %s ended without being stored: the database is unavailable",
                        self.conversation.id)
