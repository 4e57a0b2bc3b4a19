#!/usr/bin/env bash
# System packages the tests and runbooks need: PostgreSQL 15 server binaries, pgBackRest, Node.js.
# Installs them with apt when run as root (CI is); otherwise says what to install.
set -euo pipefail

need=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15 postgresql-client-15)
command -v pgbackrest >/dev/null 2>&1 || need+=(pgbackrest)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]}; install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The server package must not start a cluster of its own: the tests start theirs.
mkdir -p /etc/postgresql-common
grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf \
  || echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
apt-get install -y -qq --no-install-recommends "${need[@]}"
