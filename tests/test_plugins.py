"""Plugin discovery from the three places DESIGN.md names, and a demo-model tool loop."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from agentd.plugins import load_plugins
from agentd.tools import schema_from_function

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


def _serve(env, port):
    return subprocess.Popen([sys.executable, "-m", "agentd", "serve", "--port", str(port)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url, proc):
    import time
    import httpx
    for _ in range(100):
        try:
            return httpx.get(url + "/healthz", timeout=1)
        except httpx.HTTPError:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode())
            time.sleep(0.1)
    raise AssertionError("server did not start")


def test_plugins_dir_and_entry_point_tools_reach_an_agent(tmp_path):
    """A plugin file in AGENTD_PLUGINS_DIR and an installed entry point add tools, no other change."""
    import httpx
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
    port = _free_port()
    env = {**os.environ, "AGENTD_PLUGINS_DIR": str(plugin_dir), "AGENTD_AGENTS_DIR": str(agents),
           "AGENTD_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "PYTHONPATH": str(site)}
    proc = _serve(env, port)
    try:
        url = f"http://127.0.0.1:{port}"
        assert _wait(url, proc).json()["agents"] == 1
        answer = httpx.post(f"{url}/api/agents/weather/chat", json={"message": "use get_weather Tokyo"},
                            timeout=10).json()
        assert "Tokyo" in answer["content"] and "18" in answer["content"]
        shout = httpx.post(f"{url}/api/agents/weather/chat", json={"message": "use shout hello"}, timeout=10).json()
        assert "HELLO" in shout["content"]
        history = httpx.get(f"{url}/api/agents/weather/chat",
                            params={"conversation_id": answer["conversation_id"]}).json()["messages"]
        assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
        assert json.loads(history[2]["content"])["location"] == "Tokyo"
    finally:
        proc.terminate()
        proc.wait(10)


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
