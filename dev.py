#!/usr/bin/env python3
"""Bootstrap and run agentd with nothing but Python 3.11: `python3 dev.py serve` or `python3 dev.py test`.

It creates .venv, installs the pinned requirements into it (once, again when they
change), then runs the server or the whole test suite: pytest on SQLite, pytest
again on a throwaway PostgreSQL server when one can be started here, and the
schemathesis check of the live API.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"


def sh(*cmd, env=None, check=True) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    code = subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)
    if check and code != 0:
        sys.exit(code)
    return code


def ensure_venv(requirements: str) -> None:
    if not PY.exists():
        sh(sys.executable, "-m", "venv", VENV)
    files = [ROOT / requirements, ROOT / "requirements.txt"]
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    stamp = VENV / f".installed-{requirements}"
    if stamp.exists() and stamp.read_text() == digest:
        return
    sh(PY, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", ROOT / requirements)
    stamp.write_text(digest)


def serve(args: list[str]) -> None:
    ensure_venv("requirements.txt")
    os.execv(str(PY), [str(PY), "-m", "agentd", "serve", *args])


def postgres_url() -> str | None:
    """Start a throwaway PostgreSQL (if its binaries are here) and return its admin URL."""
    if os.environ.get("AGENTD_TEST_POSTGRES_URL"):
        return os.environ["AGENTD_TEST_POSTGRES_URL"]
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return None
    out = subprocess.run(["bash", ".ci/start-postgres"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stdout, out.stderr, file=sys.stderr)
        sys.exit("could not start PostgreSQL for the tests")
    return out.stdout.strip().splitlines()[-1]


def test(args: list[str]) -> None:
    ensure_venv("requirements-test.txt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
    failed = sh(PY, "-m", "pytest", "-q", *args, env=env, check=False)
    pg = postgres_url()
    if pg:
        print(f"\n== the same suite on PostgreSQL ({pg}) ==", flush=True)
        failed |= sh(PY, "-m", "pytest", "-q", *args, env={**env, "AGENTD_TEST_POSTGRES_URL": pg}, check=False)
    else:
        print("\nPostgreSQL is not installed here: the PostgreSQL run was skipped "
              "(apt-get install postgresql to include it).", flush=True)
    if (ROOT / ".ci" / "schemathesis").exists() and not args:
        print("\n== schemathesis against the live API ==", flush=True)
        failed |= sh("bash", ".ci/schemathesis", env={**env, "PATH": f"{VENV / 'bin'}:{env['PATH']}"}, check=False)
    sys.exit(1 if failed else 0)


def main() -> None:
    command, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if command == "serve":
        serve(args)
    elif command == "test":
        test(args)
    else:
        sys.exit("usage: python3 dev.py serve [--host H --port P] | python3 dev.py test [pytest args]")


if __name__ == "__main__":
    main()
