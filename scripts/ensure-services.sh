#!/usr/bin/env bash
# Makes sure the local PostgreSQL and MariaDB the test suite uses are up; fails loudly if not.
set -u

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
maria_up() {
  if command -v mariadb-admin >/dev/null 2>&1; then
    mariadb-admin -h 127.0.0.1 -P 3306 -u root --connect-timeout=2 ping >/dev/null 2>&1
  else
    mysqladmin -h 127.0.0.1 -P 3306 -u root --connect-timeout=2 ping >/dev/null 2>&1
  fi
}
wait_for() { # name check-function
  for _ in $(seq 1 30); do "$2" && return 0; sleep 1; done
  return 1
}

if ! pg_up; then
  echo "ensure-services: starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >&2 || true
fi
if ! maria_up; then
  echo "ensure-services: starting MariaDB" >&2
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd >&2 || true
fi

ok=0
wait_for postgres pg_up || { echo "ensure-services: ERROR: PostgreSQL is not reachable on 127.0.0.1:5432" >&2; ok=1; }
wait_for mariadb maria_up || { echo "ensure-services: ERROR: MariaDB is not reachable on 127.0.0.1:3306" >&2; ok=1; }
[ "$ok" = 0 ] && echo "ensure-services: PostgreSQL and MariaDB are up" >&2
exit "$ok"
