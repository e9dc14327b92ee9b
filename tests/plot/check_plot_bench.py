#!/usr/bin/python3
"""Checks scripts/plot-bench.py: it draws the archived H100 run (llamarun_bench_cuda, bench_serve.py
and peer results) and a `llamarun bench --json` result (tests/plot/cpu-bench.json, from a real run of
the default model on a 2-core CI machine) into PNGs of the expected panels, and refuses inputs it
cannot plot with a non-zero exit."""
import os
import subprocess
import sys
import tempfile

import matplotlib.image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "plot-bench.py")
failures = []


def run(*args):
    return subprocess.run(["/usr/bin/python3", SCRIPT, *args], capture_output=True, text=True, cwd=ROOT)


def check_png(path, min_w, min_h):
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            failures.append(f"{path}: not a PNG")
            return
    img = matplotlib.image.imread(path)
    h, w = img.shape[:2]
    if w < min_w or h < min_h:
        failures.append(f"{path}: {w}x{h}, expected at least {min_w}x{min_h}")
    # Not blank: some pixels are the llamarun blue (#2f6fde).
    blue = ((abs(img[..., 0] - 0x2f / 255) < 0.02) & (abs(img[..., 1] - 0x6f / 255) < 0.02) &
            (abs(img[..., 2] - 0xde / 255) < 0.02)).sum()
    if blue < 1000:
        failures.append(f"{path}: almost no llamarun bars ({blue} pixels)")


with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "h100.png")
    r = run("bench/cuda/runs/2026-11-26-h100-final", "-o", out)
    if r.returncode != 0 or "(4 panels)" not in r.stdout:
        failures.append(f"H100 run: rc {r.returncode}, {r.stdout} {r.stderr}")
    else:
        check_png(out, 1200, 800)
    out = os.path.join(tmp, "cpu.png")
    r = run("tests/plot/cpu-bench.json", "-o", out)
    if r.returncode != 0 or "(1 panels)" not in r.stdout:
        failures.append(f"llamarun bench --json: rc {r.returncode}, {r.stdout} {r.stderr}")
    else:
        check_png(out, 600, 400)
    r = run("tests/server/requirements.txt", "-o", os.path.join(tmp, "x.png"))
    if r.returncode == 0:
        failures.append("a file that is no benchmark result was accepted")
    bad = os.path.join(tmp, "other.json")
    open(bad, "w").write('{"something": 1}')
    r = run(bad, "-o", os.path.join(tmp, "y.png"))
    if r.returncode == 0 or "nothing to plot" not in r.stderr:
        failures.append(f"an unknown JSON result was not refused: rc {r.returncode} {r.stderr}")

for f in failures:
    print("FAIL:", f)
print("plot-bench checks:", "FAILED" if failures else "OK")
sys.exit(1 if failures else 0)
