"""Agents as an MCP server, driven by the official `mcp` SDK's client over Streamable HTTP."""
from __future__ import annotations

import asyncio

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.conftest import Reply
from tests.protocol_support import new_key, served  # noqa: F401  (fixture)


def with_client(server, key, job, mode="auto"):
    """Run `job(client)` with an SDK client connected to the server's /mcp."""
    async def main():
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
            async with Client(streamable_http_client(f"{server.url}/mcp", http_client=http), mode=mode) as client:
                return await job(client)
    return asyncio.run(main())


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_the_sdk_client_lists_and_calls_agents(served, fake_openai, mode):
    server, key = served
    fake_openai.script(Reply(content="Hello over MCP", reasoning="private thoughts", usage=(8, 2)))

    async def job(client):
        tools = (await client.list_tools()).tools
        result = await client.call_tool("bot", {"message": "hi"})
        return tools, result

    tools, result = with_client(server, key, job, mode)
    assert sorted(t.name for t in tools) == ["bot", "open", "other"]
    bot = next(t for t in tools if t.name == "bot")
    assert bot.input_schema["required"] == ["message"] and bot.description == "An agent for tests"
    assert not result.is_error
    assert [c.text for c in result.content] == ["Hello over MCP"]  # never the reasoning
    assert result.structured_content["conversation_id"].startswith("conv_")
    assert result.structured_content["usage"] == {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}
    assert fake_openai.requests[-1]["messages"][0]["content"] == "You are the bot."


def test_conversation_id_continues_and_is_stored_with_channel_mcp(served, fake_openai):
    server, key = served

    async def job(client):
        first = await client.call_tool("bot", {"message": "one"})
        conversation_id = first.structured_content["conversation_id"]
        second = await client.call_tool("bot", {"message": "two", "conversation_id": conversation_id})
        return conversation_id, second

    conversation_id, second = with_client(server, key, job)
    assert second.structured_content["conversation_id"] == conversation_id
    stored = server.client.get(f"/api/conversations/{conversation_id}",
                               headers={"Authorization": f"Bearer {key}"}).json()
    assert stored["channel"] == "mcp" and [m["content"] for m in stored["messages"]] == \
        ["one", "echo: one", "two", "echo: two"]


def test_a_limited_key_sees_and_calls_only_its_agents(served, fake_openai):
    server, _ = served
    key = new_key(server, "bob", ["other"])

    async def job(client):
        tools = [t.name for t in (await client.list_tools()).tools]
        with pytest.raises(MCPError) as refused:
            await client.call_tool("bot", {"message": "hi"})
        return tools, refused.value

    tools, refused = with_client(server, key, job)
    assert tools == ["other"] and "Unknown tool" in refused.message
    assert fake_openai.calls == 0


def test_failures_are_tool_errors_and_bad_arguments_protocol_errors(served, fake_openai):
    server, key = served
    fake_openai.script(*[Reply(status=500)] * 20)

    async def job(client):
        failed = await client.call_tool("bot", {"message": "hi"})
        missing = await client.call_tool("bot", {"message": "hi", "conversation_id": "conv_nope"})
        errors = []
        for arguments in ({}, {"message": ""}, {"message": "x", "extra": 1}, {"message": 5}):
            try:
                await client.call_tool("bot", arguments)
            except MCPError as exc:
                errors.append(exc.message)
        return failed, missing, errors

    failed, missing, errors = with_client(server, key, job)
    assert failed.is_error and failed.content[0].text.startswith("MODEL_ERROR")
    assert missing.is_error and missing.content[0].text.startswith("CONVERSATION_NOT_FOUND")
    assert [e.split(":")[0] for e in errors] == ["message", "message", "extra", "message"]


def initialize(version: str) -> dict:
    return {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {},
                       "clientInfo": {"name": "raw", "version": "0"}}}


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18"])
def test_the_2025_initialize_handshake(served, version):
    server, key = served
    response = httpx.post(f"{server.url}/mcp", json=initialize(version),
                          headers={"Authorization": f"Bearer {key}",
                                   "Accept": "application/json, text/event-stream"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    result = response.json()["result"]
    assert result["protocolVersion"] == version and result["serverInfo"]["name"] == "agentd"
    assert "tools" in result["capabilities"]


def test_keys_and_origins(served):
    server, key = served
    headers = {"Accept": "application/json, text/event-stream"}
    assert httpx.post(f"{server.url}/mcp", json=initialize("2025-06-18"), headers=headers).status_code == 401
    authorised = {**headers, "Authorization": f"Bearer {key}"}
    foreign = httpx.post(f"{server.url}/mcp", json=initialize("2025-06-18"),
                         headers={**authorised, "Origin": "https://evil.example"})
    assert foreign.status_code == 403
    own = httpx.post(f"{server.url}/mcp", json=initialize("2025-06-18"), headers={**authorised, "Origin": server.url})
    assert own.status_code == 200
    assert httpx.get(f"{server.url}/mcp", headers=authorised).status_code == 405


def test_under_gunicorn_gevent_calls_run_side_by_side(tmp_path, database_url, fake_openai, processes):
    """The SDK bridge under the production worker: four turns are in flight at once, /healthz answers."""
    import threading

    from tests.conftest import openai_agent
    from tests.support import ServerProcess, free_port, server_env, write_agent

    together = threading.Barrier(4, timeout=20)  # released only when all four calls reach the model

    def meet(body):
        together.wait()
        return Reply(content="together")

    fake_openai.script(*[Reply(func=meet)] * 4)
    agents = write_agent(tmp_path / "agents", "bot", openai_agent(fake_openai))
    port = free_port()
    command = ["-m", "gunicorn", "-c", "gunicorn.conf.py", "--workers", "1", "wsgi:app"]
    server = ServerProcess(command, server_env(database_url, agents, port), port, tmp_path / "gunicorn.log")
    processes.append(server)

    async def main():
        async with httpx2.AsyncClient(timeout=30) as http:
            async with Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as client:
                calls = asyncio.gather(*[client.call_tool("bot", {"message": f"q{i}"}) for i in range(4)])
                while fake_openai.calls < 2:
                    await asyncio.sleep(0.05)
                async with httpx2.AsyncClient(timeout=10) as probe:
                    health = (await probe.get(f"{server.url}/healthz")).status_code
                return await calls, health

    results, health = asyncio.run(main())
    assert [r.content[0].text for r in results] == ["together"] * 4
    assert health == 200  # answered while turns were waiting on the model


def test_transport_refusals_are_json(served):
    server, key = served
    response = httpx.post(f"{server.url}/mcp", content=b"hello", headers={"Authorization": f"Bearer {key}"})
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["message"]
