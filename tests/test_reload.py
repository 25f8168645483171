"""Agents reload when their YAML changes; a broken edit keeps the last good version."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from tests.conftest import Reply, openai_agent


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    # A later mtime even on filesystems with coarse timestamps, without sleeping.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def _agents_dir(server) -> Path:
    return Path(server.state.config.agents_dir)


def _names(server) -> dict:
    return {a["id"]: a["name"] for a in server.client.get("/api/agents").json()["agents"]}


def test_changed_added_and_removed_files_are_picked_up(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai)}, extra={"reload_interval": 0})
    folder = _agents_dir(server)
    _write(folder / "bot.yaml", openai_agent(fake_openai, name="Renamed bot"))
    _write(folder / "other.yaml", openai_agent(fake_openai, name="Other"))
    assert _names(server) == {"bot": "Renamed bot", "other": "Other"}
    (folder / "other.yaml").unlink()
    assert _names(server) == {"bot": "Renamed bot"}
    assert server.chat("other", "hi").json()["error"]["code"] == "AGENT_NOT_FOUND"


def test_a_changed_system_prompt_reaches_the_model(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, system_prompt="Be old.")},
                           extra={"reload_interval": 0})
    fake_openai.script(Reply(content="one"), Reply(content="two"))
    server.chat("bot", "hi")
    _write(_agents_dir(server) / "bot.yaml", openai_agent(fake_openai, system_prompt="Be new."))
    server.chat("bot", "hi again")
    systems = [m["content"] for r in fake_openai.requests for m in r["messages"] if m["role"] == "system"]
    assert systems[0].startswith("Be old.") and systems[1].startswith("Be new.")


def test_a_broken_edit_keeps_the_last_good_version_and_says_why(agentd_server, fake_openai, caplog):
    server = agentd_server({"bot": openai_agent(fake_openai, name="Good bot")}, extra={"reload_interval": 0})
    caplog.set_level(logging.INFO)
    _write(_agents_dir(server) / "bot.yaml", "name: [unclosed\nmodel: 5\n")
    assert _names(server) == {"bot": "Good bot"}
    fake_openai.script(Reply(content="still here"))
    assert server.chat("bot", "hi").json()["content"] == "still here"
    refused = [r for r in caplog.records if r.name == "agentd.reload"]
    assert refused and "keeping the last good version" in refused[0].getMessage()
    assert "bot.yaml" in refused[0].getMessage()
    assert server.state.problems  # the problem is visible to `agents check`-like callers too
    _write(_agents_dir(server) / "bot.yaml", openai_agent(fake_openai, name="Fixed bot"))
    assert _names(server) == {"bot": "Fixed bot"}
    assert server.state.problems == []


def test_a_broken_new_file_is_not_served(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai)}, extra={"reload_interval": 0})
    _write(_agents_dir(server) / "newbie.yaml", "model: {provider: nope}\n")
    assert set(_names(server)) == {"bot"}


def test_checks_are_throttled_by_the_interval(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, name="Before")},
                           extra={"reload_interval": 3600})
    _write(_agents_dir(server) / "bot.yaml", openai_agent(fake_openai, name="After"))
    assert _names(server) == {"bot": "Before"}  # not looked at again within the interval


def test_reload_can_be_switched_off(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai, name="Before")}, reload_agents=False,
                           extra={"reload_interval": 0})
    _write(_agents_dir(server) / "bot.yaml", openai_agent(fake_openai, name="After"))
    assert _names(server) == {"bot": "Before"}
