"""The WebSocket route: several turns per socket, cancel, refused frames, over a real socket."""
from __future__ import annotations

import json

import pytest
import simple_websocket

from tests.conftest import Reply, openai_agent
from tests.support import wait_for
from tests.test_streaming import LONG_TEXT, assistant_settled, messages

RECEIVE_TIMEOUT = 20.0


class Socket:
    """A WebSocket client speaking JSON frames."""

    def __init__(self, server, agent: str):
        url = server.url.replace("http://", "ws://") + f"/api/agents/{agent}/ws"
        self.ws = simple_websocket.Client.connect(url)

    def send(self, **frame) -> None:
        self.ws.send(json.dumps(frame))

    def send_raw(self, text: str) -> None:
        self.ws.send(text)

    def receive(self) -> dict:
        frame = self.ws.receive(timeout=RECEIVE_TIMEOUT)
        assert frame is not None, "no frame arrived"
        return json.loads(frame)

    def until(self, *types: str) -> list[dict]:
        """Frames up to and including the first whose type is one of `types`."""
        frames = []
        while not frames or frames[-1]["type"] not in types:
            frames.append(self.receive())
        return frames

    def close(self) -> None:
        try:
            self.ws.close()
        except simple_websocket.ConnectionClosed:
            pass  # the server closed it first


@pytest.fixture
def bot(agentd_server, fake_openai):
    return agentd_server({"bot": openai_agent(fake_openai)})


@pytest.fixture
def socket(bot):
    sock = Socket(bot, "bot")
    yield sock
    sock.close()


def test_several_turns_run_over_one_socket_in_one_conversation(bot, socket, fake_openai):
    fake_openai.script(Reply(content="First answer here"), Reply(content="Second answer"))
    socket.send(type="message", message="One")
    first = socket.until("done", "error")
    assert [f["type"] for f in first][0] == "start" and first[-1]["type"] == "done"
    deltas = "".join(f["content"] for f in first if f["type"] == "delta")
    assert deltas == first[-1]["message"]["content"] == "First answer here"
    conversation = first[0]["conversation_id"]
    socket.send(type="message", message="Two", conversation_id=conversation)
    second = socket.until("done", "error")
    assert second[-1]["type"] == "done" and second[0]["conversation_id"] == conversation
    assert [(m["role"], m["content"]) for m in messages(bot, "bot", conversation)] == [
        ("user", "One"), ("assistant", "First answer here"), ("user", "Two"), ("assistant", "Second answer")]
    stored = messages(bot, "bot", conversation)
    assert {m["status"] for m in stored if m["role"] == "assistant"} == {"complete"}


def test_cancel_stops_the_turn_keeps_the_text_and_frees_the_conversation(bot, socket, fake_openai):
    fake_openai.script(Reply(content=LONG_TEXT, chunk_delay=0.05), Reply(content="After cancel"))
    socket.send(type="message", message="Go")
    start = socket.receive()
    received = [socket.until("delta")[-1]["content"]]
    socket.send(type="cancel")
    rest = socket.until("error", "done")
    assert rest[-1]["type"] == "error" and rest[-1]["error"]["code"] == "CANCELLED"
    received += [f["content"] for f in rest if f["type"] == "delta"]
    conversation = start["conversation_id"]
    stored = assistant_settled(bot, "bot", conversation)  # stored before the error frame was sent
    assert stored["status"] == "partial" and stored["id"] == start["id"]
    assert stored["content"].startswith("".join(received)) and stored["content"] != LONG_TEXT
    wait_for(lambda: fake_openai.streams_closed_early == 1, what="the model call to be closed")
    # the same socket and conversation take the next turn at once
    socket.send(type="message", message="Next", conversation_id=conversation)
    frames = socket.until("done", "error")
    assert frames[-1]["type"] == "done" and frames[-1]["message"]["content"] == "After cancel"


