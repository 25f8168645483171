"""Behind a reverse proxy, per-IP limits key on the forwarded client address."""
import textwrap

from agentd.auth import create_key


AGENT = textwrap.dedent("""
    name: Limited
    model: {provider: demo, name: demo}
    widget:
      enabled: true
      allowed_origins: ["https://shop.example"]
      sessions_per_ip: 1/minute
""")


def test_forwarded_clients_get_their_own_bucket_only_behind_a_trusted_proxy(agentd_server, database):
    create_key("ops")  # behind a proxy open local mode is off: the operator made a key first
    trusted = agentd_server({"bot": AGENT}, trusted_proxies=1)
    first = {"X-Forwarded-For": "203.0.113.7"}
    second = {"X-Forwarded-For": "203.0.113.8"}

    def send(server, headers):
        return server.client.post("/api/widget/session", json={"agent_id": "bot"},
                                  headers={"Origin": "https://shop.example", **headers}).status_code

    assert send(trusted, first) == 200
    assert send(trusted, first) == 429
    assert send(trusted, second) == 200
    direct = agentd_server({"bot": AGENT})
    assert send(direct, first) == 200
    assert send(direct, second) == 429  # a client cannot pick its own address
