"""`agentd chat` re-attaches to its run when the connection drops mid-answer.

The CLI talks to agentd through a TCP relay that cuts the first streamed
response after a few deltas; the run goes on on the server, and the CLI picks
it up again (`GET …/stream` with `Last-Event-ID`) and prints the rest, once.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import threading

from tests.conftest import Reply, openai_agent
from tests.support import REPO
from tests.test_streaming import LONG_TEXT


class CuttingRelay:
    """127.0.0.1:<port> -> the server; the first response carrying deltas is cut after `cut_after` of them."""

    def __init__(self, target_port: int, cut_after: int = 3):
        self.target_port, self.cut_after, self.cuts = target_port, cut_after, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source, sink, watch):
        seen = 0
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                seen += data.count(b"event: delta")
                if watch and self.cuts == 0 and seen >= self.cut_after:
                    self.cuts += 1
                    break   # the network drops this connection mid-stream
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self.listener.close()


def test_chat_reattaches_after_a_dropped_connection_and_prints_the_answer_once(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai)})
    relay = CuttingRelay(server.server.port)
    fake_openai.script(Reply(content=LONG_TEXT, chunk_delay=0.05), Reply(content="And hello again."))
    try:
        result = subprocess.run([sys.executable, "-m", "agentd", "chat", "bot", "--url",
                                 f"http://127.0.0.1:{relay.port}"], cwd=REPO, input="Go\nAgain\n",
                                capture_output=True, text=True, timeout=60,
                                env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"})
    finally:
        relay.close()
    assert relay.cuts == 1
    assert result.returncode == 0, result.stderr
    assert f"bot> {LONG_TEXT}\n" in result.stdout, result.stdout
    assert result.stdout.count("word1 ") == 1
    assert "bot> And hello again.\n" in result.stdout     # the same conversation goes on
    history = server.history("bot").json()["messages"]
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "Go"), ("assistant", LONG_TEXT), ("user", "Again"), ("assistant", "And hello again.")]
