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
# This script made the swarm, so it leaves it whatever `clean` says (printed, not hidden).
trap 'cargo xtask clean || true; docker swarm leave --force >/dev/null && echo "left the swarm"' EXIT

rm -rf target/ci-reports-swarm
cargo xtask scenario quorum-loss leader-failover zone-returns backend-conformance backend-conformance-network \
  partitioned-zone etcd-quorum-loss --backend swarm --report-dir target/ci-reports-swarm --junit target/ci-reports-swarm/junit.xml
CHECK_BACKENDS=swarm CTRL_C_STEP=9 bash scripts/check-cleanup.sh
