#!/usr/bin/env python3
"""Run every test binary of the workspace, in a few lanes side by side.

`cargo test --workspace` runs its test binaries one after another, and most of the suite's
time is spent in a few story suites that start real servers, agents, Python workers, a Ray
cluster or promptflow itself. This builds every test binary once (`cargo test --no-run`), then
runs them in lanes (one per two cores and two at least, or FLOWRT_TEST_LANES): the known long suites each start a lane,
the rest fill the lane that is least loaded. A binary runs as cargo runs it (from its package's
folder, with the arguments given after `--`); its output goes to a log printed whole when it
fails; the doc tests run after the lanes. Prints `N passed, M failed` and exits non-zero when
any binary failed.

Usage: scripts/run_tests.py [--lanes N] [-- ARGS FOR EVERY TEST BINARY]
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

# Seconds each long binary took in a serial run on a 2-core machine (package, target): the
# order lanes are filled in. Anything not listed counts as short.
KNOWN = {
    ("flowrt", "sessions"): 124,
    ("flowrt", "ray"): 94,
    ("flowrt", "compat"): 70,
    ("flowrt", "batch"): 40,
    ("flowrt", "ui"): 53,
    ("flowrt", "endpoints"): 32,
    ("flowrt", "trace_viewers"): 31,
    ("flowrt", "flex"): 23,
    ("flowrt", "quotas"): 50,
    ("flowrt-python", "session_env"): 19,
    ("flowrt", "tracing"): 17,
    ("flowrt-python", "real_promptflow"): 14,
    ("flowrt", "servers"): 12,
    ("flowrt", "cli"): 9,
}

# Binaries whose tests hold wall-clock bounds (a quota's pace, a sustained request rate): with
# more than one lane they run alone, after the lanes, so another suite's load cannot push them
# past their bounds.
SOLO = {("flowrt", "endpoints"), ("flowrt", "quotas")}

RESULT = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed", re.M)


def test_binaries():
    """Build every test binary; (package, target, executable, package folder) for each."""
    cmd = ["cargo", "test", "--workspace", "--no-run", "--message-format=json-render-diagnostics"]
    built = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if built.returncode != 0:
        # cargo has printed the compiler's errors on stderr; no test ran.
        sys.exit(f"error: the test binaries did not build (cargo exit {built.returncode}); see the errors above")
    out = built.stdout
    found = []
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg.get("profile", {}).get("test"):
            continue
        name = msg["target"]["name"]
        folder = os.path.dirname(msg["manifest_path"])
        pkg_name = os.path.basename(folder)
        found.append((pkg_name, name, msg["executable"], folder))
    return found


def lanes_for(binaries, count):
    """Longest first, each into the least loaded lane."""
    lanes = [[] for _ in range(count)]
    load = [0] * count
    for b in sorted(binaries, key=lambda b: -KNOWN.get((b[0], b[1]), 1)):
        i = load.index(min(load))
        lanes[i].append(b)
        load[i] += KNOWN.get((b[0], b[1]), 1)
    return lanes


def main():
    args = sys.argv[1:]
    extra = []
    if "--" in args:
        cut = args.index("--")
        args, extra = args[:cut], args[cut + 1:]
    # A lane per two cores, two at least: a story suite keeps its cores busy about 60% of its time
    # (it waits on servers, agents, Ray and promptflow starting), so two suites side by side on
    # 2 cores finished the whole run in 521 s instead of 613 s. Three lanes there slowed each
    # suite 2-2.5x; the suites with wall-clock bounds run alone (SOLO).
    count = max(2, (os.cpu_count() or 2) // 2)
    if os.environ.get("FLOWRT_TEST_LANES"):
        count = max(1, int(os.environ["FLOWRT_TEST_LANES"]))
    if args[:1] == ["--lanes"] and len(args) > 1:
        count = max(1, int(args[1]))
    binaries = test_binaries()
    logs = tempfile.mkdtemp(prefix="flowrt-tests-")
    results = {}
    lock = threading.Lock()
    started = time.monotonic()

    def run_lane(n, lane):
        for pkg, target, exe, folder in lane:
            log = os.path.join(logs, f"{pkg}-{target}.log")
            t0 = time.monotonic()
            with open(log, "w") as f:
                proc = subprocess.Popen([exe] + extra, cwd=folder, stdout=f, stderr=subprocess.STDOUT)
                # wait4 gives the binary's CPU time with every process it started (servers,
                # agents, Python workers): where the suite's time goes on a machine of few cores.
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                code = proc.returncode
            cpu = usage.ru_utime + usage.ru_stime
            text = open(log, errors="replace").read()
            passed = sum(int(m.group(1)) for m in RESULT.finditer(text))
            failed = sum(int(m.group(2)) for m in RESULT.finditer(text))
            took = time.monotonic() - t0
            with lock:
                results[(pkg, target)] = (code, passed, failed, log)
                state = "ok" if code == 0 else f"FAILED (exit {code})"
                print(f"[lane {n}] {pkg} {target}: {state}, {passed} passed, {failed} failed, {took:.1f}s"
                      f" ({cpu:.0f}s CPU)", flush=True)

    solo = [b for b in binaries if count > 1 and (b[0], b[1]) in SOLO]
    shared = [b for b in binaries if b not in solo]
    threads = [threading.Thread(target=run_lane, args=(n + 1, lane)) for n, lane in enumerate(lanes_for(shared, count))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run_lane("solo", solo)
    # Doc tests are not test binaries: rustdoc builds and runs them, after the lanes.
    log = os.path.join(logs, "doc-tests.log")
    with open(log, "w") as f:
        code = subprocess.run(["cargo", "test", "--workspace", "--doc", "--quiet"], stdout=f, stderr=subprocess.STDOUT).returncode
    text = open(log, errors="replace").read()
    results[("workspace", "doc-tests")] = (
        code,
        sum(int(m.group(1)) for m in RESULT.finditer(text)),
        sum(int(m.group(2)) for m in RESULT.finditer(text)),
        log,
    )
    bad = [(k, v) for k, v in sorted(results.items()) if v[0] != 0]
    for (pkg, target), (_, _, _, log) in bad:
        print(f"\n==> output of {pkg} {target} (failed)\n", flush=True)
        sys.stdout.write(open(log, errors="replace").read())
    passed = sum(v[1] for v in results.values())
    failed = sum(v[2] for v in results.values())
    print(f"\ntests ran in {time.monotonic() - started:.0f}s in {count} lanes")
    print(f"{passed} passed, {failed} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
