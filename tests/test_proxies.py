"""Behind a reverse proxy, per-IP limits key on the forwarded client address."""
import textwrap


AGENT = textwrap.dedent("""
    name: Limited
    model: {provider: demo, name: demo}
    rate_limit: 1/minute
""")


def test_forwarded_clients_get_their_own_bucket_only_behind_a_trusted_proxy(agentd_server):
    trusted = agentd_server({"bot": AGENT}, trusted_proxies=1)
    first = {"X-Forwarded-For": "203.0.113.7"}
    second = {"X-Forwarded-For": "203.0.113.8"}
    send = lambda server, headers: server.client.post("/api/agents/bot/chat", json={"message": "hi"},
                                                      headers=headers).status_code
    assert send(trusted, first) == 200
    assert send(trusted, first) == 429
    assert send(trusted, second) == 200
    direct = agentd_server({"bot": AGENT})
    assert send(direct, first) == 200
    assert send(direct, second) == 429  # a client cannot pick its own address
