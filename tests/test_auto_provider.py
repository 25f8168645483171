"""`provider: auto`: the probe of a local model server never holds up a request."""
import threading

from tests.fakes.server import LoopbackServer


class HangingServer:
    """Answers nothing until released: a local model server that is slow to answer the probe."""

    def __init__(self):
        self.asked = threading.Event()
        self.release = threading.Event()
        self.server = LoopbackServer(self.app).start()

    def app(self, environ, start_response):
        self.asked.set()
        self.release.wait(10)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    def stop(self):
        self.release.set()
        self.server.stop()


AUTO_AGENT = """
name: Auto
model:
  provider: auto
  candidates:
    - {{provider: ollama, name: llama3.2, requires_url: "{url}/api/tags"}}
    - {{provider: demo, name: demo}}
"""


def test_the_first_request_does_not_wait_for_the_probe(agentd_server):
    local = HangingServer()
    try:
        server = agentd_server({"auto": AUTO_AGENT.format(url=local.server.url)})
        assert local.asked.wait(10), "the probe starts when the agent loads"
        answer = server.chat("auto", "hello")
        # Answered while the probe still waits for the server's reply: the request did not wait.
        assert server.state.agents["auto"]._probe.is_alive()
        assert answer.status_code == 200
        assert answer.json()["provider"] == "demo"
    finally:
        local.stop()
