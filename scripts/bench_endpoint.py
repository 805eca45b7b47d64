#!/usr/bin/env python3
"""Scoring benchmark: one flow served three ways, measured in one run with wrk.

  pf        `pf flow serve` (promptflow 1.18.5's Flask server)
  serve     `flowrt flow serve DIR` (one local process, no auth)
  endpoint  a flowrt server's endpoint: `flowrt endpoint create`, `flowrt deployment create
            --instances N`, scored at /endpoints/NAME/score with its key (the sealed session
            behind it, the server's auth, routing and request recording included)

Each runs the same flow with the same JSON body at 1 and 32 connections for --duration seconds
(after a warm-up), repetition by repetition in turn, and the medians are printed as a markdown
table with the ratios the deployments issue asks for: the endpoint's requests/s at 32
connections over pf's, its p99 there, and what it adds at p50 over `flowrt flow serve`.

    python3 scripts/bench_endpoint.py --flowrt target/release/flowrt --pf /tmp/pfvenv/bin/pf \
        --flow ../shared/bench/flows/py3 --body '{"text": "The quick brown fox", "repeat": 3}'

Needs wrk (Debian: apt-get install -y wrk). Stdlib only.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url, proc, timeout=120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} not healthy after {timeout} s")


def post(url, body, headers):
    req = urllib.request.Request(url, data=body.encode(), method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.read().decode()


def parse_wrk(text):
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        return None

    def ms(pct):
        x = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\b", text, re.M)
        return float(x.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[x.group(2)] if x else None

    errors = 0
    x = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors += int(x.group(1)) if x else 0
    x = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors += sum(int(v) for v in x.groups()) if x else 0
    return {"rps": float(m.group(1)), "p50": ms(50), "p99": ms(99), "errors": errors}


LUA = """wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
"""


def wrk(url, body, key, conns, duration, lua):
    env = dict(os.environ, BENCH_BODY=body, BENCH_KEY=key or "")
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s", "--latency",
                          "-s", lua, url], env=env, capture_output=True, text=True)
    res = parse_wrk(out.stdout)
    if res is None:
        raise SystemExit(f"wrk output not understood:\n{out.stdout}\n{out.stderr}")
    return res


class Target:
    def __init__(self, name):
        self.name = name
        self.procs = []
        self.key = None

    def stop(self):
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self.procs = []


def start_pf(args, work):
    t = Target("pf flow serve")
    port = free_port()
    log = open(os.path.join(work, "pf.log"), "wb")
    env = dict(os.environ, PF_DISABLE_TELEMETRY="true")
    p = subprocess.Popen([args.pf, "flow", "serve", "--source", args.flow, "--port", str(port), "--host",
                          "127.0.0.1", "--skip-open-browser"], stdout=log, stderr=log, env=env,
                         start_new_session=True)
    t.procs.append(p)
    wait_healthy(f"http://127.0.0.1:{port}/health", p)
    t.url = f"http://127.0.0.1:{port}/score"
    return t


def start_serve(args, work):
    t = Target("flowrt flow serve")
    port = free_port()
    home = os.path.join(work, "serve-home")
    os.makedirs(home, exist_ok=True)
    log = open(os.path.join(work, "serve.log"), "wb")
    p = subprocess.Popen([args.flowrt, "flow", "serve", args.flow, "--port", str(port), "--host", "127.0.0.1"],
                         stdout=log, stderr=log, env=dict(os.environ, FLOWRT_HOME=home), start_new_session=True)
    t.procs.append(p)
    wait_healthy(f"http://127.0.0.1:{port}/health", p)
    t.url = f"http://127.0.0.1:{port}/score"
    return t


def start_endpoint(args, work):
    t = Target(f"flowrt endpoint ({args.instances} instance{'s' if args.instances > 1 else ''})")
    port = free_port()
    home = os.path.join(work, "server-home")
    os.makedirs(home, exist_ok=True)
    env = dict(os.environ, FLOWRT_HOME=home, FLOWRT_SERVER=f"http://127.0.0.1:{port}")
    log = open(os.path.join(work, "server.log"), "wb")
    p = subprocess.Popen([args.flowrt, "server", "--addr", f"127.0.0.1:{port}"], stdout=log, stderr=log, env=env,
                         start_new_session=True)
    t.procs.append(p)
    wait_healthy(f"http://127.0.0.1:{port}/healthz", p)

    def cli(*argv):
        r = subprocess.run([args.flowrt, *argv], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"flowrt {' '.join(argv)}: {r.stderr}")
        return r.stdout

    cli("flow", "push", args.flow, "--name", "bench")
    made = json.loads(cli("endpoint", "create", "bench", "--json"))
    t.key = made["keys"]["primary"]
    cli("deployment", "create", "bench/main", "--flow", "bench@v1", "--instances", str(args.instances),
        "--sample-rate", str(args.sample_rate))
    t.url = f"http://127.0.0.1:{port}/endpoints/bench/score"
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flowrt", required=True)
    ap.add_argument("--pf", help="promptflow's pf (leave out to skip it)")
    ap.add_argument("--flow", required=True, help="a flow folder promptflow and flowrt both serve")
    ap.add_argument("--body", required=True, help="the JSON request body")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--conns", default="1,32")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--sample-rate", type=float, default=1.0,
                    help="the deployment's trace sample rate (every request is counted either way)")
    ap.add_argument("--out", help="write every sample as JSON here")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing (Debian: apt-get install -y wrk)")
    args.flow = os.path.abspath(args.flow)
    conns = [int(c) for c in args.conns.split(",")]
    work = tempfile.mkdtemp(prefix="flowrt-bench-endpoint-")
    lua = os.path.join(work, "post.lua")
    with open(lua, "w") as f:
        f.write(LUA)
    starters = ([("pf", start_pf)] if args.pf else []) + [("serve", start_serve), ("endpoint", start_endpoint)]
    samples = {name: {c: [] for c in conns} for name, _ in starters}
    titles = {}
    answers = {}
    for rep in range(args.repeats):
        for name, start in starters:
            print(f"[rep {rep + 1}] {name}: starting", file=sys.stderr, flush=True)
            t = start(args, work)
            titles[name] = t.name
            try:
                headers = {"Authorization": f"Bearer {t.key}"} if t.key else {}
                status, answer = post(t.url, args.body, headers)
                if status != 200:
                    raise SystemExit(f"{t.name}: {status} {answer}")
                answers[name] = json.loads(answer)
                wrk(t.url, args.body, t.key, 4, 2, lua)  # warm up
                for c in conns:
                    res = wrk(t.url, args.body, t.key, c, args.duration, lua)
                    if res["errors"]:
                        print(f"  {name} c{c}: {res['errors']} errors", file=sys.stderr)
                    samples[name][c].append(res)
                    print(f"  {name} c{c}: {res['rps']:.0f} req/s, p50 {res['p50']:.3f} ms, "
                          f"p99 {res['p99']:.3f} ms", file=sys.stderr, flush=True)
            finally:
                t.stop()
    same = len({json.dumps(a, sort_keys=True) for a in answers.values()}) == 1
    med = {n: {c: {k: statistics.median(s[k] for s in samples[n][c]) for k in ("rps", "p50", "p99")}
               for c in conns} for n in samples}
    print(f"\n{args.duration} s per sample, {args.repeats} repetition(s), median; flow {args.flow}\n")
    print("| server | conns | req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for n in samples:
        for c in conns:
            m = med[n][c]
            print(f"| {titles[n]} | {c} | {m['rps']:.0f} | {m['p50']:.3f} | {m['p99']:.3f} |")
    print()
    e = med["endpoint"]
    if "pf" in med:
        for c in conns:
            print(f"- endpoint / pf flow serve, requests/s at {c} connection(s): "
                  f"{e[c]['rps'] / med['pf'][c]['rps']:.1f}x")
    for c in conns:
        print(f"- endpoint p50 minus flowrt flow serve p50 at {c} connection(s): "
              f"{e[c]['p50'] - med['serve'][c]['p50']:+.3f} ms; endpoint p99: {e[c]['p99']:.3f} ms")
    print(f"- the same answer from every server: {'yes' if same else 'NO: ' + json.dumps(answers)}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"samples": samples, "medians": med, "answers": answers}, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
