"""Agent files: validation with file, line and key; `agentd agents check`; the demo agents."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agentd.agents import load_agents
from agentd.plugins import load_plugins

REPO = Path(__file__).resolve().parent.parent

GOOD = """
name: Good
model: {provider: demo, name: demo}
"""

BROKEN = {
    "typo": ("name: T\nmodel: {provider: demo}\nmax_tool_round: 3\n", 3, "max_tool_round", "unknown key"),
    "badtype": ("name: T\nmodel:\n  provider: demo\n  temperature: hot\n", 4, "model.temperature", "not of type"),
    "noname": ("model: {provider: demo}\n", 1, "(top level)", "'name' is a required property"),
    "syntax": ("name: T\nmodel: {provider: demo\n", 3, "(syntax)", ""),
    "tool": ("name: T\nmodel: {provider: demo}\ntools:\n  - calculator\n  - teleport\n", 5, "tools.1", "unknown tool 'teleport'"),
    "regex": ("name: T\nmodel: {provider: demo}\nguardrails:\n  blocked_patterns: ['(oops']\n", 4,
              "guardrails.blocked_patterns.0", "bad regular expression"),
}


def write(folder: Path, name: str, text: str) -> None:
    (folder / f"{name}.yaml").write_text(textwrap.dedent(text))


@pytest.fixture(scope="module")
def registry():
    return load_plugins(entry_points=False)


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_file_reports_file_line_and_key(tmp_path, registry, name):
    text, line, key, words = BROKEN[name]
    write(tmp_path, name, text)
    write(tmp_path, "good", GOOD)
    agents, problems = load_agents(tmp_path, registry)
    assert list(agents) == ["good"]
    assert len(problems) >= 1
    problem = problems[0]
    assert problem.path.endswith(f"{name}.yaml")
    assert (problem.line, problem.key) == (line, key)
    assert words in problem.message or words in str(problem)


def test_bad_agent_id_is_refused(tmp_path, registry):
    write(tmp_path, "Bad Name", GOOD)
    agents, problems = load_agents(tmp_path, registry)
    assert agents == {} and "agent id" in problems[0].message


def run_check(folder: Path):
    env = {**os.environ, "AGENTD_AGENTS_DIR": str(folder)}
    return subprocess.run([sys.executable, "-m", "agentd", "agents", "check"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_agents_check_exit_codes(tmp_path):
    write(tmp_path, "good", GOOD)
    ok = run_check(tmp_path)
    assert ok.returncode == 0 and "ok    good" in ok.stdout
    write(tmp_path, "typo", BROKEN["typo"][0])
    failed = run_check(tmp_path)
    assert failed.returncode == 1
    assert "typo.yaml:3: max_tool_round" in failed.stdout and "max_tool_round" in failed.stdout


def test_shipped_agents_are_valid():
    result = run_check(REPO / "agents")
    assert result.returncode == 0, result.stdout + result.stderr


def test_published_schema_matches_the_one_in_use():
    published = (REPO / "docs" / "agent.schema.json").read_text()
    assert published == (REPO / "agentd" / "schemas" / "agent.schema.json").read_text()


def test_docs_cover_every_top_level_key():
    import json
    schema = json.loads((REPO / "agentd" / "schemas" / "agent.schema.json").read_text())
    docs = (REPO / "docs" / "agents.md").read_text()
    missing = [key for key in schema["properties"] if f"`{key}`" not in docs]
    assert missing == []
