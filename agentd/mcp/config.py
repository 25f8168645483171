"""An agent's `mcp_servers:` block: checks beyond the JSON schema, and per-caller headers.

The schema (agentd/schemas/agent.schema.json) types the keys; these checks
need the machine (is the command on PATH?) or cross keys (stdio or HTTP).

Header values are operator text with two kinds of holes: `${NAME}` is taken
from agentd's environment (a token), `{{ user.id }}` / `{{ context.… }}` is
rendered per caller in the sandbox (and budget) of system prompts
(agentd.templating).
An environment value is passed to Jinja as a variable, never pasted into the
template, and a caller's context is never searched for `${…}`: neither can
turn into the other, so a caller cannot make agentd send one of its secrets.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from jinja2 import TemplateSyntaxError

from agentd.templating import compile_template, render_compiled

DEFAULT_TIMEOUT = 30.0
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
STDIO_ONLY = ("command", "args", "env")
HTTP_ONLY = ("url", "headers")


class ServerUnavailable(Exception):
    """An MCP server could not be used for this turn; the message holds no secret."""


@dataclass(frozen=True)
class ServerSpec:
    """One entry of `mcp_servers:` as the runtime uses it."""

    name: str
    command: str | None = None
    args: tuple = ()
    env: tuple = ()  # sorted (key, value) pairs, so the spec is hashable
    url: str | None = None
    headers: tuple = ()
    tools: tuple | None = None
    timeout: float = DEFAULT_TIMEOUT
    requires_approval: bool = False
    key: str = field(default="", compare=False)

    @property
    def transport(self) -> str:
        return "stdio" if self.command else "http"


def server_specs(block: dict | None) -> list[ServerSpec]:
    """The specs of a validated `mcp_servers:` block, in file order."""
    specs = []
    for name, entry in (block or {}).items():
        spec = ServerSpec(
            name=name, command=entry.get("command"), args=tuple(entry.get("args") or ()),
            env=tuple(sorted((entry.get("env") or {}).items())), url=entry.get("url"),
            headers=tuple((entry.get("headers") or {}).items()),
            tools=tuple(entry["tools"]) if entry.get("tools") is not None else None,
            timeout=float(entry.get("timeout", DEFAULT_TIMEOUT)),
            requires_approval=bool(entry.get("requires_approval", False)))
        identity = repr((spec.command, spec.args, spec.env, spec.url, spec.headers))
        specs.append(_with_key(spec, hashlib.sha256(identity.encode()).hexdigest()[:16]))
    return specs


def _with_key(spec: ServerSpec, key: str) -> ServerSpec:
    object.__setattr__(spec, "key", key)
    return spec


# -- checks for `agentd agents check` and loading ------------------------------------------
def problems(block: dict | None) -> list[tuple[list, str]]:
    """(key path, message) for every problem the schema cannot see."""
    found = []
    for name, entry in (block or {}).items():
        where = ["mcp_servers", name]
        has_command, has_url = "command" in entry, "url" in entry
        if has_command == has_url:
            found.append((where, "needs either `command` (stdio) or `url` (Streamable HTTP)"))
            continue
        wrong = HTTP_ONLY if has_command else STDIO_ONLY
        for key in (k for k in wrong if k in entry):
            kind = "a stdio server (command)" if has_command else "an HTTP server (url)"
            found.append((where + [key], f"not allowed for {kind}"))
        if has_command:
            found += _command_problems(where, entry)
        else:
            found += _url_problems(where, entry["url"])
            found += _header_problems(where, entry.get("headers") or {})
    return found


def _command_problems(where: list, entry: dict) -> list[tuple[list, str]]:
    command = entry["command"]
    path = (entry.get("env") or {}).get("PATH") or os.environ.get("PATH", os.defpath)
    if shutil.which(command, path=path) is None:
        return [(where + ["command"], f"command '{command}' was not found on PATH or is not executable")]
    return []


def _url_problems(where: list, url: str) -> list[tuple[list, str]]:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return [(where + ["url"], f"not a valid URL: {exc}")]
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        return [(where + ["url"], "must be an absolute http:// or https:// URL")]
    return []


def _header_problems(where: list, headers: dict) -> list[tuple[list, str]]:
    found = []
    for name, value in headers.items():
        try:
            compile_template(value)
        except TemplateSyntaxError as exc:
            found.append((where + ["headers", name], f"bad template: {exc.message}"))
    return found


# -- per-caller headers --------------------------------------------------------------------
def render_headers(spec: ServerSpec, variables: dict) -> dict[str, str]:
    """The headers for one caller; raises ServerUnavailable naming a missing variable."""
    headers = {}
    for name, value in spec.headers:
        missing = [v for v in ENV_REF.findall(value) if v not in os.environ]
        if missing:
            raise ServerUnavailable(f"environment variable {missing[0]} is not set")
        template = ENV_REF.sub(lambda m: "{{ agentd_env['" + m.group(1) + "'] }}", value)
        env = {v: os.environ[v] for v in ENV_REF.findall(value)}
        try:
            rendered = render_compiled(compile_template(template), {**variables, "agentd_env": env})
        except Exception as exc:  # a template error, the sandbox refusing, the budget: send nothing
            raise ServerUnavailable(f"header {name} did not render ({exc.__class__.__name__})") from None
        headers[name] = re.sub(r"[\r\n]", "", rendered)  # a caller's context cannot add headers
    return headers
