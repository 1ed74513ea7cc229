#!/usr/bin/env python3
"""One-command set-up for sitewatch: needs only Python 3.11+ and pip.

    python3 bootstrap.py demo [demo options]   # set up, then run the demo into ./demo-output
    python3 bootstrap.py test [pytest options] # set up, then run the whole test suite

Set-up creates ./.venv (stdlib venv), installs uv into it with pip, and installs the pinned
dependencies (requirements.lock) plus this project in editable mode. It is skipped when
nothing changed since the last run. Prefect state for the demo lives in ./.prefect.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".sitewatch-installed"


def say(msg: str) -> None:
    print(f"[bootstrap] {msg}", flush=True)


def run(cmd: list[str], **kw) -> None:
    subprocess.run(cmd, check=True, **kw)


def fingerprint() -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "requirements.lock"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def setup() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"sitewatch needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not PY.exists():
        say(f"creating virtual environment {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == fingerprint():
        return
    say("installing pinned dependencies (requirements.lock) and sitewatch (editable)")
    run([str(PY), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "uv"])
    try:
        run([str(PY), "-m", "uv", "pip", "install", "--python", str(PY), "-r", str(ROOT / "requirements.lock"), "-e", f"{ROOT}[test]"])
    except subprocess.CalledProcessError:
        say("uv failed; falling back to pip")
        run([str(PY), "-m", "pip", "install", "--quiet", "-r", str(ROOT / "requirements.lock"), "-e", f"{ROOT}[test]"])
    STAMP.write_text(fingerprint())


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    e.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
    e.setdefault("PYTHONUNBUFFERED", "1")
    return e


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "setup"):
        print(__doc__)
        return 2
    setup()
    what, rest = argv[0], argv[1:]
    if what == "setup":
        return 0
    if what == "demo":
        args = rest if any(a.startswith("--workdir") for a in rest) else ["--workdir", str(ROOT / "demo-output"), *rest]
        return subprocess.call([str(BIN / "sitewatch"), "demo", *args], cwd=ROOT, env=env())
    if not any(a == "-n" or a.startswith(("-n=", "--numprocesses")) or (a.startswith("-n") and a[2:].isdigit()) for a in rest):
        # The slow end-to-end tests mostly wait on servers and subprocesses: spread them over
        # worker processes (pytest-xdist; one more than the cores, at least 2, at most 4: on 2
        # cores the CI run used about 1 core on average with 2 workers). Session fixtures (the
        # Prefect server, the demo run) are made once per worker. (xdist_group does not work with
        # pytest 9: xdist 3.8 renames item._nodeid, pytest 9 reads item._id.)
        workers = max(2, min(4, (os.cpu_count() or 2) + 1))
        rest = ["-n", str(workers), "--dist", "worksteal", *rest]
    return subprocess.call([str(PY), "-m", "pytest", *rest], cwd=ROOT, env=env())


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
