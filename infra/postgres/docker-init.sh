#!/usr/bin/env bash
# The Postgres image's first start (docker-compose.yml mounts this into
# /docker-entrypoint-initdb.d): each service's own role, as `infra/lockstep-infra up` makes
# them (infra/postgres/service-role.sql). A service's role and password come from its
# LOCKSTEP_PG_DSN_<SERVICE> in .env (never committed), the same variable the service reads:
#   LOCKSTEP_PG_DSN_GATES=postgresql://lockstep_svc_gates:<hex>@127.0.0.1:5432/lockstep?sslmode=disable
# (a password of letters and digits: it is taken from the DSN as written). A service without
# one gets no role, and runs with the administrator's rights (it says so at start-up).
set -euo pipefail

dir="${LOCKSTEP_INIT_DIR:-/lockstep}"  # what docker-compose.yml mounts: services/, postgres/
made=0
for app in "$dir"/services/*/app.py; do
  [[ -f "$app" ]] || continue
  svc="$(basename "$(dirname "$app")")"
  var="LOCKSTEP_PG_DSN_${svc^^}"
  dsn="${!var:-}"
  if [[ -z "$dsn" ]]; then
    echo "[postgres] no $var in .env: no role for $svc (it runs as the administrator)" >&2
    continue
  fi
  login="${dsn#*://}"; login="${login%%@*}"
  user="${login%%:*}"; pw="${login#*:}"
  if [[ "$login" != *:* || -z "$user" || -z "$pw" || ! "$pw" =~ ^[A-Za-z0-9]+$ ]]; then
    echo "[postgres] $var: expected postgresql://<role>:<password of letters and digits>@…" >&2
    exit 1
  fi
  { printf '\\set role %s\n\\set pw %s\n\\set admin %s\n\\set schema %s\n' \
      "$user" "$pw" "$POSTGRES_USER" "${LOCKSTEP_NAMESPACE:-lockstep}_$svc"
    cat "$dir/postgres/service-role.sql"; } \
    | psql -X -q -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB"
  made=$((made + 1))
done
echo "[postgres] $made service roles, each owning its schema"
