#!/usr/bin/env bash
# Installs what the etcd-3 profile's image is built from: Debian's etcd 3.4 (server and
# client) and a static busybox. Idempotent: does nothing when they are already there.
set -euo pipefail
need=()
[ -x /usr/bin/etcd ] || need+=(etcd-server)
[ -x /usr/bin/etcdctl ] || need+=(etcd-client)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (for the etcd-3 profile)"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -yq --no-install-recommends "${need[@]}"
fi
/usr/bin/etcd --version
