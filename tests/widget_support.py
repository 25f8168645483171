"""Helpers shared by the widget tests: agentd with the widget blueprint, host pages, a pixel server."""
from __future__ import annotations

import threading

import yaml
from werkzeug.wrappers import Request, Response

from tests.conftest import RunningServer, serve_agentd
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


class WidgetServer(RunningServer):
    """A real agentd on loopback, with helpers for widget sessions."""

    def session(self, agent: str, origin: str, **body):
        return self.client.post("/api/widget/session", json={"agent_id": agent, **body},
                                headers={"Origin": origin})

    def token(self, agent: str, origin: str, **body) -> str:
        response = self.session(agent, origin, **body)
        assert response.status_code == 200, response.text
        return response.json()["token"]


def start_widget_server(tmp_path, database_url, agents: dict[str, str], name="agents", **config):
    """Serve agentd with these agents; every agent file must load."""
    server = serve_agentd(tmp_path / name, database_url, agents, server_class=WidgetServer, **config)
    assert not server.state.problems, server.state.problems
    return server


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


CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium's own connections are refused by a closed network.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_browser():
    """Debian's /usr/bin/chromium, headless (a generator, for a fixture to yield from).

    launch() runs the browser on a fresh temporary --user-data-dir of its own."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def chromium_page():
    """A fresh headless Chromium page; its script errors in `page.errors`."""
    for browser in chromium_browser():
        page = browser.new_context(viewport={"width": 1000, "height": 720}).new_page()
        page.set_default_timeout(20000)
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        yield page
