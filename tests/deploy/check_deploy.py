#!/usr/bin/python3
"""Offline checks of the container and Kubernetes recipes (no Docker engine or cluster needed):

- Dockerfile, Dockerfile.cuda: multi-stage, non-root final user, EXPOSE = the server's default port,
  HEALTHCHECK on /health (and the command itself, run here against a live server, succeeds), the model
  as a volume under /models, built by scripts/setup.sh (CPU) or its cmake steps with CUDA on;
  every COPY source exists and .dockerignore does not hide what the build needs.
- deploy/k8s/*.yaml: parse; Deployments have startup/readiness/liveness probes on routes that a live
  server answers 200 on, ports equal to the default port, the model volume, a GPU request in the CUDA
  variant; the Service targets the container port; the HPA scales on a metric /metrics exports, named
  the same in the Prometheus adapter rule.
- deploy/grafana/llamarun.json: every metric a panel queries is one /metrics of a live server exports.

The default port is read from `llamarun serve --help`. Usage: check_deploy.py path/to/llamarun
"""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)
    return cond


def default_port(binary):
    out = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"--port\b[^\n]*?default:? *(\d+)", out) or re.search(r"--port\b.*\n?.*?\b(\d{2,5})\)", out)
    if not m:
        raise SystemExit(f"cannot find the default of --port in `llamarun serve --help`:\n{out}")
    return int(m.group(1))


# ---- a live server ---------------------------------------------------------------------------------
class Server:
    def __init__(self, binary):
        self.log = tempfile.NamedTemporaryFile(prefix="llamarun-deploy-", suffix=".log", delete=False)
        env = dict(os.environ, OMP_WAIT_POLICY="passive")
        self.proc = subprocess.Popen([binary, "serve", "--host", "127.0.0.1", "--port", "0", "--ctx", "512"],
                                     cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        deadline = time.time() + 120
        self.port = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("llamarun serve exited: " + open(self.log.name).read())
            m = re.search(r'"event":"listening".*?"port":(\d+)', open(self.log.name).read())
            if m and self.port is None:
                self.port = int(m.group(1))
            if self.port and self.get("/health")[0] == 200:
                return
            time.sleep(0.1)
        raise SystemExit("llamarun serve did not become ready: " + open(self.log.name).read())

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        os.unlink(self.log.name)
        return code


def exported_metrics(text):
    """Sample names in Prometheus text format (histograms as name_bucket/_sum/_count)."""
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return names


# ---- Dockerfiles -----------------------------------------------------------------------------------
def dockerfile_instructions(path):
    """(INSTRUCTION, argument text) pairs, continuation lines joined, comments dropped."""
    out, cur = [], ""
    for raw in open(path):
        line = raw.rstrip("\n")
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if cur and line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        word, _, rest = cur.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def check_dockerfile(name, port, server, cuda):
    ins = dockerfile_instructions(os.path.join(ROOT, name))
    froms = [i for i, (k, _) in enumerate(ins) if k == "FROM"]
    check(len(froms) >= 2, f"{name}: not multi-stage ({len(froms)} FROM)")
    final = ins[froms[-1]:]
    base = ins[froms[-1]][1]
    if cuda:
        check(re.search(r"nvidia/cuda:\S*-devel", ins[froms[0]][1]) is not None, f"{name}: build stage is not nvidia/cuda devel")
        check(re.search(r"nvidia/cuda:\S*-runtime", base) is not None, f"{name}: final stage is not nvidia/cuda runtime")
    users = [v for k, v in final if k == "USER"]
    check(users and users[-1].split(":")[0] not in ("root", "0"), f"{name}: the final stage runs as root")
    exposes = [v for k, v in final if k == "EXPOSE"]
    check(exposes == [str(port)], f"{name}: EXPOSE {exposes}, the server's default port is {port}")
    vols = " ".join(v for k, v in final if k == "VOLUME")
    check("/models" in vols, f"{name}: no VOLUME /models")
    run_text = " ".join(v for k, v in ins[:froms[-1]] if k == "RUN")
    if cuda:
        check("-DLLAMARUN_CUDA=ON" in run_text and "cmake --build" in run_text, f"{name}: no CUDA cmake build")
    else:
        check("scripts/setup.sh" in run_text, f"{name}: not built by scripts/setup.sh")
    entry = " ".join(v for k, v in final if k in ("ENTRYPOINT", "CMD"))
    check('"serve"' in entry and '"0.0.0.0"' in entry and f'"{port}"' in entry, f"{name}: ENTRYPOINT does not serve on 0.0.0.0:{port}")
    check(re.search(r'"-m", "/models/', entry) is not None, f"{name}: the model is not read from /models")
    if cuda:
        check('"cuda"' in entry, f"{name}: the server does not run with --device cuda")
    copies = [v for k, v in final if k == "COPY"]
    check(any(c.startswith("--from=") and "llamarun" in c for c in copies), f"{name}: the binary is not copied from the build stage")
    for k, v in ins:
        if k == "COPY" and not v.startswith("--from="):
            for src in v.split()[:-1]:
                check(src == "." or os.path.exists(os.path.join(ROOT, src)), f"{name}: COPY source {src} missing")
    hc = [v for k, v in final if k == "HEALTHCHECK"]
    if check(len(hc) == 1 and "/health" in hc[0] and str(port) in hc[0], f"{name}: no HEALTHCHECK on /health:{port}"):
        cmd = hc[0].split(" CMD ", 1)[1] if " CMD " in hc[0] else hc[0][hc[0].index("CMD") + 3:]
        cmd = cmd.replace(f"127.0.0.1/{port}", f"127.0.0.1/{server.port}")
        r = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, timeout=30)
        check(r.returncode == 0, f"{name}: the HEALTHCHECK command fails against a ready server: {r.stderr}")


