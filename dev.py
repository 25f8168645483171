#!/usr/bin/env python3
"""Bootstrap and run agentd with nothing but Python 3.11: `python3 dev.py serve` or `python3 dev.py test`.

It creates .venv, installs the pinned requirements and agentd itself (editable,
so `.venv/bin/agentd` exists) into it, once and again when they change, then
runs the server or the whole test suite: the import-layer contracts, pytest on
SQLite and, at the same time, pytest on a throwaway PostgreSQL server when one
can be started here, then the schemathesis check of the live API. The last line
of `test` sums every stage: `dev: N passed, N failed, N skipped`.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
PYTEST_TOTALS = re.compile(r"(\d+) (passed|failed|skipped|errors?)\b")
SCHEMATHESIS_TOTALS = re.compile(r"(\d+) generated, (\d+) passed(?:, (\d+) failed)?")


def sh(*cmd, env=None, check=True) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    code = subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)
    if check and code != 0:
        sys.exit(code)
    return code


def ensure_venv(requirements: str) -> None:
    if not PY.exists():
        sh(sys.executable, "-m", "venv", VENV)
    files = [ROOT / requirements, ROOT / "requirements.txt", ROOT / "pyproject.toml"]
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    stamp = VENV / f".installed-{requirements}"
    if stamp.exists() and stamp.read_text() == digest and (VENV / "bin" / "agentd").exists():
        return
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    sh(*pip, "-r", ROOT / requirements)
    # The project itself, editable: the `agentd` command, and the checkout's code is what runs.
    sh(*pip, "--no-deps", "-e", ROOT)
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


class Stage:
    """One command of the test run, its output kept in a file and printed whole when it ends."""

    def __init__(self, title: str, cmd: list, env: dict):
        self.title, self.cmd = title, [str(c) for c in cmd]
        self.log = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        print(f"== started: {title}", flush=True)
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def finish(self) -> tuple[int, str]:
        code = self.proc.wait()
        self.log.seek(0)
        output = self.log.read()
        print(f"\n== {self.title} (exit {code}) ==\n+ {' '.join(self.cmd)}", flush=True)
        sys.stdout.write(output)
        sys.stdout.flush()
        return code, output


def pytest_totals(output: str) -> dict:
    """passed/failed/skipped from pytest's last summary line."""
    lines = [line for line in output.splitlines() if " in " in line and PYTEST_TOTALS.search(line)]
    found = {kind.rstrip("s") if kind.startswith("error") else kind: int(n)
             for n, kind in PYTEST_TOTALS.findall(lines[-1])} if lines else {}
    failed = found.get("failed", 0) + found.get("error", 0)
    return {"passed": found.get("passed", 0), "failed": failed, "skipped": found.get("skipped", 0)}


def schemathesis_totals(output: str) -> dict:
    match = SCHEMATHESIS_TOTALS.search(output)
    if not match:
        return {"passed": 0, "failed": 0, "skipped": 0}
    return {"passed": int(match.group(2)), "failed": int(match.group(3) or 0), "skipped": 0}


def test(args: list[str]) -> None:
    ensure_venv("requirements-test.txt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '')}"
    failed = sh(VENV / "bin" / "lint-imports", env=env, check=False)
    pg = postgres_url()
    # The two database passes run side by side: most of a test's time is spent waiting
    # on loopback servers, so two processes share the cores well.
    stages = [Stage("pytest on SQLite", [PY, "-m", "pytest", "-q", *args], env)]
    if pg:
        stages.append(Stage(f"pytest on PostgreSQL ({pg})", [PY, "-m", "pytest", "-q", *args],
                            {**env, "AGENTD_TEST_POSTGRES_URL": pg}))
    else:
        print("PostgreSQL is not installed here: the PostgreSQL run is skipped "
              "(apt-get install postgresql to include it).", flush=True)
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    for stage in stages:
        code, output = stage.finish()
        counted = pytest_totals(output)
        if code != 0 and not counted["failed"]:
            counted["failed"] = 1  # the run broke before its summary (collection error, crash)
        failed |= code
        totals = {k: totals[k] + counted[k] for k in totals}
    if (ROOT / ".ci" / "schemathesis").exists() and not args:
        code, output = Stage("schemathesis against the live API", ["bash", ".ci/schemathesis"], env).finish()
        counted = schemathesis_totals(output)
        if code != 0 and not counted["failed"]:
            counted["failed"] = 1
        failed |= code
        totals = {k: totals[k] + counted[k] for k in totals}
    if failed and not totals["failed"]:
        totals["failed"] = 1  # the import-layer contracts
    print(f"dev: {totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped", flush=True)
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
