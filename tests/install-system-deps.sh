#!/usr/bin/env bash
# Installs the servers the service or the tests start themselves, where they are missing.
# Idempotent. `serve`: PostgreSQL's server binaries only (what `make run` starts). `test`:
# also ZooKeeper with Java (the topology store and Patroni's), the system Python 3 that
# Patroni runs under, Prometheus (promtool and the server the alert tests run), and HAProxy
# and iproute2 (the multi-host run).
set -euo pipefail
role=${1:-test}
need=()
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null 2>&1; then
  need+=(postgresql)
fi
if ! command -v runuser >/dev/null 2>&1; then
  need+=(util-linux)
fi
if [ "$role" = test ]; then
  if [ ! -e /usr/share/java/zookeeper.jar ]; then
    need+=(zookeeper)
  fi
  if ! command -v java >/dev/null 2>&1; then
    need+=(default-jre-headless)
  fi
  if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    need+=(prometheus)  # the alert rules' checks and unit tests, and a real Prometheus (tests/test_alerts.py)
  fi
  if [ ! -x /usr/bin/python3 ]; then
    need+=(python3)  # Patroni's interpreter: the postgres user cannot reach a Python under /root
  fi
  # `wallet chaos multihost` (tests/test_multihost.py): docker/'s balancer, and the network
  # namespaces its services run in
  if [ ! -x /usr/sbin/haproxy ] && ! command -v haproxy >/dev/null 2>&1; then
    need+=(haproxy)
  fi
  if ! command -v ip >/dev/null 2>&1 && [ ! -x /usr/sbin/ip ]; then
    need+=(iproute2)
  fi
fi
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing: ${need[*]}; install them (as root: apt-get install -y ${need[*]})" >&2
    exit 1
  fi
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
fi
