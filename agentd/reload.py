"""Agents reload when their YAML files change, without a restart.

On a request, at most every `interval` seconds, the folder's files are
stat-ed (name, mtime, size); when anything changed the folder is loaded again
and `state.agents` is swapped in one assignment, so a request sees either the
old set or the new one. A file that no longer loads keeps its agent's last
good version, and the log says why. No thread: an idle server does no work,
and every worker process checks for itself.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from flask import Flask

from agentd.agents import agent_files, load_agents

log = logging.getLogger("agentd.reload")

DEFAULT_INTERVAL = 2.0


def _signature(folder) -> dict[str, tuple[int, int]]:
    signature = {}
    for path in agent_files(folder):
        try:
            stat = path.stat()
        except OSError:  # removed between listing and stat
            continue
        signature[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return signature


class AgentReloader:
    """Checks the agents folder now and then and swaps in what changed."""

    def __init__(self, state, interval: float = DEFAULT_INTERVAL):
        self.state = state
        self.interval = interval
        self._lock = threading.Lock()
        self._next_check = time.monotonic() + interval
        self._seen = _signature(state.config.agents_dir)

    def maybe_reload(self) -> None:
        """Cheap unless the interval passed and a file changed; one request does the work."""
        if time.monotonic() < self._next_check or not self._lock.acquire(blocking=False):
            return
        try:
            self._next_check = time.monotonic() + self.interval
            current = _signature(self.state.config.agents_dir)
            if current != self._seen:
                self._seen = current
                self.reload()
        finally:
            self._lock.release()

    def reload(self) -> None:
        """Load the folder again; refused files keep their last good agent."""
        old = self.state.agents
        agents, problems = load_agents(self.state.config.agents_dir, self.state.registry)
        for problem in problems:
            agent_id = Path(problem.path).stem
            if agent_id in old and agent_id not in agents:
                agents[agent_id] = old[agent_id]
                log.error("agent %s: the changed file was refused (%s); keeping the last good version",
                          agent_id, problem)
        self._report(old, agents)
        self.state.problems = problems
        self.state.agents = agents
        from agentd.logs import learn_agent_secrets
        learn_agent_secrets(agents)

    def _report(self, old: dict, new: dict) -> None:
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        changed = sorted(a for a in set(old) & set(new) if old[a] is not new[a]
                         and getattr(old[a], "fingerprint", None) != getattr(new[a], "fingerprint", None))
        if added or removed or changed:
            log.info("agents reloaded: added %s, changed %s, removed %s",
                     added or "-", changed or "-", removed or "-")


def install(app: Flask, state) -> AgentReloader | None:
    """Check for changed agent files before requests, when AGENTD_RELOAD_AGENTS is on."""
    if not state.config.reload_agents:
        return None
    reloader = AgentReloader(state, float(state.config.extra.get("reload_interval", DEFAULT_INTERVAL)))
    app.extensions["agentd.reload"] = reloader
    app.before_request(reloader.maybe_reload)
    return reloader