def check_dockerignore():
    pats = [l.strip() for l in open(os.path.join(ROOT, ".dockerignore")) if l.strip() and not l.startswith("#")]
    needed = ["CMakeLists.txt", "scripts/setup.sh", "scripts/get-default-model.sh", "src", "apps", "web/chat.html",
              "web/embed.cmake", "tests/CMakeLists.txt", "bench/CMakeLists.txt", "bench/cuda/CMakeLists.txt"]
    import fnmatch
    for n in needed:
        for p in pats:
            p2 = p.rstrip("/")
            if fnmatch.fnmatch(n, p2) or n.startswith(p2 + "/") or fnmatch.fnmatch(n.split("/")[0], p2):
                check(False, f".dockerignore pattern {p!r} hides {n}, which the build needs")


# ---- Kubernetes ------------------------------------------------------------------------------------
def check_k8s(port, server, metrics):
    docs = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy/k8s/*.yaml"))):
        name = os.path.relpath(path, ROOT)
        try:
            items = [d for d in yaml.safe_load_all(open(path)) if d is not None]
        except yaml.YAMLError as e:
            check(False, f"{name}: does not parse: {e}")
            continue
        check(len(items) > 0, f"{name}: empty")
        docs[name] = items
    kinds = {}
    for name, items in docs.items():
        for d in items:
            kinds.setdefault(d.get("kind"), []).append((name, d))
    deployments = kinds.get("Deployment", [])
    check(len(deployments) == 2, f"expected a CPU and a CUDA Deployment, found {[n for n, _ in deployments]}")
    for name, d in deployments:
        spec = d["spec"]["template"]["spec"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        check(all(labels.get(k) == v for k, v in d["spec"]["selector"]["matchLabels"].items()), f"{name}: selector does not match the pod labels")
        c = spec["containers"][0]
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        check(list(ports.values()) == [port], f"{name}: containerPort {ports}, default port {port}")
        check(spec.get("securityContext", {}).get("runAsNonRoot") is True, f"{name}: runAsNonRoot not set")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            p = c.get(probe)
            if not check(p and "httpGet" in p, f"{name}: no {probe} with httpGet"):
                continue
            path, pport = p["httpGet"]["path"], p["httpGet"]["port"]
            check(ports.get(pport, pport) == port, f"{name}: {probe} port {pport} is not {port}")
            status, _ = server.get(path)
            check(status == 200, f"{name}: {probe} path {path} answers {status} on a ready server (no key)")
        sp = c.get("startupProbe", {})
        budget = sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3)
        check(budget >= 300, f"{name}: the startup probe allows only {budget} s for the model to load")
        args = c.get("args", [])
        check("-m" in args and args[args.index("-m") + 1].startswith("/models/"), f"{name}: model not read from /models")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        vols = {v["name"] for v in spec.get("volumes", [])}
        check("/models" in mounts and mounts["/models"] in vols, f"{name}: no volume mounted at /models")
        res = c.get("resources", {})
        check("requests" in res and "limits" in res, f"{name}: no resource requests/limits")
        gpu = res.get("limits", {}).get("nvidia.com/gpu")
        if "cuda" in name:
            check(gpu is not None and int(gpu) >= 1, f"{name}: no nvidia.com/gpu limit")
            check(c["image"].endswith(":cuda"), f"{name}: not the CUDA image")
        else:
            check(gpu is None, f"{name}: the CPU deployment requests a GPU")
    pod_labels = deployments[0][1]["spec"]["template"]["metadata"]["labels"] if deployments else {}
    for name, svc in kinds.get("Service", []):
        sel = svc["spec"]["selector"]
        check(all(pod_labels.get(k) == v for k, v in sel.items()), f"{name}: selector {sel} matches no pod")
        for p in svc["spec"]["ports"]:
            check(p["targetPort"] in ("http", port), f"{name}: targetPort {p['targetPort']}")
            check(p["port"] == port, f"{name}: port {p['port']}, default {port}")
    hpas = kinds.get("HorizontalPodAutoscaler", [])
    check(len(hpas) == 1, "expected one HorizontalPodAutoscaler")
    adapter = yaml.safe_load(open(os.path.join(ROOT, "deploy/k8s/prometheus-adapter-values.yaml")))
    adapter_names = set()
    for rule in adapter["rules"]["custom"]:
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"].strip("'\" ")).group(0)
        check(series in metrics, f"prometheus-adapter rule: {series} is not exported by /metrics")
        adapter_names.add(rule.get("name", {}).get("as") or series)
    for name, h in hpas:
        check(h["spec"]["scaleTargetRef"]["name"] == deployments[0][1]["metadata"]["name"], f"{name}: scales another Deployment")
        for m in h["spec"]["metrics"]:
            kind = m["type"]
            mname = m[kind.lower()]["metric"]["name"] if kind in ("Pods", "Object", "External") else None
            check(mname is not None, f"{name}: metric type {kind} is not a custom/external metric")
            check(mname in metrics, f"{name}: metric {mname} is not exported by /metrics")
            check(mname in adapter_names, f"{name}: metric {mname} has no rule in prometheus-adapter-values.yaml")
            check("waiting" in (mname or ""), f"{name}: does not scale on the waiting-requests metric")
    for name, sm in kinds.get("ServiceMonitor", []):
        for ep in sm["spec"]["endpoints"]:
            check(ep["path"] == "/metrics", f"{name}: scrapes {ep['path']}")
    kust = yaml.safe_load(open(os.path.join(ROOT, "deploy/k8s/kustomization.yaml")))
    for r in kust["resources"]:
        check(os.path.exists(os.path.join(ROOT, "deploy/k8s", r)), f"kustomization.yaml: {r} missing")


# ---- Grafana ---------------------------------------------------------------------------------------
def check_grafana(metrics):
    d = json.load(open(os.path.join(ROOT, "deploy/grafana/llamarun.json")))
    exprs = []

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                exprs.append((p["title"], t["expr"]))
    walk(d["panels"])
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query":
            exprs.append(("variable " + v["name"], q))
    check(len(exprs) >= 10, f"the dashboard has only {len(exprs)} queries")
    promql_words = {"sum", "rate", "by", "histogram_quantile", "max", "avg", "le", "pod", "label_values",
                    "code", "finished_reason", "irate", "increase", "min", "without"}
    used = set()
    for title, e in exprs:
        no_strings = re.sub(r'"[^"]*"', '""', e)
        no_ranges = re.sub(r"\[[^\]]*\]", "", no_strings)
        for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", no_ranges):
            if word in promql_words or word.startswith("__"):
                continue
            if word.startswith("llamarun_"):
                used.add(word)
                check(word in metrics, f"grafana panel {title!r}: {word} is not exported by /metrics")
            else:
                check(False, f"grafana panel {title!r}: unknown name {word!r} in {e!r}")
    families = ["generation_tokens_total", "time_to_first_token_seconds", "inter_token_latency_seconds",
                "num_requests_waiting", "kv_cache_usage_ratio", "prefix_cache_hits_total"]
    for f in families:
        check(any(f in u for u in used), f"the dashboard shows nothing of llamarun_{f}")
    return used


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "llamarun")
    port = default_port(binary)
    print(f"deploy: the server's default port is {port} (llamarun serve --help)")
    server = Server(binary)
    try:
        # One request, so that the labelled counters (finish reasons, HTTP codes) have series.
        req = urllib.request.Request(f"http://127.0.0.1:{server.port}/v1/completions",
                                     data=json.dumps({"prompt": "Hi", "max_tokens": 2}).encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=120).read()
        status, text = server.get("/metrics")
        check(status == 200, f"/metrics: {status}")
        metrics = exported_metrics(text)
        print(f"deploy: /metrics exports {len(metrics)} sample names")
        check_dockerfile("Dockerfile", port, server, cuda=False)
        check_dockerfile("Dockerfile.cuda", port, server, cuda=True)
        check_dockerignore()
        check_k8s(port, server, metrics)
        used = check_grafana(metrics)
        print(f"deploy: the dashboard queries {len(used)} metrics")
    finally:
        code = server.stop()
        check(code == 0, f"llamarun serve exited with {code}")
    if failures:
        print(f"deploy checks: {len(failures)} FAILED", file=sys.stderr)
        sys.exit(1)
    print("deploy checks: OK")


if __name__ == "__main__":
    main()
