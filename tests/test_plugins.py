"""Plugin discovery from the three places docs/plugins.md names, and a demo-model tool loop."""
import json
import textwrap
from pathlib import Path

from agentd.plugins import load_plugins
from agentd.tools import schema_from_function
from tests.support import ServerProcess, free_port, server_env

REPO = Path(__file__).resolve().parent.parent

WEATHER_PLUGIN = '''
from agentd import hookimpl

def get_weather(location: str, unit: str = "celsius") -> dict:
    """Current weather for a city."""
    return {"location": location, "temp": 18, "unit": unit}

@hookimpl
def register_tools(register):
    register(get_weather)
'''


def test_builtin_plugins_come_from_the_repo_folder():
    registry = load_plugins(entry_points=False)
    for name in ("calculator", "current_time", "web_search", "web_fetch", "db_lookup"):
        assert name in registry.tools
    assert {"openai", "groq", "openrouter", "ollama", "demo"} <= set(registry.providers)


def test_schema_comes_from_name_docstring_and_hints(tmp_path):
    (tmp_path / "weather.py").write_text(WEATHER_PLUGIN)
    tool = load_plugins([str(tmp_path)], entry_points=False).tools["get_weather"]
    assert tool.description == "Current weather for a city."
    assert tool.parameters == {"type": "object", "additionalProperties": False, "required": ["location"],
                               "properties": {"location": {"type": "string"},
                                              "unit": {"type": "string", "default": "celsius"}}}


def test_schema_of_richer_hints():
    from typing import Literal

    def f(items: list[int], mode: Literal["a", "b"], limit: int | None = None, flags: dict = None):
        """Doc."""
    schema, context = schema_from_function(f)
    assert schema["properties"]["items"] == {"type": "array", "items": {"type": "integer"}}
    assert schema["properties"]["mode"] == {"enum": ["a", "b"]}
    assert schema["properties"]["limit"]["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    assert schema["required"] == ["items", "mode"] and context is None


def test_plugins_dir_and_entry_point_tools_reach_an_agent(tmp_path):
    """A plugin file in AGENTD_PLUGINS_DIR and an installed entry point add tools, no other change."""
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "weather.py").write_text(WEATHER_PLUGIN)
    site = tmp_path / "site"
    (site / "ep_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "ep_plugin-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 1.0\n")
    (site / "ep_plugin-1.0.dist-info" / "entry_points.txt").write_text("[agentd]\nshout = ep_plugin\n")
    (site / "ep_plugin.py").write_text(textwrap.dedent('''
        from agentd import hookimpl
        def shout(text: str) -> str:
            """Upper-case a text."""
            return text.upper()
        @hookimpl
        def register_tools(register):
            register(shout)
    '''))
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "weather.yaml").write_text("name: W\nmodel: {provider: demo, name: demo}\ntools: [get_weather, shout]\n")
    port = free_port()
    env = server_env(f"sqlite:///{tmp_path / 'db.sqlite'}", agents, port, plugins_dir=plugin_dir,
                     entry_points="true")
    server = ServerProcess(["-m", "agentd", "serve"], {**env, "PYTHONPATH": str(site)}, port,
                           tmp_path / "server.log")
    try:
        assert server.client.get("/healthz").json()["agents"] == 1
        chat = lambda message: server.client.post("/api/agents/weather/chat", json={"message": message}).json()
        answer = chat("use get_weather Tokyo")
        assert "Tokyo" in answer["content"] and "18" in answer["content"]
        assert "HELLO" in chat("use shout hello")["content"]
        history = server.history("weather", answer["conversation_id"])
        assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
        assert json.loads(history[2]["content"])["location"] == "Tokyo"
    finally:
        server.stop()


def test_demo_agent_parallel_tools(agentd_server):
    server = agentd_server({"demo": """
        name: Demo
        model: {provider: demo, name: demo}
        tools: [calculator, current_time]
    """})
    body = server.chat("demo", "use all tools").json()
    history = server.history("demo", conversation_id=body["conversation_id"]).json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool", "assistant"]
    assert len(history[1]["tool_calls"]) == 2
    calc = server.chat("demo", "use calculator 6*7").json()
    assert "42" in calc["content"]
