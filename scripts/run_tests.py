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
import shutil
import subprocess
import sys
import tempfile
import threading
import time

# Seconds each long binary took in a lane beside another on a 2-core machine (package,
# target): the order lanes are filled in. Anything not listed counts as short.
KNOWN = {
    ("flowrt", "ray"): 138,
    ("flowrt", "sessions"): 89,
    ("flowrt", "trace_viewers"): 67,
    ("flowrt", "ui"): 66,
    ("flowrt", "quotas"): 38,
    ("flowrt", "compat"): 33,
    ("flowrt", "batch"): 33,
    ("flowrt", "endpoints"): 31,
    ("flowrt-server", "router"): 11,
    ("flowrt", "servers"): 10,
    ("flowrt", "flex"): 10,
    ("flowrt", "cli"): 7,
    ("flowrt", "tracing"): 6,
    ("flowrt-python", "session_env"): 6,
}

# Binaries whose tests hold wall-clock bounds (a quota's pace, a sustained request rate): with
# more than one lane they run alone, after the lanes, so another suite's load cannot push them
# past their bounds.
SOLO = {("flowrt", "endpoints"), ("flowrt", "quotas")}

# The marker flowrt writes into a base environment once it is built (crates/flowrt-python).
BASE_READY = ".flowrt-ready"


class Scratch:
    """The tests' temporary folders (TMPDIR) and machine cache (XDG_CACHE_HOME) on a tmpfs of
    their own, when this user may mount one (root; FLOWRT_TEST_SCRATCH=0 turns it off).

    Most of the suite's homes get the base environment as ~1,000 folders of hard links and are
    removed a minute later. On an ext4 file system without a journal, as this project's 2-core
    machines have, each new inode is then found by stepping over recently deleted ones: the
    sessions suite spent 60% of its servers' CPU in the kernel's inode allocator (107 s against
    71 s on a tmpfs). The base environments this machine has built are copied in (under a
    second) so homes link them on the same file system, and one the tests built is copied back
    out, so the next run has it. uv's and pip's caches stay where they are."""

    def __init__(self):
        self.root = None
        self.real_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")

    def __enter__(self):
        if os.environ.get("FLOWRT_TEST_SCRATCH") == "0" or not sys.platform.startswith("linux") \
                or os.geteuid() != 0:
            return self
        # A short path: Ray's and the agents' Unix sockets live under TMPDIR (108 bytes at most).
        root = tempfile.mkdtemp(prefix="frt-", dir="/tmp")
        size = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=1777", "tmpfs", root],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if mounted.returncode != 0:
            print(f"note: the tests' temporary folders stay on disk (mount: {mounted.stderr.strip()})", flush=True)
            os.rmdir(root)
            return self
        self.root = root
        cache = os.path.join(root, ".cache")
        for name, value in (("UV_CACHE_DIR", "uv"), ("PIP_CACHE_DIR", "pip")):
            os.environ.setdefault(name, os.path.join(self.real_cache, value))
        self.copy_bases(os.path.join(self.real_cache, "flowrt", "base-envs"),
                        os.path.join(cache, "flowrt", "base-envs"))
        os.environ["XDG_CACHE_HOME"] = cache
        os.environ["TMPDIR"] = root
        print(f"==> the tests' temporary folders and base environments: a tmpfs at {root}", flush=True)
        return self

    def __exit__(self, *exc):
        if self.root is None:
            return
        os.environ["XDG_CACHE_HOME"] = self.real_cache
        self.copy_bases(os.path.join(self.root, ".cache", "flowrt", "base-envs"),
                        os.path.join(self.real_cache, "flowrt", "base-envs"))
        # A process the tests left behind may still hold a file there: detach it anyway.
        if subprocess.run(["umount", self.root], stderr=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["umount", "-l", self.root], stderr=subprocess.DEVNULL)
        try:
            os.rmdir(self.root)
        except OSError:
            pass

    @staticmethod
    def copy_bases(src, dst):
        """Copy each built base environment in `src` that `dst` lacks, its scripts' paths made
        `dst`'s (a venv's scripts name their folder)."""
        if not os.path.isdir(src):
            return
        os.makedirs(dst, exist_ok=True)
        for key in os.listdir(src):
            frm, to = os.path.join(src, key), os.path.join(dst, key)
            if not os.path.isfile(os.path.join(frm, BASE_READY)) or os.path.exists(to):
                continue
            partial = to + ".copying"
            shutil.rmtree(partial, ignore_errors=True)
            if subprocess.run(["cp", "-a", frm, partial]).returncode != 0:
                shutil.rmtree(partial, ignore_errors=True)
                continue
            bin_dir = os.path.join(partial, "bin")
            for name in os.listdir(bin_dir):
                path = os.path.join(bin_dir, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                with open(path, "rb") as f:
                    data = f.read()
                if frm.encode() in data:
                    with open(path, "wb") as f:
                        f.write(data.replace(frm.encode(), to.encode()))
            os.rename(partial, to)


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
    with Scratch():
        return run(binaries, count, extra, logs)


def run(binaries, count, extra, logs):
    """Run `binaries` in `count` lanes (and the solo ones after), print the summary; the exit code."""
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
