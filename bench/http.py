"""HTTP side of the benchmark: servers started and always stopped, the load generator, a client.

The service runs as ``authz serve`` (gunicorn, its own settings); the floor as
``python -m bench.floor_app`` with the same gunicorn options. The load generator is
``wrk`` with ``wrk_stream.lua`` cycling through a file of request bodies; without wrk,
a Python multi-process generator does the same job (one blocking client per process).
Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LUA = HERE / "wrk_stream.lua"
STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _authz_script() -> str:
    beside = Path(sys.executable).with_name("authz")
    return str(beside) if beside.exists() else (shutil.which("authz") or "authz")


@dataclass
class Server:
    """A gunicorn master (service or floor) in its own process group; stop() always ends it."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    workers: int = 2
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @classmethod
    def service(cls, database_url: str, log_dir: Path, workers: int) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
        env.update(AUTHZ_DATABASE_URL=database_url, AUTHZ_POLICY_DIR=str(ROOT))
        server = cls("service", [], env, log_dir / "service.log", workers)
        server.command = [_authz_script(), "serve", "--host", "127.0.0.1", "--port", str(server.port),
                          "--workers", str(workers)]
        return server

    @classmethod
    def floor(cls, log_dir: Path, workers: int) -> Server:
        server = cls("floor", [], dict(os.environ), log_dir / "floor.log", workers)
        server.command = [sys.executable, "-m", "bench.floor_app", "--host", "127.0.0.1", "--port",
                          str(server.port), "--workers", str(workers)]
        return server

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command, env=self.env, cwd=ROOT, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            try:
                status, _ = request(self.port, "GET", "/healthz")
                if status == 200 and len(self.worker_pids()) >= self.workers:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {STARTUP_SECONDS}s; see {self.log_path}")

    def worker_pids(self) -> list[int]:
        if self.process is None:
            return []
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid and fields[0] != "Z":
                children.append(int(stat.parent.name))
        return sorted(children)

    def worker_cpu_seconds(self) -> float:
        """User and system CPU time of the workers so far, from /proc (for a per-request figure)."""
        ticks = 0
        for pid in self.worker_pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def worker_rss_mb(self) -> list[float]:
        found = []
        for pid in self.worker_pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        found.append(int(line.split()[1]) / 1024)
            except OSError:
                continue
        return found

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def request(port: int, method: str, path: str, body: dict | bytes | None = None, token: str | None = None,
            timeout: float = 60) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# ---- load generation ------------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk(port: int, path: str, bodies: Path, token: str, seconds: float, connections: int,
        threads: int = 1) -> LoadResult:
    env = dict(os.environ, BENCH_TOKEN=token or "", BENCH_BODIES=str(bodies), BENCH_PATH=path)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
         "-s", str(LUA), f"http://127.0.0.1:{port}{path}"],
        env=env, capture_output=True, text=True, timeout=seconds + 60, check=False,
    )
    line = next((ln for ln in reversed(out.stdout.splitlines()) if ln.startswith("{")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-2000:]} {out.stderr[-2000:]}")
    found = json.loads(line)
    errors = (found["status_errors"] + found["connect_errors"] + found["read_errors"]
              + found["write_errors"] + found["timeouts"])
    return LoadResult(found["requests"], found["duration_us"] / 1e6, found["p50_us"] / 1000,
                      found["p99_us"] / 1000, errors, "wrk")


def _client(port: int, path: str, bodies: list[bytes], token: str, seconds: float, offset: int, queue) -> None:
    latencies, errors = [], 0
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    end = time.perf_counter() + seconds
    index = offset
    while time.perf_counter() < end:
        body = bodies[index % len(bodies)]
        index += 1
        began = time.perf_counter()
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors += 1
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        latencies.append(time.perf_counter() - began)
    conn.close()
    queue.put((latencies, errors))


def python_load(port: int, path: str, bodies: Path, token: str, seconds: float, connections: int) -> LoadResult:
    """The fallback generator: ``connections`` processes, each a blocking keep-alive client."""
    lines = [line.encode() for line in bodies.read_text().splitlines()]
    queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_client, args=(port, path, lines, token, seconds, i * 7919, queue))
             for i in range(connections)]
    began = time.perf_counter()
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=seconds + 120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    elapsed = time.perf_counter() - began
    latencies = sorted(x for found, _ in results for x in found)
    errors = sum(e for _, e in results)
    return LoadResult(len(latencies), elapsed, percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000,
                      errors, "python")


def load(port: int, path: str, bodies: Path, token: str, seconds: float, connections: int) -> LoadResult:
    if have_wrk():
        return wrk(port, path, bodies, token, seconds, connections)
    return python_load(port, path, bodies, token, seconds, connections)


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[rank]
