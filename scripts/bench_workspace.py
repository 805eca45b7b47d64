#!/usr/bin/env python3
"""Workspace benchmarks: a batch through the server and a session against the same batch run
embedded, in one run; single-line tests on a warm session; pushing an unchanged flow.

  scripts/bench_workspace.py --flow DIR --data FILE.jsonl [--flowrt target/release/flowrt]
                             [--mapping k=v ...] [--tests 50] [--repeats 3]

Prints medians (with min-max) and the session/embedded throughput ratio. Every measurement runs the
real binary with its own FLOWRT_HOME and its own `flowrt server` on 127.0.0.1.
"""
import argparse, json, os, shutil, socket, statistics, subprocess, tempfile, time, urllib.request


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flowrt", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "flowrt"))
    ap.add_argument("--flow", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--mapping", action="append", default=[])
    ap.add_argument("--test-input", action="append", default=[], help="NAME=VALUE for flow test")
    ap.add_argument("--tests", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", default="medium", help="the session's size (medium: 2 Python workers, as many as embedded runs use on 2 cores)")
    a = ap.parse_args()
    exe = os.path.abspath(a.flowrt)
    lines = sum(1 for l in open(a.data) if l.strip())
    home = tempfile.mkdtemp(prefix="flowrt-bench-ws-")
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "FLOWRT_HOME": home, "FLOWRT_SERVER": url}
    server = subprocess.Popen([exe, "server", "--addr", url[7:]], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1); break
            except Exception:
                time.sleep(0.02)
        flow = os.path.join(home, "flow")
        shutil.copytree(a.flow, flow)
        mapping = [x for m in a.mapping for x in ("--column-mapping", m)]

        def run(*args):
            return subprocess.run([exe, *args], env=env, capture_output=True, text=True, check=True)

        sid = run("session", "start", "--flow", flow, "--idle-timeout", "0", "--size", a.size).stdout.strip().splitlines()[-1]
        embedded, session, engine = [], [], []
        for i in range(a.repeats):
            t = time.perf_counter()
            run("run", "create", "--flow", flow, "--data", a.data, "--name", f"emb{i}", *mapping)
            embedded.append(lines / (time.perf_counter() - t))
            t = time.perf_counter()
            run("run", "create", "--session", sid, "--data", a.data, "--name", f"ses{i}", *mapping)
            session.append(lines / (time.perf_counter() - t))
            rec = json.loads(run("run", "show", f"ses{i}", "--json").stdout)
            engine.append(lines / rec["duration_s"])
        inputs = [x for kv in a.test_input for x in ("--inputs", kv)]
        run("flow", "test", flow, "--session", sid, *inputs)  # warm
        tests = []
        for _ in range(a.tests):
            t = time.perf_counter()
            run("flow", "test", flow, "--session", sid, *inputs)
            tests.append(time.perf_counter() - t)
        first = run("flow", "push", flow, "--name", "benchflow")
        again = run("flow", "push", flow, "--name", "benchflow")
        fmt = lambda xs, unit, k=1: f"{statistics.median(xs) * k:.1f} {unit} ({min(xs) * k:.1f}-{max(xs) * k:.1f})"
        print(f"| measure | value |\n|---|---|")
        print(f"| embedded run create, {lines} lines | {fmt(embedded, 'lines/s')} |")
        print(f"| run create --session (server + sealed session), {lines} lines | {fmt(session, 'lines/s')} |")
        print(f"| the same, the session's engine alone (run.json duration) | {fmt(engine, 'lines/s')} |")
        print(f"| session / embedded throughput | {statistics.median(session) / statistics.median(embedded):.2f} |")
        print(f"| flow test --session, warm, median of {a.tests} (CLI process included) | {fmt(tests, 'ms', 1000)} |")
        print(f"| push, first time | {first.stderr.strip().splitlines()[-1]} |")
        print(f"| push, unchanged | {again.stderr.strip().splitlines()[-1]} |")
    finally:
        server.terminate(); server.wait()
        subprocess.run(["pkill", "-f", f"FLOWRT_HOME={home}"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
