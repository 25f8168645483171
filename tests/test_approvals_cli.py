"""`agentd chat` asks y/n about a held tool call, and prints the resumed answer."""
from __future__ import annotations

import subprocess
import sys

from tests.approval_support import SHOP_PLUGIN, plugin, plugin_folder, shop_agent, tool_messages
from tests.conftest import Reply
from tests.support import REPO


def run_chat(server, lines: str):
    return subprocess.run([sys.executable, "-m", "agentd", "chat", "shop", "--url", server.url], cwd=REPO,
                          input=lines, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"})


def test_chat_asks_and_an_answer_y_runs_the_call(agentd_server, fake_openai, tmp_path):
    folder = plugin_folder(tmp_path, shop=SHOP_PLUGIN)
    server = agentd_server({"shop": shop_agent(fake_openai)}, plugins_dir=str(folder))
    fake_openai.script(Reply(tool_calls=[("refund_order", {"order_id": 1042, "amount": 3}),
                                         ("refund_order", {"order_id": 7, "amount": 4})]),
                       Reply(content="Refunded 1042, not 7."))
    result = run_chat(server, "Refund both\ny\ntoo old\n")
    assert result.returncode == 0, result.stderr
    assert "approve? Refund order 1042? [y/N, or a reason to deny]" in result.stdout
    assert "approve? Refund order 7?" in result.stdout
    assert "shop> Refunded 1042, not 7.\n" in result.stdout, result.stdout
    assert plugin(server, folder, "shop").refunds == [{"order_id": 1042, "amount": 3}]
    results = {m["tool_call_id"]: m["content"] for m in tool_messages(fake_openai.requests[-1])}
    assert results["call_2"] == "denied: too old"
