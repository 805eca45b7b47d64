#!/usr/bin/env python3
"""API throughput: requests per second for the session list and a run's status at 32 connections,
measured with wrk against a real server (the release build) on 127.0.0.1, on its SQLite store or,
with --database, on PostgreSQL.

  python3 scripts/bench_api.py [--flowrt target/release/flowrt] [--sessions 10] [--seconds 10]
  python3 scripts/bench_api.py --database "$(scripts/postgres.sh)"   # a fresh database in it

Needs wrk (Debian's `wrk`). Starts its own server in a temporary FLOWRT_HOME, starts the sessions
and one 100-line batch, then runs wrk for each endpoint and prints the rates.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
FLOW = os.path.join(HERE, "..", "crates", "flowrt", "tests", "flows", "batch_base")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flowrt", default=os.path.join(HERE, "..", "target", "release", "flowrt"))
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--database", help="a PostgreSQL server's URL: the bench makes a database in it")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    home = tempfile.mkdtemp(prefix="bench_api.")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, FLOWRT_HOME=home, FLOWRT_SERVER=url)
    extra = []
    if args.database:
        name = f"bench_api_{os.getpid()}_{int(time.time())}"
        subprocess.run(["psql", args.database, "-q", "-c", f"CREATE DATABASE {name}"], check=True)
        extra = ["--database", args.database.rsplit("/", 1)[0] + "/" + name]
    server = subprocess.Popen([args.flowrt, "server", "--addr", f"127.0.0.1:{port}", *extra], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(home, "server.log"), "w"))
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        token = open(os.path.join(home, "owner.token")).read().strip()
        flow = os.path.join(home, "flow")
        shutil.copytree(FLOW, flow)
        ids = []
        for _ in range(args.sessions):
            out = subprocess.run([args.flowrt, "session", "start", "--flow", flow, "--idle-timeout", "0"],
                                 env=env, capture_output=True, text=True, check=True)
            ids.append(out.stdout.strip().splitlines()[-1])
        data = os.path.join(home, "data.jsonl")
        with open(data, "w") as f:
            for i in range(100):
                f.write(json.dumps({"q": f"q{i}"}) + "\n")
        subprocess.run([args.flowrt, "run", "create", "--session", ids[0], "--data", data, "--name", "bench"],
                       env=env, capture_output=True, text=True, check=True)
        results = {}
        for label, path in [("session list", "/api/v1/sessions"), ("run status", "/api/v1/runs/bench")]:
            out = subprocess.run(["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "-H",
                                  f"Authorization: Bearer {token}", url + path],
                                 capture_output=True, text=True, check=True).stdout
            rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            results[label] = rate
            print(f"{label:14} {path:22} {rate:10.0f} req/s at {args.connections} connections"
                  + (f"  ({non2xx.group(1)} non-2xx!)" if non2xx else ""))
        print(json.dumps({"store": "postgres" if args.database else "sqlite", "sessions": args.sessions,
                          "connections": args.connections, **results}))
    finally:
        subprocess.run([args.flowrt, "session", "list"], env=env, capture_output=True)
        for sid in ids if "ids" in dir() else []:
            subprocess.run([args.flowrt, "session", "stop", sid], env=env, capture_output=True)
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
