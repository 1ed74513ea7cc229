"""A local sitewatch stack in one command: a Prefect server, a Dask scheduler with worker
processes and an S3-compatible server (moto's server mode), all on 127.0.0.1.

    sitewatch stack up [--dir .sitewatch-stack] [--workers 2]   start, wait until healthy
    sitewatch stack status                                       which processes live, URLs
    sitewatch stack down                                         terminate, wait, kill

``up`` writes into the stack folder:

* ``state.json``: per service its pid (each runs in a process group of its own), command line,
  port, URL and log file;
* ``stack.env``: ``KEY=VALUE`` lines (``set -a; . stack.env`` in a shell) pointing sitewatch at the
  stack: ``PREFECT_API_URL``, ``SITEWATCH_DASK_ADDRESS`` (read by ``flows/runner.py``),
  ``AWS_ENDPOINT_URL`` and GDAL's ``AWS_S3_ENDPOINT``/``AWS_HTTPS``/``AWS_VIRTUAL_HOSTING``, and
  moto's throw-away keys (moto accepts any; they are not credentials of anything).

``sitewatch run|demo|serve`` load that file when ``--stack DIR`` or ``SITEWATCH_STACK_DIR`` names
the folder, or when ``./.sitewatch-stack`` holds a running stack (they say so on stderr). The
Dask workers get the same environment when they start (GDAL reads its S3 settings from the
worker's environment), so flows, their tasks and the kernels all use the stack.

``down`` stops only the processes ``up`` recorded, after checking each pid still runs the
recorded command (a pid reused by another program is left alone): SIGTERM to the service's
process group, wait, then SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .dask_env import worker_environ_variable

DEFAULT_DIR = ".sitewatch-stack"
HOST = "127.0.0.1"
BUCKETS = ("sitewatch", "sitewatch-scenes")
# moto accepts any key pair; these only make boto3/s3fs/GDAL sign requests to it
MOTO_KEY, MOTO_SECRET = "sitewatch-local", "sitewatch-local-not-a-secret"
ORDER = ("s3", "prefect", "dask-scheduler", "dask-workers")


class StackError(RuntimeError):
    """The stack could not be started, or is in a state the command cannot work with."""


@dataclass(frozen=True)
class StackSpec:
    workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    prefect_port: int = 0  # 0: a free port
    dask_port: int = 0
    s3_port: int = 0
    buckets: tuple[str, ...] = BUCKETS

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or not 1 <= self.workers <= 64:
            raise ValueError(f"stack workers got {self.workers!r}; expected an integer in [1, 64]")
        if isinstance(self.threads_per_worker, bool) or not isinstance(self.threads_per_worker, int) \
                or not 1 <= self.threads_per_worker <= 64:
            raise ValueError(f"stack threads_per_worker got {self.threads_per_worker!r}; expected an integer in [1, 64]")
        for name in ("prefect_port", "dask_port", "s3_port"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not (v == 0 or 1024 <= v <= 65535):
                raise ValueError(f"stack {name} got {v!r}; expected 0 (a free port) or a port in [1024, 65535]")
        if any(len(b) < 3 for b in self.buckets):
            raise ValueError(f"stack buckets got {self.buckets!r}; expected names of at least 3 characters")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _exe(name: str) -> str:
    here = Path(sys.executable).parent / name  # the venv's own, not a PATH shim's
    return str(here)


def state_path(folder: str | os.PathLike[str]) -> Path:
    return Path(folder) / "state.json"


def env_path(folder: str | os.PathLike[str]) -> Path:
    return Path(folder) / "stack.env"


def read_state(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    p = state_path(folder)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise StackError(f"{p}: not a stack state file ({exc}); expected the JSON that 'sitewatch stack up' writes") from None


# ------------------------------------------------------------------ processes

def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _reap(pid: int) -> None:
    try:  # a child of this process (stack up and down in one process): collect its exit
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _is_ours(svc: dict[str, Any]) -> bool:
    """The recorded pid is alive and still runs the recorded command (not a reused pid)."""
    _reap(svc["pid"])
    got = _cmdline(svc["pid"])
    return bool(got) and got[: len(svc["cmd"])] == svc["cmd"]


def _group_alive(pgid: int) -> bool:
    _reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies only (exited, not yet collected by their parent) do not count
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _start(name: str, cmd: list[str], env: dict[str, str], logs: Path) -> dict[str, Any]:
    log = logs / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # own process group: stopped as one, never by name
    return {"pid": proc.pid, "cmd": cmd, "log": str(log)}


def _stop(svc: dict[str, Any], timeout: float) -> str:
    pid = svc["pid"]
    if not _group_alive(pid):
        return "not running"
    if not _is_ours(svc) and _cmdline(pid) is not None:
        return f"left alone: pid {pid} now runs something else"
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return "stopped"
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "stopped"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.1)
    return "killed" if not _group_alive(pid) else "still running after SIGKILL"


def _wait(what: str, check: Callable[[], bool], timeout: float, svc: dict[str, Any]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(svc["pid"]):
            raise StackError(f"{what} exited while starting; see its log {svc['log']}:\n{_tail(svc['log'])}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.25)
    raise StackError(f"{what} not ready after {timeout:.0f} s; see its log {svc['log']}:\n{_tail(svc['log'])}")


def _tail(path: str, n: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return 200 <= r.status < 300


# ------------------------------------------------------------------ up / down / status

def stack_env(state: dict[str, Any]) -> dict[str, str]:
    """The environment that points sitewatch (and its Dask workers) at a stack."""
    s3 = state["services"]["s3"]
    return {
        "PREFECT_API_URL": state["services"]["prefect"]["url"] + "/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "SITEWATCH_DASK_ADDRESS": state["services"]["dask-scheduler"]["url"],
        "AWS_ENDPOINT_URL": s3["url"],
        "AWS_S3_ENDPOINT": f"{HOST}:{s3['port']}",
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": MOTO_KEY,
        "AWS_SECRET_ACCESS_KEY": MOTO_SECRET,
    }


def up(folder: str | os.PathLike[str] = DEFAULT_DIR, spec: StackSpec = StackSpec(), timeout: float = 120.0,
       say: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Start the stack and wait until every service answers; returns the state (also written
    to ``state.json``, with ``stack.env``). A stack already running in ``folder`` is an error;
    on a failure everything started is stopped again."""
    folder = Path(folder).resolve()
    old = read_state(folder)
    if old and any(_group_alive(s["pid"]) and _is_ours(s) for s in old["services"].values()):
        raise StackError(f"a stack is already running in {folder}; expected 'sitewatch stack down --dir {folder}' first")
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ports = {k: (getattr(spec, f"{k}_port") or _free_port()) for k in ("s3", "prefect", "dask")}
    state: dict[str, Any] = {"folder": str(folder), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             "spec": {"workers": spec.workers, "threads_per_worker": spec.threads_per_worker},
                             "services": {}}
    svcs = state["services"]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_", "SITEWATCH_DASK"))}
    base.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_HOME=str(folder / "prefect"),
                PREFECT_LOGGING_LOGGERS_DISTRIBUTED_LEVEL="WARNING")
    try:
        svcs["s3"] = _start("s3", [sys.executable, _exe("moto_server"), "-H", HOST, "-p", str(ports["s3"])], base, logs) | {
            "port": ports["s3"], "url": f"http://{HOST}:{ports['s3']}"}
        ui_env = base | {"PREFECT_UI_API_URL": f"http://{HOST}:{ports['prefect']}/api"}  # the browser UI's API
        svcs["prefect"] = _start("prefect", [sys.executable, "-m", "prefect", "server", "start", "--host", HOST,
                                             "--port", str(ports["prefect"])], ui_env, logs) | {
            "port": ports["prefect"], "url": f"http://{HOST}:{ports['prefect']}"}
        sched = f"tcp://{HOST}:{ports['dask']}"
        svcs["dask-scheduler"] = _start("dask-scheduler", [sys.executable, "-m", "distributed.cli.dask_scheduler",
                                                           "--host", HOST, "--port", str(ports["dask"]),
                                                           "--no-dashboard"], base, logs) | {
            "port": ports["dask"], "url": sched}
        say(f"started S3 (moto) {svcs['s3']['url']}, Prefect server {svcs['prefect']['url']}, Dask scheduler {sched}")
        _wait("Dask scheduler", lambda: socket.create_connection((HOST, ports["dask"]), timeout=1).close() is None,
              timeout, svcs["dask-scheduler"])
        env = stack_env(state)
        worker_env = base | env | worker_environ_variable()  # malloc keeps freed memory (flows.dask_env)
        svcs["dask-workers"] = _start("dask-workers", [
            sys.executable, "-m", "distributed.cli.dask_worker", sched, "--nworkers", str(spec.workers),
            "--nthreads", str(spec.threads_per_worker), "--memory-limit", spec.memory_limit, "--no-dashboard",
            "--host", HOST], worker_env, logs) | {"n": spec.workers, "url": sched}
        _wait("S3 server (moto)", lambda: _make_buckets(env, spec.buckets), timeout, svcs["s3"])
        say(f"S3 ready, buckets {', '.join(spec.buckets)}")
        _wait("Dask workers", lambda: _n_workers(sched) >= spec.workers, timeout, svcs["dask-workers"])
        say(f"Dask ready: {spec.workers} worker process(es) x {spec.threads_per_worker} thread(s)")
        _wait("Prefect server", lambda: _http_ok(svcs["prefect"]["url"] + "/api/health"), timeout, svcs["prefect"])
        say(f"Prefect ready: UI {svcs['prefect']['url']}")
    except BaseException:
        _write_state(folder, state, None)
        down(folder)
        raise
    _write_state(folder, state, stack_env(state))
    return state


