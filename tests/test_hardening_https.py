"""web_fetch over HTTPS: agentd dials the vetted address, and the certificate must still match
the URL's host name (SNI sent, verification on).

The servers are real TLS servers on 127.0.0.1 with certificates from local CAs
made by `trustme`. agentd trusts a CA the way an operator makes it trust an
internal one: SSL_CERT_FILE (read by httpx when web_fetch builds its TLS
context). Nothing in the TLS path is replaced: the handshake, the chain check
and the host-name check are OpenSSL's, as in production. Only where a
pretend-public name must lead to a loopback server does the test use
netguard's documented seams (its resolver and the connect of a vetted address).
"""
from __future__ import annotations

import ssl

import pytest
import trustme

from agentd import ToolContext, ToolError
from agentd.plugins import load_plugins
from tests.fakes.web_servers import PRETEND_PUBLIC, canary_server, page_server, route_names


@pytest.fixture(scope="module")
def web_fetch():
    return load_plugins(entry_points=False).tools["web_fetch"]


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def stranger_ca():
    """A CA nobody told agentd about."""
    return trustme.CA()


@pytest.fixture
def trust(ca, tmp_path, monkeypatch):
    """agentd trusts `ca` (and nothing else) through SSL_CERT_FILE."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))
    return path


class TLSPages:
    """The page server behind TLS with a certificate for `name` from `issuer`; records SNI."""

    def __init__(self, issuer: trustme.CA, name: str, target: str | None = None):
        self.sni: list[str | None] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        issuer.issue_cert(name).configure_cert(context)
        context.sni_callback = lambda sock, server_name, ctx: self.sni.append(server_name)
        self.http = page_server(target=target)
        # The handshake happens in each handler thread, at its first read.
        self.http.server.socket = context.wrap_socket(self.http.server.socket, server_side=True,
                                                      do_handshake_on_connect=False)
        self.port = self.http.port

    @property
    def requests(self):
        return self.http.requests

    def __enter__(self):
        self.http.__enter__()
        return self

    def __exit__(self, *exc):
        self.http.__exit__(*exc)


def fetch(tool, url: str, **config):
    return tool.call({"url": url}, ToolContext(config=config))


def local(port: int) -> dict:
    return {"allow_private_networks": True, "allowed_ports": [port]}


def test_a_valid_certificate_for_the_host_name_is_accepted(web_fetch, ca, trust):
    with TLSPages(ca, "localhost") as server:
        page = fetch(web_fetch, f"https://localhost:{server.port}/page", **local(server.port))
    assert "4242" in page["content"] and page["url"].startswith("https://localhost:")
    assert server.sni == ["localhost"]


def test_a_certificate_for_another_name_is_refused(web_fetch, ca, trust):
    with TLSPages(ca, "other.example") as server:
        with pytest.raises(ToolError, match="(?i)certificate|hostname"):
            fetch(web_fetch, f"https://localhost:{server.port}/page", **local(server.port))
    assert server.requests == []  # no HTTP request was sent over the refused connection


def test_a_certificate_from_an_unknown_ca_is_refused(web_fetch, stranger_ca, trust, monkeypatch):
    with TLSPages(stranger_ca, "localhost") as server:
        with pytest.raises(ToolError, match="(?i)certificate"):
            fetch(web_fetch, f"https://localhost:{server.port}/page", **local(server.port))
        # …and with the default trust store (no SSL_CERT_FILE) too
        monkeypatch.delenv("SSL_CERT_FILE")
        with pytest.raises(ToolError, match="(?i)certificate"):
            fetch(web_fetch, f"https://localhost:{server.port}/page", **local(server.port))
    assert server.requests == []


def test_the_vetted_address_is_dialled_and_the_certificate_checked_against_the_name(
        web_fetch, ca, trust, monkeypatch):
    with TLSPages(ca, "secure.test") as server:
        log = route_names(monkeypatch, names={"secure.test": [PRETEND_PUBLIC]},
                          routes={(PRETEND_PUBLIC, 443): server.port})
        page = fetch(web_fetch, "https://secure.test/page")
    assert "4242" in page["content"]
    assert log["resolved"] == ["secure.test"] and log["connected"] == [(PRETEND_PUBLIC, 443)]
    assert server.sni == ["secure.test"]
    assert server.requests[0][2]["Host"] == "secure.test"


def test_whoever_answers_at_the_vetted_address_must_hold_a_certificate_for_the_name(
        web_fetch, ca, trust, monkeypatch):
    """A valid certificate for some other name (here: localhost) at the address is not enough."""
    with TLSPages(ca, "localhost") as server:
        route_names(monkeypatch, names={"secure.test": [PRETEND_PUBLIC]},
                    routes={(PRETEND_PUBLIC, 443): server.port})
        with pytest.raises(ToolError, match="(?i)certificate|hostname"):
            fetch(web_fetch, "https://secure.test/page")
    assert server.sni == ["secure.test"] and server.requests == []


def test_a_redirect_from_https_to_a_private_address_is_refused(web_fetch, ca, trust, monkeypatch):
    with canary_server() as canary:
        secret = f"http://127.0.0.1:{canary.port}/secret"
        with TLSPages(ca, "secure.test", target=secret) as server:
            route_names(monkeypatch, names={"secure.test": [PRETEND_PUBLIC]},
                        routes={(PRETEND_PUBLIC, 443): server.port})
            with pytest.raises(ToolError, match="not a public address"):
                # the canary's port allowed, so only the address can be what refuses it
                fetch(web_fetch, "https://secure.test/redirect", allowed_ports=[443, canary.port])
            assert [r[1] for r in server.requests] == ["/redirect"]  # the HTTPS hop did happen
        assert canary.requests == []
