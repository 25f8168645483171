"""The extension seams: a plugin dropped in a folder signs users in, watches runs, wraps the model.

Also the meta-test: every hook in agentd/hookspecs.py is documented in
docs/plugins.md and implemented by some plugin in the tests.
"""
import inspect
import re
import textwrap
from pathlib import Path

import pluggy

from agentd import hookspecs
from tests.conftest import Reply, openai_agent, sse_events

REPO = Path(__file__).resolve().parent.parent

HEADER_AUTH_AND_COUNTER = '''
from collections import Counter
from agentd import hookimpl
from agentd.vocab import Principal

seen = Counter()
runs = set()

@hookimpl
def authenticate(request):
    user = request.headers.get("X-Test-User")
    return Principal(user_id=user, kind="key") if user else None

@hookimpl
def on_event(run, event):
    seen[event.type] += 1
    runs.add((run.principal.user_id, run.conversation_id))
'''

SHOUTING_WRAPPER = '''
from agentd import hookimpl
from agentd.vocab import ProviderChunk

@hookimpl
def wrap_model_call(run, caller):
    def shouting(request):
        for chunk in caller(request):
            if chunk.type == "delta":
                chunk = ProviderChunk("delta", chunk.content.upper())
            elif chunk.type == "completion" and chunk.completion.message.content:
                chunk.completion.message.content = chunk.completion.message.content.upper()
            yield chunk
    shouting.used = caller.used
    return shouting
'''


def plugin_server(agentd_server, fake_openai, tmp_path, source: str, name: str, **agent):
    folder = tmp_path / "plugins"
    folder.mkdir()
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    server = agentd_server({"bot": openai_agent(fake_openai, **agent)}, plugins_dir=str(folder))
    return server, server.state.registry.manager.get_plugin(str(path))


def test_a_folder_plugin_signs_users_in_and_sees_every_event(agentd_server, fake_openai, tmp_path):
    server, plugin = plugin_server(agentd_server, fake_openai, tmp_path, HEADER_AUTH_AND_COUNTER, "proxy",
                                   tools=["calculator"])
    from agentd.auth import create_key
    with server.state.db.connection_context():
        create_key("someone")  # keys exist: without the header, requests need one
    assert server.chat("bot", "hi").status_code == 401
    fake_openai.script(Reply(tool_calls=[("calculator", {"expression": "6*7"})]), Reply(content="42"))
    answer = server.client.post("/api/agents/bot/chat", json={"message": "hi", "stream": True},
                                headers={"X-Test-User": "carol"})
    assert answer.status_code == 200
    conversation = sse_events(answer)[0]["conversation_id"]
    assert plugin.runs == {("carol", conversation)}
    assert plugin.seen["start"] == 1 and plugin.seen["done"] == 1 and plugin.seen["finish"] == 1
    assert plugin.seen["tool_call"] == 1 and plugin.seen["tool_result"] == 1
    assert plugin.seen["delta"] >= 1
    listed = server.client.get("/api/agents/bot/conversations", headers={"X-Test-User": "carol"})
    assert [c["id"] for c in listed.json()["conversations"]] == [conversation]


def test_a_folder_plugin_wraps_the_model_call(agentd_server, fake_openai, tmp_path):
    server, _ = plugin_server(agentd_server, fake_openai, tmp_path, SHOUTING_WRAPPER, "shout")
    fake_openai.script(Reply(content="quiet words"))
    answer = server.chat("bot", "hi")
    assert answer.json()["content"] == "QUIET WORDS"
    stored = server.history("bot").json()["messages"][-1]
    assert stored["content"] == "QUIET WORDS"


ECHO_PROVIDER = '''
from agentd import hookimpl
from agentd.providers import Provider, ProviderChunk
from agentd.vocab import Completion, Message, Usage

class EchoProvider(Provider):
    """Answers with the user's last message: a provider added by a plugin."""

    def complete(self, request):
        text = "echo: " + request.messages[-1].content
        return Completion(Message("assistant", text), Usage(3, 2), model="echo-1")

    def stream(self, request):
        completion = self.complete(request)
        yield ProviderChunk("delta", completion.message.content)
        yield ProviderChunk("completion", completion=completion)

@hookimpl
def register_providers(register):
    register("echo", EchoProvider)
'''


def test_a_folder_plugin_adds_a_provider(agentd_server, tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "echo.py").write_text(ECHO_PROVIDER)
    server = agentd_server({"bot": "name: Echo\nmodel: {provider: echo, name: echo-1}\n"},
                           plugins_dir=str(folder))
    answer = server.chat("bot", "ping").json()
    assert (answer["content"], answer["provider"], answer["usage"]["total_tokens"]) == ("echo: ping", "echo", 5)
    streamed = sse_events(server.client.post("/api/agents/bot/chat", json={"message": "pong", "stream": True}))
    assert streamed[-1]["message"]["content"] == "echo: pong"


def hookspec_names() -> list[str]:
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if isinstance(getattr(fn, "agentd_spec", None), dict)]


def test_every_hook_is_documented_and_exercised():
    names = hookspec_names()
    assert {"authenticate", "on_event", "wrap_model_call", "check_message", "check_answer"} <= set(names)
    docs = (REPO / "docs" / "plugins.md").read_text()
    tests = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_*.py") if p.name != "test_hooks.py")
    tests += HEADER_AUTH_AND_COUNTER + SHOUTING_WRAPPER + ECHO_PROVIDER
    for name in names:
        assert f"`{name}(" in docs, f"hook {name} is not documented in docs/plugins.md"
        assert re.search(rf"def {name}\(", tests), f"no test implements the hook {name}"


def test_the_marker_is_agentds():
    assert isinstance(hookspecs.hookspec, pluggy.HookspecMarker)
