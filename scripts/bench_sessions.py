#!/usr/bin/env python3
"""Compute-session benchmarks (absolute figures; promptflow has no local equivalent to compare).

  scripts/bench_sessions.py [--flowrt target/release/flowrt] [--sessions 50] [--repeats 5]

Measures, each in a fresh FLOWRT_HOME with its own `flowrt server` on 127.0.0.1:
  1. `session start` to Running with a cached environment (no requirements to install);
  2. the same with a requirements.txt whose wheels uv has cached (the environment itself is new);
  3. the memory (VmRSS) of an idle session's agent, before and after its first line;
  4. N sessions running at once: time to start them all, total agent memory, one line in each.
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
FLOW = """inputs:
  text: {type: string}
outputs:
  upper: {type: string, reference: "${up.output}"}
nodes:
- name: up
  type: python
  source: {type: code, path: up.py}
  inputs: {text: "${inputs.text}"}
"""
TOOL = "from promptflow.core import tool\n\n@tool\ndef up(text: str) -> str:\n    return text.upper()\n"


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


class Server:
    def __init__(self, exe):
        self.exe, self.home = exe, tempfile.mkdtemp(prefix="flowrt-bench-")
        self.url = f"http://127.0.0.1:{free_port()}"
        self.env = {**os.environ, "FLOWRT_HOME": self.home, "FLOWRT_SERVER": self.url}
        self.proc = subprocess.Popen([exe, "server", "--addr", self.url[7:]], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1); return
            except Exception:
                time.sleep(0.02)
        raise SystemExit("server did not start")

    def cli(self, *args):
        return subprocess.run([self.exe, *args], env=self.env, capture_output=True, text=True, check=True).stdout

    def flow(self, name, requirements=None):
        d = os.path.join(self.home, name); os.makedirs(d)
        open(os.path.join(d, "flow.dag.yaml"), "w").write(FLOW)
        open(os.path.join(d, "up.py"), "w").write(TOOL)
        if requirements:
            open(os.path.join(d, "requirements.txt"), "w").write(requirements)
        return d

    def close(self):
        for s in json.loads(self.cli("session", "list", "--json")):
            if s["status"] == "Running":
                subprocess.run([self.exe, "session", "stop", s["id"]], env=self.env, capture_output=True)
        self.proc.terminate(); self.proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)


def rss_mb(pid):
    total = 0
    for p in [pid] + children(pid):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def children(pid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]) == pid:
                    out += [int(p)] + children(int(p))
            except (OSError, IndexError, ValueError):
                pass
    return out


def timed_start(server, flow):
    t = time.perf_counter()
    sid = server.cli("session", "start", "--flow", flow, "--idle-timeout", "0").strip().splitlines()[-1]
    return sid, time.perf_counter() - t


def fmt(xs):
    return f"median {statistics.median(xs):.3f} s (min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flowrt", default=os.path.join(HERE, "..", "target", "release", "flowrt"))
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    exe = os.path.abspath(a.flowrt)

    cached, wheels, idle, idle_after = [], [], [], []
    for _ in range(a.repeats):
        s = Server(exe)
        try:
            sid, secs = timed_start(s, s.flow("plain")); cached.append(secs)
            pid = json.loads(s.cli("session", "show", sid, "--json"))["agent_pid"]
            idle.append(rss_mb(pid))
            s.cli("flow", "test", os.path.join(s.home, "plain"), "--session", sid, "--inputs", "text=hi")
            idle_after.append(rss_mb(pid))
            _, secs = timed_start(s, s.flow("reqs", "six==1.16.0\n")); wheels.append(secs)
        finally:
            s.close()
    print(f"session start to Running, cached environment: {fmt(cached)}")
    print(f"session start to Running, new environment from uv-cached wheels (six): {fmt(wheels)}")
    print(f"idle session memory (agent VmRSS): median {statistics.median(idle):.1f} MB; "
          f"with its Python worker after one line: median {statistics.median(idle_after):.1f} MB")

    s = Server(exe)
    try:
        flow = s.flow("many")
        t = time.perf_counter()
        procs = [subprocess.Popen([exe, "session", "start", "--flow", flow, "--idle-timeout", "0"], env=s.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(a.sessions)]
        ids = [p.communicate()[0].strip().splitlines()[-1] for p in procs]
        started = time.perf_counter() - t
        sessions = [json.loads(s.cli("session", "show", i, "--json")) for i in ids]
        running = sum(1 for x in sessions if x["status"] == "Running")
        t = time.perf_counter()
        ok = 0
        for i in ids:
            out = json.loads(s.cli("flow", "test", flow, "--session", i, "--inputs", f"text={i}"))
            ok += out["upper"] == i.upper()
        lines = time.perf_counter() - t
        mem = sum(rss_mb(x["agent_pid"]) for x in sessions)
        print(f"{a.sessions} sessions at once: {running} Running after {started:.2f} s; "
              f"a line in each: {ok}/{a.sessions} correct in {lines:.2f} s; total agent+worker RSS {mem:.0f} MB")
    finally:
        s.close()


if __name__ == "__main__":
    main()
