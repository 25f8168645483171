"""The response cache through the HTTP API: hits skip the model, look like fresh answers, expire."""
import datetime as dt

from tests.conftest import Reply, openai_agent, sse_events

QUESTION = "What are your opening hours?"


def _agent(fake, **extra):
    return openai_agent(fake, cache={"ttl": 3600}, **extra)


def _warm(server, fake, answer="We open at nine."):
    fake.script(Reply(content=answer, usage=(30, 7)))
    response = server.chat("bot", QUESTION)
    assert response.status_code == 200, response.text
    assert response.headers["X-Cache"] == "miss"
    return response.json()


def test_a_repeated_first_question_is_answered_from_the_cache(agentd_server, fake_openai):
    server = agentd_server({"bot": _agent(fake_openai)})
    fresh = _warm(server, fake_openai)
    response = server.chat("bot", "  what are your OPENING   hours ")
    assert response.status_code == 200, response.text
    assert response.headers["X-Cache"] == "hit"
    assert fake_openai.calls == 1
    hit = response.json()
    assert set(hit) == set(fresh)
    assert hit["content"] == "We open at nine." and hit["role"] == "assistant"
    assert hit["conversation_id"] != fresh["conversation_id"] and hit["id"] > fresh["id"]
    assert hit["provider"] == "openai" and hit["model"] == "fake-model"
    assert hit["usage"]["total_tokens"] == 0  # no model was called
    history = server.history("bot", conversation_id=hit["conversation_id"]).json()["messages"]
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "  what are your OPENING   hours "), ("assistant", "We open at nine.")]


def test_a_hit_streams_like_a_fresh_answer(agentd_server, fake_openai):
    server = agentd_server({"bot": _agent(fake_openai)})
    _warm(server, fake_openai, answer="We open at nine every day.")
    response = server.chat("bot", QUESTION, stream=True)
    assert response.status_code == 200
    assert response.headers["X-Cache"] == "hit"
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-1] == "done" and set(types[1:-1]) == {"delta"}
    assert len(types) > 3
    assert "".join(e["content"] for e in events if e["type"] == "delta") == "We open at nine every day."
    assert events[-1]["message"]["content"] == "We open at nine every day."
    assert events[0]["conversation_id"] == events[-1]["message"]["conversation_id"]
    assert fake_openai.calls == 1


def test_personal_or_follow_up_messages_are_never_cached(agentd_server, fake_openai):
    agent = _agent(fake_openai, system_prompt="Help {{ user.name }}.", allow_system_prompt_override=True)
    server = agentd_server({"bot": agent})
    first = _warm(server, fake_openai)
    variants = [{"conversation_id": first["conversation_id"]}, {"context": {"user": {"name": "Ann"}}},
                {"system_prompt": "Be brief."},
                {"images": [{"data": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
                                     "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==", "mime_type": "image/png"}]}]
    for number, body in enumerate(variants, start=2):
        response = server.chat("bot", QUESTION, **body)
        assert response.status_code == 200, (body, response.text)
        assert "X-Cache" not in response.headers
        assert fake_openai.calls == number


def test_agents_without_cache_get_no_header(agentd_server, fake_openai):
    server = agentd_server({"bot": openai_agent(fake_openai)})
    for _ in range(2):
        response = server.chat("bot", QUESTION)
        assert "X-Cache" not in response.headers
    assert fake_openai.calls == 2


def test_the_cache_is_shared_and_a_changed_agent_file_invalidates_it(agentd_server, fake_openai):
    first = agentd_server({"bot": _agent(fake_openai)})
    _warm(first, fake_openai)
    # Another server on the same database with the same agent file: the entry is shared.
    same = agentd_server({"bot": _agent(fake_openai)})
    assert same.chat("bot", QUESTION).headers["X-Cache"] == "hit"
    assert fake_openai.calls == 1
    # The agent file changed (a new system prompt): its fingerprint, and so the key, changed.
    changed = agentd_server({"bot": _agent(fake_openai, system_prompt="Answer in French.")})
    fake_openai.script(Reply(content="Nous ouvrons à neuf heures."))
    response = changed.chat("bot", QUESTION)
    assert response.headers["X-Cache"] == "miss"
    assert response.json()["content"] == "Nous ouvrons à neuf heures."
    assert fake_openai.calls == 2
    assert changed.chat("bot", QUESTION).json()["content"] == "Nous ouvrons à neuf heures."
    assert fake_openai.calls == 2


def test_an_expired_entry_is_asked_again(agentd_server, fake_openai):
    from agentd.store.models import CacheEntry
    server = agentd_server({"bot": _agent(fake_openai)})
    _warm(server, fake_openai)
    with server.state.db.connection_context():
        CacheEntry.update(expires_at=dt.datetime(2000, 1, 1)).execute()
    response = server.chat("bot", QUESTION)
    assert response.headers["X-Cache"] == "miss"
    assert fake_openai.calls == 2
    assert server.chat("bot", QUESTION).headers["X-Cache"] == "hit"
    assert fake_openai.calls == 2


def test_mood_is_part_of_the_key(agentd_server, fake_openai):
    server = agentd_server({"bot": _agent(fake_openai)})
    _warm(server, fake_openai)
    assert server.chat("bot", QUESTION, mood="friendly").headers["X-Cache"] == "miss"
    assert fake_openai.calls == 2


def test_a_failed_answer_is_not_cached(agentd_server, fake_openai):
    server = agentd_server({"bot": _agent(fake_openai)})
    fake_openai.script(Reply(status=400))
    assert server.chat("bot", QUESTION).status_code == 502
    fake_openai.script(Reply(content="Nine."))
    assert server.chat("bot", QUESTION).headers["X-Cache"] == "miss"
    assert server.chat("bot", QUESTION).json()["content"] == "Nine."
    assert fake_openai.calls == 2
