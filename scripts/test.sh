#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every crate's tests.
# Installs what the tests need when it is missing: uv (Python environments), Chromium and
# playwright-core (the web UI's tests), PostgreSQL (the store's second backend), Ray (the Ray
# backend's test), promptflow-devkit and -tools (trace viewer, side-by-side) and Arize Phoenix.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v uv >/dev/null 2>&1 && ! python3 -m uv --version >/dev/null 2>&1 && [ ! -x "$HOME/.local/bin/uv" ]; then
  echo "==> installing uv (pip --user)"
  python3 -m pip install --quiet --user uv
fi

# The web UI's end-to-end tests drive Debian's Chromium with playwright-core (pinned in
# crates/flowrt/tests/ui/package-lock.json); browsers are never downloaded by npm.
if [ ! -x /usr/bin/chromium ]; then
  echo "==> installing chromium (apt-get)"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update && apt-get install -y chromium
  else
    sudo apt-get update && sudo apt-get install -y chromium
  fi
fi
if [ ! -d crates/flowrt/tests/ui/node_modules/playwright-core ]; then
  echo "==> installing playwright-core (npm ci)"
  (cd crates/flowrt/tests/ui && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

# The store's tests, and the server's on Postgres, run against a throwaway PostgreSQL on
# 127.0.0.1 (installed with apt-get when missing, started in a temp folder).
if [ -z "${FLOWRT_TEST_POSTGRES:-}" ]; then
  echo "==> starting PostgreSQL for the tests"
  FLOWRT_TEST_POSTGRES=$(./scripts/postgres.sh)
  export FLOWRT_TEST_POSTGRES
fi

# The Ray backend's test starts a real two-node Ray cluster (in a network namespace of its own):
# Ray goes into a venv of its own, once.
ray_venv=${FLOWRT_RAY_VENV:-$HOME/.cache/flowrt/ray-venv}
if [ -z "${FLOWRT_TEST_RAY:-}" ]; then
  if [ ! -x "$ray_venv/bin/ray" ]; then
    echo "==> installing ray[default] into $ray_venv (pip)"
    mkdir -p "$(dirname "$ray_venv")"
    python3 -m venv "$ray_venv"
    "$ray_venv/bin/pip" install --quiet "ray[default]==2.60.0"
  fi
  export FLOWRT_TEST_RAY="$ray_venv"
fi

# The tracing tests show flowrt's spans in promptflow's own trace viewer (`pf service start`),
# and the side-by-side test runs the compat fixtures under promptflow itself: promptflow-devkit
# and promptflow-tools go into a venv of its own, once ...
pf_venv=${FLOWRT_PF_VENV:-$HOME/.cache/flowrt/pf-venv}
if [ -z "${FLOWRT_TEST_PF_VENV:-}" ]; then
  if [ ! -x "$pf_venv/bin/pf" ] || ! "$pf_venv/bin/python" -c "import promptflow.tools" 2>/dev/null; then
    echo "==> installing promptflow-devkit 1.18.5 and promptflow-tools into $pf_venv (pip)"
    mkdir -p "$(dirname "$pf_venv")"
    [ -x "$pf_venv/bin/python" ] || python3 -m venv "$pf_venv"
    # promptflow itself is pinned too: promptflow-tools needs `promptflow`, and left free pip's
    # resolver now backtracks through older releases into a conflict with devkit 1.18.5.
    "$pf_venv/bin/pip" install --quiet "promptflow==1.18.5" "promptflow-devkit==1.18.5" "promptflow-tools==1.6.1" keyrings.alt
  fi
  export FLOWRT_TEST_PF_VENV="$pf_venv"
fi
# ... and Arize Phoenix, a second viewer with a UI and an API of its own.
phoenix_venv=${FLOWRT_PHOENIX_VENV:-$HOME/.cache/flowrt/phoenix-venv}
if [ -z "${FLOWRT_TEST_PHOENIX_VENV:-}" ]; then
  if [ ! -x "$phoenix_venv/bin/phoenix" ]; then
    echo "==> installing arize-phoenix into $phoenix_venv (pip)"
    mkdir -p "$(dirname "$phoenix_venv")"
    python3 -m venv "$phoenix_venv"
    "$phoenix_venv/bin/pip" install --quiet "arize-phoenix==20.26.1"
  fi
  export FLOWRT_TEST_PHOENIX_VENV="$phoenix_venv"
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# A python3 behind a version manager's shim (pyenv) runs a bash pipeline of ~40 processes at each
# start, ~0.15 s of CPU: the suite starts python3 several hundred times (each server, agent and
# CLI run asks its version). The tests run the interpreter the shim resolves to here, put first
# on PATH alone (no other tool moves).
real_python=$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')
if [ "$(realpath "$(command -v python3)")" != "$real_python" ]; then
  mkdir -p target/test-path
  ln -sf "$real_python" target/test-path/python3
  export PATH="$PWD/target/test-path:$PATH"
fi
echo "==> cargo test (every test binary; side by side on machines with the cores: scripts/run_tests.py)"
exec python3 scripts/run_tests.py
