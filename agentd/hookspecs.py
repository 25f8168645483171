"""Every hook a plugin can implement. Each hook is documented here and in docs/plugins.md."""
import pluggy

hookspec = pluggy.HookspecMarker("agentd")
hookimpl = pluggy.HookimplMarker("agentd")


@hookspec
def register_tools(register):
    """Add tools. Call `register(func)` for a function (name, description and schema come
    from its name, docstring and type hints), with optional keywords `name`, `description`,
    `config_schema` (JSON schema of the per-agent configuration), `timeout`, `cache_ttl`
    and `status_message`; or `register(Toolset(...))` for tools built from configuration."""


@hookspec
def register_providers(register):
    """Add model providers: `register(name, factory)` where `factory(config, http=None)`
    returns an `agentd.providers.Provider` for the agent's `model` block."""


@hookspec
def before_tool_call(tool, arguments, context):
    """Called before a tool runs with its validated `arguments` (a dict) and its ToolContext.
    Return a dict to replace the arguments, None to keep them; raise `agentd.ToolError`
    to refuse the call (the model sees the refusal as the tool's error result)."""


@hookspec
def after_tool_call(tool, arguments, result, context):
    """Called after a tool ran with its `ToolResult` (errors included). Return a ToolResult
    to replace it (redaction, caching), or None to keep it. Good for auditing."""


@hookspec
def run_tools(run, tool_context):
    """Add tools for one run beyond the agent's `tools:` list (the built-in MCP support
    offers its servers' tools this way). `run` is the running turn, `tool_context` the
    run's base `ToolContext` (agent, conversation, user, context). Return a dict
    `{name: (Tool, ToolContext)}` or None; a name the run already has is ignored. To tell
    the model something (a source is down), append a sentence to `run.system_notes`."""


@hookspec
def check_message(agent, message, context, principal, chat_input):
    """Called before a user's message is stored and reaches the model. `message` is its
    text (as the previous check left it), `context` an `agentd.vocab.MessageContext`
    (agent_id, user_id, principal_kind, channel, conversation_id, context), `principal`
    who sends it and `chat_input` the whole validated request (`agentd.vocab.ChatInput`).
    Return None to allow it, or an `agentd.Verdict` to refuse it (422 GUARDRAIL_BLOCKED)
    or rewrite it; raise an `agentd.errors.ApiError` to refuse with another status (rate
    limits and quotas answer 429). Implementations may take any subset of the arguments;
    they run one after another, each seeing the text the previous one left."""


@hookspec
def check_answer(agent, content, context, principal):
    """Called with the final answer text before it is stored and returned. Return None to keep
    it, or a string to replace it (redaction); the next implementation sees the replacement."""


# -- the request and the run ---------------------------------------------------------------
# Built-in policies (rate limits, quotas, guardrails, the response cache, metrics, logs)
# implement these hooks exactly as a third-party plugin would, with `trylast=True`.

@hookspec(firstresult=True)
def authenticate(request):
    """Decide who a Flask `request` to an `/api/…` route comes from. Return an
    `agentd.vocab.Principal`, or None to let the next implementation decide (the
    built-in one reads `Authorization: Bearer …`, or answers `local` in open local
    mode). Raise `agentd.errors.Unauthorized` to refuse the request with 401."""


@hookspec
def wrap_model_call(run, caller):
    """Called once per run with its model caller (`request -> Iterator[ProviderChunk]`).
    Return a caller to use instead (it may call the given one, or answer by itself,
    as the response cache does), or None to keep it. Implementations are applied in
    hook order, each wrapping what the previous one returned."""


@hookspec
def on_event(run, event):
    """Observe every event of every run: `start`, the public stream events (`reasoning`,
    `delta`, `tool_call`, `status`, `tool_result`), the internal ones the turn stores
    (`assistant_message` with the step's `Completion` as `event.payload`, `answer` with
    the `TurnOutcome`), then `done` or `error`, and last `finish` (`{"status": …}`).
    `run` is the running turn (`run.agent`, `run.principal`, `run.conversation_id`,
    `run.inp`). An exception here is logged and never breaks the run."""


@hookspec(firstresult=True)
def needs_approval(tool, arguments, context):
    """Called for each tool call of a model step before it runs, with its `Tool`, its
    validated `arguments` (a dict) and its ToolContext. Return True to hold the call until
    a person approves it, False to let it run without one (even when the agent's YAML says
    `requires_approval: true` for the tool), or None to leave it to the YAML. The first
    non-None answer wins; an exception holds the call (a failing policy never lets a
    risky call through)."""
