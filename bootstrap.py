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
    return run_tests([str(PY), "-m", "pytest", *rest])


def _marked(token: str) -> list[int]:
    """Processes whose environment carries this test run's token (pytest, its workers and
    everything they started, including daemons that detached into their own session)."""
    needle = f"SITEWATCH_TEST_RUN={token}".encode()
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if needle in (d / "environ").read_bytes().split(b"\0"):
                    found.append(int(d.name))
            except OSError:
                pass
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
    except OSError:
        return "?"


def _kill(pids: list[int]) -> None:
    import signal
    import time

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.2)


def run_tests(cmd: list[str]) -> int:
    """Run the suite with two guards, so that CI ends with a report and never waits silently:

    * a wall-clock budget (``SITEWATCH_TEST_BUDGET_S``; 4800 s when ``CI`` is set, just under the
      CI runner's own 90 min limit, none
      otherwise): when it is spent, every test process dumps its threads' stacks (SIGUSR1, see
      tests/conftest.py), then all are killed and the run fails, saying so;
    * no leftovers: processes the run started that outlive it (a server or worker a test did not
      stop) are listed and killed, so they cannot hold the terminal or CI's output pipe open.
    """
    import secrets
    import signal

    if not Path("/proc/self/environ").exists():  # not Linux: no process accounting, plain run
        return subprocess.call(cmd, cwd=ROOT, env=env())
    token = secrets.token_hex(8)
    e = env()
    e["SITEWATCH_TEST_RUN"] = token
    budget = float(e.get("SITEWATCH_TEST_BUDGET_S") or (4800 if e.get("CI") else 0)) or None
    proc = subprocess.Popen(cmd, cwd=ROOT, env=e)
    try:
        rc = proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        say(f"the test run exceeded its budget of {budget:.0f} s (SITEWATCH_TEST_BUDGET_S): "
            "stacks of every test process follow, then they are stopped")
        for pid in _marked(token):  # pytest and its xdist workers (execnet's bootstrap line)
            if " -m pytest" in _cmdline(pid) or "sys.stdin.readline()" in _cmdline(pid):
                try:
                    os.kill(pid, signal.SIGUSR1)
                except OSError:
                    pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        _kill([proc.pid, *_marked(token)])
        proc.wait()
        rc = 1
    except KeyboardInterrupt:
        _kill([proc.pid])
        rc = 130
    left = _marked(token)
    if left:
        say(f"{len(left)} process(es) started by the tests outlived them; stopping them:")
        for pid in left:
            say(f"  {pid}: {_cmdline(pid)}")
        _kill(left)
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
