"""Fixtures for the HTTP server tests: a real `llamarun serve` process on a loopback port with the
default model. LLAMARUN_BINARY names the executable (scripts/test-server.sh sets it)."""
import json
import os
import re
import signal
import subprocess
import tempfile
import time

import httpx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
API_KEY = "test-key-123"


def binary():
    b = os.environ.get("LLAMARUN_BINARY") or os.path.join(ROOT, "build", "llamarun")
    if not os.path.exists(b):
        pytest.skip(f"llamarun binary not found at {b}")
    return b


class ServerProcess:
    """One `llamarun serve` process. The port is chosen by the server (--port 0) and read back from
    its 'listening' log line; stderr goes to a file so that the log never blocks the server."""

    def __init__(self, *extra, api_key=API_KEY, wait_ready=True):
        self.api_key = api_key
        self.log = tempfile.NamedTemporaryFile(prefix="llamarun-serve-", suffix=".log", delete=False)
        args = [binary(), "serve", "--port", "0", "--host", "127.0.0.1", *extra]
        if api_key:
            args += ["--api-key", api_key]
        env = dict(os.environ)
        # An oversubscribed CI machine: spinning OpenMP workers starve the other threads.
        env.setdefault("OMP_WAIT_POLICY", "passive")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        self.port = None
        deadline = time.time() + 60
        while self.port is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llamarun serve exited with {self.proc.returncode}: {self.read_log()}")
            if time.time() > deadline:
                raise RuntimeError("llamarun serve did not report its port: " + self.read_log())
            m = re.search(r'"event":"listening".*?"port":(\d+)', self.read_log())
            if m:
                self.port = int(m.group(1))
            else:
                time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"
        if wait_ready:
            self.wait_ready()

    def read_log(self):
        if not os.path.exists(self.log.name):
            return getattr(self, "keep_log_text", "")
        with open(self.log.name, "r", errors="replace") as f:
            return f.read()

    def log_events(self):
        out = []
        for line in self.read_log().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def headers(self):
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llamarun serve exited with {self.proc.returncode}: {self.read_log()}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server not ready: " + self.read_log()[-4000:])

    def metrics(self):
        r = httpx.get(self.url + "/metrics", headers=self.headers(), timeout=30)
        r.raise_for_status()
        vals = {}
        for line in r.text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            vals[name] = float(value)
        return vals

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.returncode == 0 and not os.environ.get("LLAMARUN_KEEP_LOGS"):
            self.keep_log_text = self.read_log()
            os.unlink(self.log.name)
        return self.proc.returncode


@pytest.fixture(scope="session")
def server():
    # A small context so that "prompt + max_tokens beyond the context" is cheap to provoke.
    s = ServerProcess("--ctx", "512", "--max-queue", "4096")
    yield s
    code = s.stop()
    assert code == 0, s.read_log()[-4000:]


@pytest.fixture(scope="session")
def model_name(server):
    r = httpx.get(server.url + "/v1/models", headers=server.headers(), timeout=30)
    return r.json()["data"][0]["id"]


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, headers=server.headers(), timeout=120) as c:
        yield c


@pytest.fixture()
def oai(server):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, max_retries=0, timeout=300)
