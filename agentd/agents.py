"""Agents defined in YAML, validated with jsonschema; a broken file never stops the others.

Errors name the file, the line and the key, because an agent author reads them
in a terminal with the file open beside it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

from agentd.tools import Tool, Toolset

log = logging.getLogger("agentd.agents")

SCHEMA_PATH = Path(__file__).with_name("schemas") / "agent.schema.json"
AGENT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@lru_cache(maxsize=1)
def agent_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


@dataclass
class AgentProblem:
    """One reason an agent file was refused."""

    path: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.key}: {self.message}"


class AgentLoadError(Exception):
    def __init__(self, problems: list[AgentProblem]):
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


@dataclass
class BoundTool:
    """A tool as one agent uses it: the tool, that agent's configuration for it, and
    whether a person must approve each call (`requires_approval`, `approval_message`)."""

    tool: Tool
    config: dict = field(default_factory=dict)
    requires_approval: bool = False
    approval_message: str | None = None


# Keys of a tool entry that are agentd's, not the tool's: they never reach its config_schema.
APPROVAL_KEYS = ("requires_approval", "approval_message")


@dataclass
class Agent:
    """A loaded, validated agent."""

    id: str
    path: str
    spec: dict
    tools: dict[str, BoundTool]
    fingerprint: str
    _resolved: dict | None = field(default=None, repr=False, compare=False)
    _probe: threading.Thread | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def model(self) -> dict:
        return self.spec["model"]

    def resolved_model(self) -> dict:
        """The model block in use; for `provider: auto`, the candidate chosen once per load.

        Candidates that need a server to answer (`requires_url`) are probed in the
        background (`probe_candidates`, started when the agent loads): a request never
        waits on that probe. Until it has answered, such candidates count as absent.
        """
        if self._resolved is not None:
            return self._resolved
        from agentd.providers.router import choose_candidate
        if self.model.get("provider") != "auto":
            self._resolved = self.model
            return self._resolved
        self.probe_candidates()
        return choose_candidate(self.model, probe=lambda url: False)

    def probe_candidates(self) -> None:
        """Choose the `provider: auto` candidate in a background thread (once per load)."""
        if self.model.get("provider") != "auto" or self._probe is not None:
            return
        from agentd.providers.router import choose_candidate

        def probe():
            try:
                self._resolved = choose_candidate(self.model)
            except Exception:  # noqa: BLE001 — no candidate: requests keep answering 503 each time
                log.warning("agent %s: no model candidate is available", self.id)
        # Not a daemon: a process that ends during a probe waits for it (at most the
        # probe's 2 s timeout) instead of finalizing the interpreter under an
        # httpx/ssl call, which can crash the process (seen as SIGSEGV at exit).
        self._probe = threading.Thread(target=probe, daemon=False, name=f"agentd-probe-{self.id}")
        self._probe.start()

    def setting(self, key: str, default=None):
        return self.spec.get(key, default)

    @property
    def widget(self) -> dict:
        return self.spec.get("widget") or {}

    def _public_model(self) -> dict:
        try:
            model = self.resolved_model()
        except Exception:  # no candidate available: still describe the agent
            model = self.model
        return {"provider": model["provider"], "name": model.get("name", "")}

    def info(self) -> dict:
        """The public description (docs/api.md AgentInfo): never a secret or the system prompt."""
        return {"id": self.id, "name": self.name, "description": self.spec.get("description", ""),
                "model": self._public_model(),
                "tools": list(self.tools),
                # MCP tools are discovered from the servers at turn time: the servers are named.
                "mcp_servers": list(self.spec.get("mcp_servers") or {}),
                "widget": {"enabled": bool(self.widget.get("enabled"))}}


def _node_at(root: yaml.Node, path: list) -> yaml.Node:
    """The deepest YAML node that exists along a jsonschema error path."""
    node = root
    for part in path:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            match = node.value[part]
        else:
            match = None
        if match is None:
            break
        node = match
    return node


def _key_name(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _schema_problems(path: str, data, root: yaml.Node) -> list[AgentProblem]:
    validator = jsonschema.Draft202012Validator(agent_schema())
    problems = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        where = list(error.absolute_path)
        message = error.message
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            # Point at the unexpected key itself: that is the line the author must fix.
            known = set(error.schema.get("properties", {}))
            extra = sorted(k for k in error.instance if k not in known)
            if extra:
                where, message = where + [extra[0]], f"unknown key '{extra[0]}'"
        node = _node_at(root, where)
        problems.append(AgentProblem(path, node.start_mark.line + 1, _key_name(where), message))
    return problems


def parse_agent_file(path: Path) -> tuple[dict, yaml.Node]:
    """The file's data and its node tree (for line numbers); YAML syntax errors become problems."""
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise AgentLoadError([AgentProblem(str(path), line, "(syntax)", str(exc).split("\n")[0])])
    if root is None or not isinstance(data, dict):
        raise AgentLoadError([AgentProblem(str(path), 1, "(top level)", "must be a mapping of keys")])
    return data, root


def _tool_entries(spec: dict) -> list[tuple[int, str, dict]]:
    entries = []
    for index, item in enumerate(spec.get("tools") or []):
        if isinstance(item, str):
            entries.append((index, item, {}))
        else:
            name, config = next(iter(item.items()))
            entries.append((index, name, config or {}))
    return entries


