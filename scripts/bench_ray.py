#!/usr/bin/env python3
"""Ray backend benchmarks, on a real two-node Ray cluster on loopback (in a network namespace of
its own; needs root): a session's start on Ray (the first, which uploads flowrt and builds the
environment, and a second with both cached), and an LLM-bound batch against a fake OpenAI
server with a fixed latency, on one node against two nodes at the same per-node concurrency.

  sudo python3 scripts/bench_ray.py [--lines 5000] [--latency-ms 100] [--concurrency 16]
      [--venv ~/.cache/flowrt/ray-venv] [--fake ../shared/tools/fake_openai.py]
      [--flowrt target/release/flowrt]

Prints each wall time, the two-node/one-node throughput ratio, and the two-node wall against the
ideal (lines x latency / total concurrency).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
NS = f"flowrt-bench-{os.getpid()}"


def ns(*argv, **kw):
    return subprocess.run(["ip", "netns", "exec", NS, *argv], **kw)


def ns_json(url):
    out = ns("curl", "-sf", "-m", "5", url, capture_output=True, text=True)
    try:
        return json.loads(out.stdout)
    except ValueError:
        return None


def ray_start(venv, tmp, head):
    env = dict(os.environ, PATH=f"{venv}/bin:{os.environ.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0")
    common = ["--disable-usage-stats", "--node-ip-address=127.0.0.1", "--num-cpus=1",
              "--object-store-memory=200000000"]
    if head:
        ports = ["--head", "--port=6379", "--node-manager-port=6380", "--object-manager-port=6381",
                 "--dashboard-host=127.0.0.1", "--dashboard-port=8265",
                 "--dashboard-agent-listen-port=52365", "--dashboard-agent-grpc-port=6382",
                 "--runtime-env-agent-port=6383", "--metrics-export-port=6384",
                 "--ray-client-server-port=10001", "--min-worker-port=10002",
                 "--max-worker-port=10999", f"--temp-dir={tmp}"]
    else:
        ports = ["--address=127.0.0.1:6379", "--node-manager-port=6390", "--object-manager-port=6391",
                 "--dashboard-agent-listen-port=52366", "--dashboard-agent-grpc-port=6392",
                 "--runtime-env-agent-port=6393", "--metrics-export-port=6394",
                 "--min-worker-port=11000", "--max-worker-port=11999"]
    ns("setsid", f"{venv}/bin/ray", "start", *common, *ports, env=env, check=True,
       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flowrt", default=os.path.join(ROOT, "target", "release", "flowrt"))
    ap.add_argument("--venv", default=os.path.expanduser("~/.cache/flowrt/ray-venv"))
    ap.add_argument("--fake", default=os.path.join(ROOT, "..", "shared", "tools", "fake_openai.py"))
    ap.add_argument("--lines", type=int, default=5000)
    ap.add_argument("--latency-ms", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (ip netns)")
    flowrt = os.path.abspath(args.flowrt)
    scratch = tempfile.mkdtemp(prefix="bench_ray.")
    home = os.path.join(scratch, "home")
    os.makedirs(home, mode=0o700)
    tmp = f"/tmp/ray-flowrt-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", NS], check=True)
    ns("ip", "link", "set", "lo", "up", check=True)
    procs = []
    try:
        t = time.monotonic()
        ray_start(args.venv, tmp, True)
        ray_start(args.venv, tmp, False)
        while True:
            nodes = ns_json("http://127.0.0.1:8265/api/v0/nodes")
            alive = [n for n in ((nodes or {}).get("data", {}).get("result", {}).get("result") or [])
                     if n.get("state") == "ALIVE"]
            if len(alive) >= 2 and ns_json("http://127.0.0.1:8265/api/jobs/") is not None:
                break
            time.sleep(0.2)
        print(f"ray cluster (2 nodes, 1 CPU each) up in {time.monotonic() - t:.1f} s")
        procs.append(subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, args.fake, "--port", "18000",
                                       "--latency-ms", str(args.latency_ms)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        env = dict(os.environ, FLOWRT_HOME=home, FLOWRT_SERVER="http://127.0.0.1:7878")
        procs.append(subprocess.Popen(["ip", "netns", "exec", NS, flowrt, "server", "--addr", "127.0.0.1:7878",
                                       "--backend", "ray", "--ray-address", "http://127.0.0.1:8265"],
                                      env=env, stdout=subprocess.DEVNULL,
                                      stderr=open(os.path.join(scratch, "server.log"), "w")))
        while ns_json("http://127.0.0.1:7878/healthz") is None:
            time.sleep(0.1)

        def cli(*argv):
            out = ns(flowrt, *argv, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"{argv} failed:\n{out.stdout}\n{out.stderr}")
            return out.stdout

        conn = os.path.join(scratch, "conn.yaml")
        with open(conn, "w") as f:
            f.write("name: test_openai\ntype: open_ai\napi_key: sk-bench\nbase_url: http://127.0.0.1:18000/v1\n")
        cli("connection", "create", "--file", conn)
        flow = os.path.join(scratch, "chat")
        shutil.copytree(os.path.join(ROOT, "crates", "flowrt", "tests", "flows", "chat"), flow)
        starts = []
        sessions = []
        for _ in range(2):
            t = time.monotonic()
            sessions.append(cli("session", "start", "--flow", flow).strip().splitlines()[-1])
            starts.append(time.monotonic() - t)
        print(f"session start on Ray: first {starts[0]:.2f} s (uploads flowrt, builds the environment), "
              f"second {starts[1]:.2f} s (both cached)")
        data = os.path.join(scratch, "data.jsonl")
        with open(data, "w") as f:
            for i in range(args.lines):
                f.write(json.dumps({"question": f"q{i}", "chat_history": []}) + "\n")
        walls = {}
        for label, extra in [("one node", []), ("two nodes", ["--also-on", sessions[1]])]:
            t = time.monotonic()
            cli("run", "create", "--session", sessions[0], *extra, "--data", data, "--name", f"r{len(walls)}",
                "--concurrency", str(args.concurrency))
            walls[label] = time.monotonic() - t
            print(f"{label:10} {args.lines} lines in {walls[label]:6.2f} s: {args.lines / walls[label]:7.1f} lines/s")
        ideal = args.lines * args.latency_ms / 1000.0 / (2 * args.concurrency)
        ratio = walls["one node"] / walls["two nodes"]
        print(f"two nodes / one node: {ratio:.2f}x; two-node wall {walls['two nodes']:.2f} s against the ideal "
              f"{ideal:.2f} s: {walls['two nodes'] / ideal:.2f}x")
        print(json.dumps({"lines": args.lines, "latency_ms": args.latency_ms, "concurrency": args.concurrency,
                          "session_start_first_s": starts[0], "session_start_cached_s": starts[1],
                          "one_node_s": walls["one node"], "two_nodes_s": walls["two nodes"],
                          "ratio": ratio, "ideal_s": ideal, "wall_over_ideal": walls["two nodes"] / ideal}))
        for sid in sessions:
            cli("session", "stop", sid)
    finally:
        for p in procs:
            p.kill()
        out = subprocess.run(["ip", "netns", "pids", NS], capture_output=True, text=True).stdout.split()
        for pid in out:
            try:
                os.kill(int(pid), 9)
            except OSError:
                pass
        time.sleep(0.5)
        subprocess.run(["ip", "netns", "del", NS])
        shutil.rmtree(tmp, ignore_errors=True)
        if os.environ.get("KEEP"):
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