def _write_state(folder: Path, state: dict[str, Any], env: dict[str, str] | None) -> None:
    tmp = state_path(folder).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, state_path(folder))
    if env is not None:
        lines = ["# written by 'sitewatch stack up': the local stack's endpoints (moto accepts any key)"]
        lines += [f"{k}={v}" for k, v in env.items()]
        tmp = env_path(folder).with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, env_path(folder))


def _make_buckets(env: dict[str, str], buckets: tuple[str, ...]) -> bool:
    import boto3

    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"])
    have = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for b in buckets:
        if b not in have:
            s3.create_bucket(Bucket=b)
    return True


def _n_workers(address: str) -> int:
    from distributed import Client

    with Client(address, timeout=3) as c:
        return len(c.run(os.getpid))  # one answer per connected worker


def down(folder: str | os.PathLike[str] = DEFAULT_DIR, timeout: float = 20.0) -> dict[str, str]:
    """Stop the stack's processes (workers first); returns what happened per service. The
    state file stays (with ``stopped``) for the record; ``stack.env`` is removed."""
    folder = Path(folder).resolve()
    state = read_state(folder)
    if state is None:
        raise StackError(f"no stack state in {folder}; expected a folder written by 'sitewatch stack up'")
    out = {}
    for name in reversed(ORDER):
        svc = state["services"].get(name)
        if svc:
            out[name] = _stop(svc, timeout)
    state["stopped"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write_state(folder, state, None)
    env_path(folder).unlink(missing_ok=True)
    return out


def status(folder: str | os.PathLike[str] = DEFAULT_DIR) -> dict[str, dict[str, Any]]:
    """Per service: ``running`` (its process group lives and the pid runs the recorded command),
    ``healthy`` (it answers) and its URL."""
    state = read_state(folder)
    if state is None:
        raise StackError(f"no stack state in {Path(folder).resolve()}; expected a folder written by 'sitewatch stack up'")
    out: dict[str, dict[str, Any]] = {}
    for name in ORDER:
        svc = state["services"].get(name)
        if not svc:
            continue
        running = _group_alive(svc["pid"]) and _is_ours(svc)
        healthy = False
        if running:
            try:
                if name == "prefect":
                    healthy = _http_ok(svc["url"] + "/api/health")
                elif name in ("s3", "dask-scheduler"):
                    socket.create_connection((HOST, svc["port"]), timeout=1).close()
                    healthy = True
                else:
                    healthy = _n_workers(svc["url"]) >= svc["n"]
            except Exception:
                healthy = False
        out[name] = {"running": running, "healthy": healthy, "url": svc.get("url", ""), "pid": svc["pid"]}
    return out


def running(folder: str | os.PathLike[str]) -> bool:
    try:
        st = read_state(folder)
    except StackError:
        return False
    return bool(st) and "stopped" not in st and env_path(folder).is_file() and any(
        _group_alive(s["pid"]) and _is_ours(s) for s in st["services"].values())


def read_env(folder: str | os.PathLike[str]) -> dict[str, str]:
    p = env_path(folder)
    if not p.is_file():
        raise StackError(f"{p}: no stack environment file; expected a running stack ('sitewatch stack up --dir {folder}')")
    out = {}
    for line in p.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.removeprefix("export ").split("=", 1)
            out[k.strip()] = v.strip()
    return out


def apply_env(folder: str | os.PathLike[str] | None) -> Path | None:
    """Put a running stack's environment into this process (before Prefect is imported).
    ``folder`` None: ``SITEWATCH_STACK_DIR``, else ``./.sitewatch-stack`` if a stack runs there.
    Returns the folder used, or None."""
    explicit = folder or os.environ.get("SITEWATCH_STACK_DIR")
    if explicit:
        if not running(explicit):
            raise StackError(f"no running stack in {Path(explicit).resolve()}; expected 'sitewatch stack up --dir {explicit}'")
        chosen = Path(explicit)
    elif running(DEFAULT_DIR):
        chosen = Path(DEFAULT_DIR)
    else:
        return None
    os.environ.update(read_env(chosen))
    return chosen.resolve()
