"""All configuration, read from AGENTD_* environment variables in this one module."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"AGENTD_{name}", default)


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Config:
    """Settings for one app instance. Every field has an AGENTD_<NAME> variable."""

    database_url: str = "sqlite:///agentd.db"
    agents_dir: str = str(REPO_ROOT / "agents")
    plugins_dir: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    allow_open_remote: bool = False
    max_body_bytes: int = 1024 * 1024
    max_message_chars: int = 32000
    tool_timeout: float = 30.0
    tool_threads: int = 2
    turn_lease_seconds: int = 60
    secret_key: str = ""
    trusted_proxies: int = 0
    ws_idle_timeout: float = 300.0
    rate_limit_storage: str = "memory://"
    redis_url: str = ""          # runs' events and cancels between processes (agentd.turn.runbus)
    global_rate_limit: str = ""
    log_format: str = "json"
    log_level: str = "INFO"
    reload_agents: bool = True
    entry_points: bool = True
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides) -> "Config":
        """Read every field from its environment variable; `overrides` win."""
        values = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            raw = _env(f.name.upper())
            if raw is None:
                continue
            default = f.default
            if isinstance(default, bool):
                values[f.name] = _bool(raw)
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        values.update(overrides)
        return cls(**values)
