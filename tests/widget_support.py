"""Helpers shared by the widget tests: agentd with the widget blueprint, host pages, a pixel server."""
from __future__ import annotations

import textwrap
import threading

import httpx
import yaml
from werkzeug.wrappers import Request, Response

from tests.fakes.server import LoopbackServer


def widget_agent(fake, origins, **widget) -> str:
    """YAML for an agent on the fake OpenAI server with its widget enabled for `origins`."""
    extra_tools = widget.pop("tools", None)
    spec = {"name": widget.pop("name", "Widget bot"), "description": "Answers on web pages",
            "model": {"provider": "openai", "name": "fake-model", "base_url": fake.url, "retries": 0},
            "widget": {"enabled": True, "allowed_origins": list(origins), **widget}}
    if extra_tools:
        spec["tools"] = extra_tools
    return yaml.safe_dump(spec, sort_keys=False)


class WidgetServer:
    """A real agentd on loopback with the widget blueprint registered."""

    def __init__(self, app, server: LoopbackServer):
        self.app = app
        self.state = app.extensions["agentd"]
        self.server = server
        self.url = server.url
        self.client = httpx.Client(base_url=server.url, timeout=30.0)

    def session(self, agent: str, origin: str, **body):
        return self.client.post("/api/widget/session", json={"agent_id": agent, **body},
                                headers={"Origin": origin})

    def token(self, agent: str, origin: str, **body) -> str:
        response = self.session(agent, origin, **body)
        assert response.status_code == 200, response.text
        return response.json()["token"]

    def close(self):
        self.client.close()
        self.server.stop()
        self.state.db.close()


def start_widget_server(tmp_path, database_url, agents: dict[str, str], name="agents", **config):
    """Build the app (registering the widget blueprint if the app factory does not yet) and serve it."""
    from agentd.api import widget
    from agentd.app import create_app
    from agentd.config import Config

    agents_dir = tmp_path / name
    agents_dir.mkdir()
    for agent_id, text in agents.items():
        (agents_dir / f"{agent_id}.yaml").write_text(textwrap.dedent(text))
    settings = {"database_url": database_url, "agents_dir": str(agents_dir), "log_format": "text",
                "extra": {"retry": {"base_delay": 0.01, "max_delay": 0.05}}, **config}
    app = create_app(Config.from_env(**settings))
    if "widget" not in app.blueprints:
        app.register_blueprint(widget.bp)
    assert not app.extensions["agentd"].problems, app.extensions["agentd"].problems
    return WidgetServer(app, LoopbackServer(app).start())


class PageServer:
    """Serves host pages (path -> HTML) and counts every request it gets (the pixel check)."""

    def __init__(self):
        self.pages: dict[str, str] = {}
        self.hits: list[str] = []
        self.lock = threading.Lock()
        self.server = LoopbackServer(self.wsgi)
        self.url = self.server.url

    def wsgi(self, environ, start_response):
        request = Request(environ)
        with self.lock:
            self.hits.append(request.full_path)
        html = self.pages.get(request.path)
        if html is None:
            return Response("nothing here", 404)(environ, start_response)
        return Response(html, mimetype="text/html")(environ, start_response)

    def start(self) -> "PageServer":
        self.server.start()
        return self

    def stop(self):
        self.server.stop()


def host_page(scripts: str, css: str = "", body: str = "") -> str:
    """A plain host page with `scripts` (the widget tags) and optional hostile CSS."""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Host page</title><style>body {{ font: 16px Georgia, serif; margin: 40px; }} {css}</style></head>
<body><h1>Acme Shop</h1><p>Some host page content.</p>{body}
{scripts}
</body></html>"""
