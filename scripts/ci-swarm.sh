#!/usr/bin/env bash
# The swarm backend in CI: makes this engine a single-node swarm, runs drills and the backend
# conformance suite on it, checks the cleanup guarantees (Ctrl-C, SIGKILL + `cargo xtask
# clean`), and leaves the swarm again whatever happens. Refuses an engine already in a swarm:
# that swarm is somebody's, not ours to leave.
set -euo pipefail
cd "$(dirname "$0")/.."

state=$(docker info --format '{{.Swarm.LocalNodeState}}')
if [ "$state" != inactive ]; then
  echo "this Docker engine is already in a swarm (state $state): not touching it; run the swarm drills by hand"
  exit 1
fi
cargo build --quiet -p xtask
cargo xtask swarm init
trap 'cargo xtask clean >/dev/null 2>&1 || true; cargo xtask swarm leave' EXIT

rm -rf target/ci-reports-swarm
cargo xtask scenario quorum-loss leader-failover zone-returns backend-conformance backend-conformance-network \
  --backend swarm --report-dir target/ci-reports-swarm --junit target/ci-reports-swarm/junit.xml
CHECK_BACKENDS=swarm bash scripts/check-cleanup.sh
