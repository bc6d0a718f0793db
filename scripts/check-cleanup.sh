#!/usr/bin/env bash
# Checks the runner's cleanup guarantee against a real Docker engine and on the local backend:
#  1. Ctrl-C (SIGINT to the process group) mid-scenario: the runner tears the cluster down itself.
#  2. SIGKILL mid-scenario leaves resources; `cargo xtask clean` removes every one of them.
# Exits non-zero, saying what was left, if anything survives.
set -euo pipefail
cd "$(dirname "$0")/.."

leftovers() {
  local n=0
  if docker info >/dev/null 2>&1; then
    n=$(( $(docker ps -aq --filter label=com.docker.compose.project | xargs -r docker inspect --format '{{index .Config.Labels "com.docker.compose.project"}}' | grep -c '^xpchaos' || true) ))
    n=$(( n + $(docker network ls -q --filter label=com.docker.compose.project | xargs -r docker network inspect --format '{{index .Labels "com.docker.compose.project"}}' | grep -c '^xpchaos' || true) ))
    n=$(( n + $(docker volume ls -q --filter label=com.docker.compose.project | xargs -r docker volume inspect --format '{{index .Labels "com.docker.compose.project"}}' | grep -c '^xpchaos' || true) ))
    if [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ]; then
      n=$(( n + $(docker service ls -q --filter label=com.docker.compose.project | xargs -r docker service inspect --format '{{index .Spec.Labels "com.docker.compose.project"}}' | grep -c '^xpchaos' || true) ))
      n=$(( n + $(docker secret ls -q --filter label=com.docker.compose.project | xargs -r docker secret inspect --format '{{index .Spec.Labels "com.docker.compose.project"}}' | grep -c '^xpchaos' || true) ))
    fi
  fi
  n=$(( n + $(pgrep -fc 'target/xp-chaos-local' || true) ))
  # A docker run's env files and certificates (keys!) go with the run.
  n=$(( n + $(find target/xp-chaos-docker -mindepth 1 -maxdepth 1 2>/dev/null | wc -l) ))
  echo "$n"
}

# Starts a scenario in its own process group; waits until `$2` steps have printed.
start_run() {
  local backend=$1 steps=$2 log=$3
  setsid cargo xtask scenario quorum-loss --backend "$backend" >"$log" 2>&1 &
  RUN_PID=$!
  for _ in $(seq 1 600); do
    if grep -q "^\[ *$steps/" "$log"; then return 0; fi
    if ! kill -0 "$RUN_PID" 2>/dev/null; then echo "run ended early:"; cat "$log"; exit 1; fi
    sleep 0.2
  done
  echo "timed out waiting for step $steps:"; cat "$log"; exit 1
}

cargo build --quiet -p xtask -p xp -p xp-ops
cargo xtask clean >/dev/null
log=$(mktemp)
# CHECK_BACKENDS="swarm" (scripts/ci-swarm.sh) checks the swarm backend; by default local and,
# when an engine answers, docker. CTRL_C_STEP: the step of quorum-loss that Ctrl-C lands in
# (default 6, a sleep with the workload running; 9 is the wipe, a one-off).
if [ -n "${CHECK_BACKENDS:-}" ]; then
  read -r -a backends <<<"$CHECK_BACKENDS"
else
  backends=(local)
  docker info >/dev/null 2>&1 && backends+=(docker)
fi

for b in "${backends[@]}"; do
  echo "== $b: Ctrl-C mid-scenario (as step ${CTRL_C_STEP:-6} starts)"
  start_run "$b" "${CTRL_C_STEP:-6}" "$log"
  kill -INT -- "-$RUN_PID"
  rc=0; wait "$RUN_PID" || rc=$?
  left=$(leftovers)
  echo "   runner exit code $rc, leftovers: $left"
  grep -q "interrupted by Ctrl-C: tearing the cluster down" "$log" || { cat "$log"; echo "no teardown message"; exit 1; }
  [ "$rc" = 130 ] || { cat "$log"; echo "expected exit code 130"; exit 1; }
  [ "$left" = 0 ] || { echo "FAIL: Ctrl-C left $left resources"; exit 1; }

  echo "== $b: SIGKILL mid-scenario, then cargo xtask clean"
  start_run "$b" 6 "$log"
  kill -KILL "$RUN_PID"   # the runner only, as the OOM killer would
  wait "$RUN_PID" || true
  before=$(leftovers)
  echo "   after SIGKILL: $before leftovers (expected some)"
  [ "$before" -gt 0 ] || { echo "FAIL: a killed run left nothing, so this check checks nothing"; exit 1; }
  cargo xtask clean
  after=$(leftovers)
  [ "$after" = 0 ] || { echo "FAIL: cargo xtask clean left $after resources"; exit 1; }
  echo "   after clean: 0 leftovers"
done
echo "cleanup checks passed (${backends[*]})"
