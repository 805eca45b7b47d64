#!/usr/bin/env python3
"""Two servers against one: a batch's throughput spread over a session on each of two flowrt
servers sharing one PostgreSQL database and one FLOWRT_HOME, against the same batch in one
session on one server, in the same run.

  python3 scripts/bench_servers.py --database "$(scripts/postgres.sh)" [--lines 2000]
      [--sleep-ms 20] [--concurrency 8] [--flowrt target/release/flowrt]

The flow is one Python node that sleeps --sleep-ms per line (an LLM call's wait, without a
model): the batch is bound by latency and per-session concurrency, which two sessions double.
Prints lines per second for each case and their ratio.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, home, database, name):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [args.flowrt, "server", "--addr", f"127.0.0.1:{port}", "--database", database,
         "--server-id", name],
        env=dict(os.environ, FLOWRT_HOME=home), stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(home, f"{name}.log"), "w"))
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server {name} did not start")


def cli(args, home, url, *argv):
    out = subprocess.run([args.flowrt, *argv], env=dict(os.environ, FLOWRT_HOME=home, FLOWRT_SERVER=url),
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{argv} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def wait_running(args, home, url, sid):
    for _ in range(1200):
        if json.loads(cli(args, home, url, "session", "show", sid, "--json"))["status"] == "Running":
            return
        time.sleep(0.1)
    raise SystemExit(f"session {sid} did not start")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flowrt", default=os.path.join(HERE, "..", "target", "release", "flowrt"))
    ap.add_argument("--database", required=True, help="a PostgreSQL server's URL")
    ap.add_argument("--lines", type=int, default=2000)
    ap.add_argument("--sleep-ms", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    name = f"bench_servers_{os.getpid()}_{int(time.time())}"
    subprocess.run(["psql", args.database, "-q", "-c", f"CREATE DATABASE {name}"], check=True)
    database = args.database.rsplit("/", 1)[0] + "/" + name
    home = tempfile.mkdtemp(prefix="bench_servers.")
    os.chmod(home, 0o700)
    flow = os.path.join(home, "flow")
    os.makedirs(flow)
    with open(os.path.join(flow, "flow.dag.yaml"), "w") as f:
        f.write("inputs:\n  x:\n    type: int\noutputs:\n  y:\n    type: int\n    reference: ${wait.output}\n"
                "nodes:\n- name: wait\n  type: python\n  source:\n    type: code\n    path: wait.py\n"
                "  inputs:\n    x: ${inputs.x}\n")
    with open(os.path.join(flow, "wait.py"), "w") as f:
        f.write(f"import time\nfrom promptflow import tool\n\n@tool\ndef wait(x: int) -> int:\n"
                f"    time.sleep({args.sleep_ms / 1000.0})\n    return x\n")
    data = os.path.join(home, "data.jsonl")
    with open(data, "w") as f:
        for i in range(args.lines):
            f.write(json.dumps({"x": i}) + "\n")
    servers = []
    try:
        servers.append(start_server(args, home, database, "one"))
        servers.append(start_server(args, home, database, "two"))
        (_, url1), (_, url2) = servers
        a = cli(args, home, url1, "session", "start", "--flow", flow, "--size", "medium").strip().splitlines()[-1]
        b = cli(args, home, url2, "session", "start", "--flow", flow, "--size", "medium").strip().splitlines()[-1]
        wait_running(args, home, url1, a)
        wait_running(args, home, url2, b)
        rates = {}
        for label, extra in [("one server, one session", []), ("two servers, a session on each", ["--also-on", b])]:
            run = f"r{len(rates)}"
            t = time.monotonic()
            cli(args, home, url1, "run", "create", "--session", a, *extra, "--data", data, "--name", run,
                "--concurrency", str(args.concurrency))
            elapsed = time.monotonic() - t
            rates[label] = args.lines / elapsed
            print(f"{label:32} {args.lines} lines in {elapsed:6.2f} s: {rates[label]:8.1f} lines/s")
        one, two = rates.values()
        ideal = args.lines * args.sleep_ms / 1000.0 / (2 * args.concurrency)
        print(f"two servers / one: {two / one:.2f}x  (ideal wall for two: {ideal:.2f} s)")
        print(json.dumps({"lines": args.lines, "sleep_ms": args.sleep_ms, "concurrency": args.concurrency,
                          "one": one, "two": two, "ratio": two / one}))
        for sid, url in [(a, url1), (b, url2)]:
            cli(args, home, url, "session", "stop", sid)
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(timeout=30)
        if os.environ.get("KEEP"):
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