def test_a_message_during_a_running_turn_gets_a_busy_error_frame(bot, socket, fake_openai):
    fake_openai.script(Reply(content=LONG_TEXT, chunk_delay=0.02))
    socket.send(type="message", message="Go")
    start = socket.until("delta")[0]
    socket.send(type="message", message="Me too", conversation_id=start["conversation_id"])
    frames = socket.until("error", "done")
    assert frames[-1]["type"] == "error" and frames[-1]["error"]["code"] == "CONVERSATION_BUSY"
    frames = socket.until("done", "error")  # the running turn goes on undisturbed
    assert frames[-1]["type"] == "done" and frames[-1]["message"]["content"] == LONG_TEXT
    assert [m["content"] for m in messages(bot, "bot", start["conversation_id"]) if m["role"] == "user"] == ["Go"]
    assert fake_openai.calls == 1


def test_bad_frames_get_error_frames_and_the_socket_stays_usable(socket, fake_openai):
    socket.send_raw("{not json")
    assert socket.receive()["error"] == {"code": "INVALID_REQUEST", "message": "frame: malformed JSON"}
    socket.send_raw("[1, 2]")
    assert socket.receive()["error"]["code"] == "INVALID_REQUEST"
    socket.send_raw("[" * 100_000)  # deep enough to exhaust the JSON parser's recursion
    assert socket.receive()["error"]["code"] == "INVALID_REQUEST"
    socket.send(type="message", message="")
    assert socket.receive()["error"]["code"] == "INVALID_REQUEST"
    socket.send(type="message", message="Hi", conversation_id="conv_nothere")
    assert socket.receive()["error"]["code"] == "CONVERSATION_NOT_FOUND"
    socket.send(type="cancel")  # nothing is running: ignored
    fake_openai.script(Reply(content="Still here"))
    socket.send(type="message", message="Hi")
    assert socket.until("done", "error")[-1]["message"]["content"] == "Still here"


def frames_until_closed(server, path: str) -> list[dict]:
    """Every text frame of a socket the server closes at once.

    Read with wsproto directly: simple_websocket's client may drop frames that
    arrive in the same packet as the handshake when the server closes right after.
    """
    import socket as pysocket

    from wsproto import ConnectionType, WSConnection
    from wsproto.events import CloseConnection, Request, TextMessage

    conn = WSConnection(ConnectionType.CLIENT)
    host, port = server.url.removeprefix("http://").split(":")
    frames = []
    with pysocket.create_connection((host, int(port)), timeout=RECEIVE_TIMEOUT) as sock:
        sock.sendall(conn.send(Request(host=f"{host}:{port}", target=path)))
        while True:
            data = sock.recv(65536)
            conn.receive_data(data or None)
            for event in conn.events():
                if isinstance(event, TextMessage):
                    frames.append(json.loads(event.data))
                elif isinstance(event, CloseConnection):
                    return frames
            if not data:
                return frames


def test_an_unknown_agent_gets_an_error_frame(bot):
    frames = frames_until_closed(bot, "/api/agents/nobody/ws")
    assert [f["error"]["code"] for f in frames] == ["AGENT_NOT_FOUND"]


def test_a_socket_closed_mid_turn_leaves_a_partial_answer(agentd_server, fake_openai):
    # The agent asks for the old behaviour; by default the run goes on (tests/test_runs.py).
    bot = agentd_server({"bot": openai_agent(fake_openai, runs={"on_disconnect": "stop"})})
    fake_openai.script(Reply(content=LONG_TEXT, chunk_delay=0.05))
    sock = Socket(bot, "bot")
    sock.send(type="message", message="Go")
    start = sock.until("delta")[0]
    sock.close()
    stored = wait_for(lambda: assistant_settled(bot, "bot", start["conversation_id"]), what="the partial")
    assert stored["status"] == "partial" and LONG_TEXT.startswith(stored["content"])
    wait_for(lambda: fake_openai.streams_closed_early == 1, what="the model call to be closed")
