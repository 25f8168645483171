"""The example plugins: plugins/example_tools.py, and the installable package under
examples/agentd-hello-plugin, pip-installed offline and used with no change to agentd."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agentd import ToolContext, ToolError
from agentd.plugins import load_plugins
from tests.conftest import Reply, openai_agent

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "agentd-hello-plugin"


# -- plugins/example_tools.py --------------------------------------------------------------------
@pytest.fixture(scope="module")
def tools():
    return load_plugins(entry_points=False).tools


@pytest.mark.parametrize("expression,result", [
    ("(2 + 3) * 4", 20), ("7 / 2", 3.5), ("7 // 2", 3), ("2 ** 10", 1024), ("2 ^ 3", 8),
    ("-3 + sqrt(16)", 1.0), ("max(1, 5, 3)", 5), ("round(pi, 2)", 3.14), ("10 % 4", 2)])
def test_calculator_does_arithmetic(tools, expression, result):
    assert tools["calculator"].call({"expression": expression}, ToolContext())["result"] == result


@pytest.mark.parametrize("expression", [
    "__import__('os').system('id')", "().__class__.__bases__", "open('/etc/passwd')", "x",
    "10 ** 10 ** 10", "((10 ** 999) ** 999) ** 999", "1 / 0", "lambda: 1", "[1, 2]", "'a' * 3", "1 +"])
def test_calculator_refuses_everything_else(tools, expression):
    with pytest.raises(ToolError):
        tools["calculator"].call({"expression": expression}, ToolContext())


def test_current_time(tools):
    now = tools["current_time"].call({"timezone": "Asia/Tokyo"}, ToolContext())
    assert now["utc_offset"] == "+0900" and now["iso"].endswith("+09:00")
    assert tools["current_time"].call({}, ToolContext())["timezone"] == "UTC"
    with pytest.raises(ToolError, match="unknown time zone"):
        tools["current_time"].call({"timezone": "Mars/Olympus"}, ToolContext())


def test_example_tool_schemas_come_from_the_functions(tools):
    assert tools["calculator"].parameters["required"] == ["expression"]
    assert tools["current_time"].parameters["properties"]["timezone"] == {"type": "string", "default": "UTC"}


# -- the installable example package -------------------------------------------------------------
def _can_build_wheels() -> bool:
    try:
        import setuptools
        if tuple(int(p) for p in setuptools.__version__.split(".")[:2]) >= (70, 1):
            return True  # bdist_wheel is part of setuptools from 70.1
        import wheel  # noqa: F401
        return True
    except ImportError:
        return False


@pytest.fixture(scope="module")
def hello_site(tmp_path_factory):
    """pip-install the example package, offline, into its own site folder."""
    if not _can_build_wheels():
        pytest.fail("building the example plugin offline needs setuptools>=70.1 or the wheel package")
    work = tmp_path_factory.mktemp("hello")
    source = shutil.copytree(EXAMPLE, work / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = work / "site"
    # --no-build-isolation: use the venv's setuptools instead of downloading one;
    # --target: the package is importable only by tests that ask for it, so the
    # shared venv's other servers do not suddenly grow a `hello` tool.
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-index", "--quiet", "--target", str(site), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return site


@pytest.fixture
def hello_installed(hello_site, monkeypatch):
    monkeypatch.syspath_prepend(str(hello_site))
    yield hello_site
    sys.modules.pop("agentd_hello", None)


def test_the_installed_package_declares_the_entry_point(hello_site):
    entry_points = next(hello_site.glob("agentd_hello_plugin-*.dist-info")) / "entry_points.txt"
    assert entry_points.read_text().split() == ["[agentd]", "hello", "=", "agentd_hello"]


def test_the_installed_plugin_is_found_through_its_entry_point(hello_installed):
    registry = load_plugins(entry_points=True)
    assert "hello" in registry.tools
    tool = registry.tools["hello"]
    assert tool.parameters["required"] == ["name"]
    assert tool.call({"name": "Ada"}, ToolContext(config={"greeting": "Bonjour"})) == "Bonjour, Ada."


def test_the_installed_tool_works_through_the_chat_api(hello_installed, agentd_server, fake_openai):
    agent = openai_agent(fake_openai, tools=[{"hello": {"greeting": "Bonjour"}}, "calculator"])
    server = agentd_server({"greeter": agent})
    assert "greeter" in server.state.agents, server.state.problems
    fake_openai.script(Reply(tool_calls=[("hello", {"name": "Ada", "excited": True})]),
                       Reply(content="I said hello."))
    response = server.chat("greeter", "greet Ada")
    assert response.status_code == 200, response.text
    (result,) = [m for m in fake_openai.requests[1]["messages"] if m["role"] == "tool"]
    assert result["content"] == "Bonjour, Ada!"
    hello_spec = next(t for t in fake_openai.requests[0]["tools"] if t["function"]["name"] == "hello")
    assert "ctx" not in hello_spec["function"]["parameters"]["properties"]


def test_the_installed_plugins_config_is_validated(hello_installed, agentd_server, fake_openai):
    server = agentd_server({"greeter": openai_agent(fake_openai, tools=[{"hello": {"greeting": 3}}])})
    assert "greeter" not in server.state.agents
    assert any("greeting" in p.key for p in server.state.problems)
