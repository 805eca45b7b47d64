#!/usr/bin/env python3
"""promptflow and flowrt side by side on prompty and flex flows, in one run (alternating A B A B):

  scripts/bench_prompty_flex.py --prompty FILE.prompty --flex DIR --fake-openai PATH/fake_openai.py
      [--flowrt target/release/flowrt] [--pf /tmp/pfvenv/bin/pf] [--lines 1000] [--repeats 5]

  1. a prompty single-line test (`pf flow test --flow F.prompty` vs `flowrt flow test F.prompty`);
  2. a flex-flow batch of --lines lines (`pf run create` vs `flowrt run create`).
The prompty's connection must be `oai_conn` (open_ai, base_url = the fake server); the flex data is
`{"weight_kg": N}` per line (the conformance corpus's flex_function_typed shape). Prints medians
with min-max and the ratios.
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def timed(cmd, env, cwd=None):
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return took, r.stdout


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--flowrt", default=os.path.join(here, "..", "target", "release", "flowrt"))
    ap.add_argument("--pf", default="/tmp/pfvenv/bin/pf")
    ap.add_argument("--prompty", required=True)
    ap.add_argument("--flex", required=True)
    ap.add_argument("--fake-openai", required=True)
    ap.add_argument("--lines", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-pf-")
    port = free_port()
    fake = subprocess.Popen([sys.executable, a.fake_openai, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        time.sleep(0.5)
        conn = os.path.join(work, "conn.yaml")
        open(conn, "w").write(f"name: oai_conn\ntype: open_ai\napi_key: fake-key\nbase_url: {base}/v1\n")
        pf_home = os.path.join(work, "pfhome")
        os.makedirs(pf_home)
        open(os.path.join(pf_home, "pf.yaml"), "w").write("telemetry:\n  enabled: false\ntrace:\n  destination: none\n")
        common = {**os.environ, "FAKE_OPENAI_BASE": base, "PF_DISABLE_TRACING": "true"}
        pf_env = {**common, "HOME": pf_home, "PF_HOME_DIRECTORY": pf_home, "PF_BATCH_METHOD": "spawn"}
        fr_env = {**common, "FLOWRT_HOME": os.path.join(work, "frhome")}
        timed([a.pf, "connection", "create", "--file", conn], pf_env)
        timed([a.flowrt, "connection", "create", "--file", conn], fr_env)
        prompty = shutil.copy(a.prompty, os.path.join(work, os.path.basename(a.prompty)))
        flex = shutil.copytree(a.flex, os.path.join(work, "flex"))
        data = os.path.join(work, "data.jsonl")
        with open(data, "w") as f:
            for i in range(a.lines):
                f.write(json.dumps({"weight_kg": 1 + i % 7}) + "\n")
        results = {k: {"promptflow": [], "flowrt": []} for k in ("prompty", "flex")}
        for r in range(a.repeats + 1):  # the first round warms caches and is dropped
            for rt in ("promptflow", "flowrt"):
                if rt == "promptflow":
                    t1, out1 = timed([a.pf, "flow", "test", "--flow", prompty, "--inputs", "question=hi"], pf_env)
                    t2, _ = timed([a.pf, "run", "create", "--flow", flex, "--data", data, "--column-mapping",
                                   "weight_kg=${data.weight_kg}", "--name", f"pf{r}"], pf_env)
                else:
                    t1, out1 = timed([a.flowrt, "flow", "test", prompty, "--inputs", "question=hi"], fr_env)
                    t2, _ = timed([a.flowrt, "run", "create", "--flow", flex, "--data", data, "--column-mapping",
                                   "weight_kg=${data.weight_kg}", "--name", f"fr{r}"], fr_env)
                if r > 0:
                    results["prompty"][rt].append(t1)
                    results["flex"][rt].append(a.lines / t2)
        med = statistics.median
        rng = lambda xs, k=1: f"{med(xs) * k:.3g} ({min(xs) * k:.3g}-{max(xs) * k:.3g})"
        p, f = results["prompty"], results["flex"]
        print("| case | promptflow | flowrt | flowrt vs promptflow |\n|---|---|---|---|")
        print(f"| prompty flow test, wall s | {rng(p['promptflow'])} | {rng(p['flowrt'])} | {med(p['promptflow']) / med(p['flowrt']):.1f}x faster |")
        print(f"| flex batch, {a.lines} lines, lines/s | {rng(f['promptflow'])} | {rng(f['flowrt'])} | {med(f['flowrt']) / med(f['promptflow']):.1f}x |")
    finally:
        fake.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