def _approval_problem(config: dict) -> str | None:
    """Why an entry's `approval_message` template cannot be used, or None."""
    template = config.get("approval_message")
    if template is None:
        return None
    from jinja2 import TemplateSyntaxError
    from agentd.templating import compile_template
    try:
        compile_template(template)
    except TemplateSyntaxError as exc:
        return f"approval_message: bad template: {exc.message}"
    return None


def _bind_tools(path: str, spec: dict, root: yaml.Node, registry) -> dict[str, BoundTool]:
    bound, problems = {}, []
    for index, name, config in _tool_entries(spec):
        line = _node_at(root, ["tools", index]).start_mark.line + 1
        approval = {key: config[key] for key in APPROVAL_KEYS if key in config}
        config = {key: value for key, value in config.items() if key not in APPROVAL_KEYS}
        problem = _approval_problem(approval)
        if problem:
            line = _node_at(root, ["tools", index, name, "approval_message"]).start_mark.line + 1
            problems.append(AgentProblem(path, line, f"tools.{index}.{name}.approval_message", problem))
            continue
        item = registry.tools.get(name)
        if item is None:
            problems.append(AgentProblem(path, line, f"tools.{index}", f"unknown tool '{name}'"))
            continue
        try:
            if item.config_schema:
                jsonschema.validate(config, item.config_schema)
            tools = item.build(config) if isinstance(item, Toolset) else [item]
        except jsonschema.ValidationError as exc:
            where = ["tools", index, name, *exc.absolute_path]
            line = _node_at(root, where).start_mark.line + 1
            problems.append(AgentProblem(path, line, _key_name(where), exc.message))
            continue
        except Exception as exc:  # a toolset refusing its configuration
            problems.append(AgentProblem(path, line, f"tools.{index}.{name}", str(exc)))
            continue
        for tool in tools:
            bound[tool.name] = BoundTool(tool, config, bool(approval.get("requires_approval")),
                                         approval.get("approval_message"))
    if problems:
        raise AgentLoadError(problems)
    return bound


def _check_patterns(path: str, spec: dict, root: yaml.Node) -> list[AgentProblem]:
    problems = []
    guardrails = spec.get("guardrails") or {}
    for key in ("blocked_patterns", "output_blocked_patterns"):
        for index, pattern in enumerate(guardrails.get(key) or []):
            try:
                re.compile(pattern)
            except re.error as exc:
                node = _node_at(root, ["guardrails", key, index])
                problems.append(AgentProblem(path, node.start_mark.line + 1,
                                             f"guardrails.{key}.{index}", f"bad regular expression: {exc}"))
    return problems


def _check_widget_tools(path: str, spec: dict, root: yaml.Node, tools: dict) -> list[AgentProblem]:
    """`widget.tools` may only name tools the agent has (a typo would silently allow nothing)."""
    problems = []
    for index, name in enumerate((spec.get("widget") or {}).get("tools") or []):
        if name not in tools:
            node = _node_at(root, ["widget", "tools", index])
            problems.append(AgentProblem(path, node.start_mark.line + 1, f"widget.tools.{index}",
                                         f"'{name}' is not one of this agent's tools"))
    return problems


def _mcp_problems(path: str, spec: dict, root: yaml.Node) -> list[AgentProblem]:
    from agentd.mcp.config import problems as mcp_problems
    return [AgentProblem(path, _node_at(root, where).start_mark.line + 1, _key_name(where), message)
            for where, message in mcp_problems(spec.get("mcp_servers"))]


def load_agent(path: Path, registry) -> Agent:
    """Load and validate one agent file; raises AgentLoadError listing every problem."""
    agent_id = path.stem
    if not AGENT_ID.match(agent_id):
        raise AgentLoadError([AgentProblem(str(path), None, "(file name)",
                                           "agent id must be lower-case letters, digits, - or _")])
    data, root = parse_agent_file(path)
    problems = (_schema_problems(str(path), data, root) or _check_patterns(str(path), data, root)
                or _mcp_problems(str(path), data, root))
    if problems:
        raise AgentLoadError(problems)
    tools = _bind_tools(str(path), data, root, registry)
    problems = _check_widget_tools(str(path), data, root, tools)
    if problems:
        raise AgentLoadError(problems)
    fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return Agent(id=agent_id, path=str(path), spec=data, tools=tools, fingerprint=fingerprint)


def agent_files(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def load_agents(folder, registry, probe: bool = True) -> tuple[dict[str, Agent], list[AgentProblem]]:
    """Every valid agent in a folder, and the problems of the files that were refused.

    `probe=False` (for `agentd agents check`) starts no `provider: auto` probe: a
    short-lived command has no request to answer, and must not exit under a probe.
    """
    agents, problems = {}, []
    for path in agent_files(folder):
        try:
            agent = load_agent(path, registry)
        except AgentLoadError as exc:
            problems += exc.problems
            for problem in exc.problems:
                log.error("agent file refused: %s", problem)
            continue
        if probe:
            agent.probe_candidates()
        agents[agent.id] = agent
    return agents, problems
