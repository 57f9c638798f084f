#!/usr/bin/env bash
# Private PostgreSQL and Redis servers for the tests, on 127.0.0.1, in a temporary directory.
#
#   scripts/test-services.sh run CMD [ARG...]   start both, run CMD with the variables below
#                                               set, stop both (also when CMD fails, on Ctrl-C,
#                                               and, through a watchdog, if this script is killed)
#   scripts/test-services.sh start              start both; print `export NAME=value` lines:
#                                               eval "$(scripts/test-services.sh start)"
#   scripts/test-services.sh stop [DIR]         stop what `start` started (DIR defaults to
#                                               $FIRSTREPLY_TEST_SERVICES_DIR) and delete DIR
#
# Variables set for the tests:
#   FIRSTREPLY_TEST_POSTGRES_URL   postgresql://firstreply:<password>@127.0.0.1:<port>/firstreply
#                                  (a superuser: the tests create and drop databases)
#   FIRSTREPLY_TEST_REDIS_URL      redis://:<password>@127.0.0.1:<port>/0
#   FIRSTREPLY_TEST_SERVICES_DIR   the temporary directory (data, logs, pid files)
#
# The servers are throw-away: random passwords, free ports on loopback only, PostgreSQL
# with fsync off and Redis without persistence. PostgreSQL refuses to run as root, so as
# root its commands run as the `postgres` system user (created if missing); as anyone
# else they run as that user. The binaries come from Debian's packages (postgresql,
# redis-server: scripts/install-system-deps.sh installs them).
set -euo pipefail

die() { echo "test-services: $*" >&2; exit 1; }

pg_bindir() {
  local dir
  dir=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n 1 || true)
  if [ -z "$dir" ] && command -v pg_config >/dev/null 2>&1; then dir=$(pg_config --bindir); fi
  if [ -z "$dir" ] && command -v initdb >/dev/null 2>&1; then dir=$(dirname "$(command -v initdb)"); fi
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] ||
    die "PostgreSQL's initdb/pg_ctl not found: run scripts/install-system-deps.sh (Debian package postgresql)"
  echo "$dir"
}

# A TCP port nothing listens on now; the caller retries if someone takes it first.
free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return 0; fi
  done
  die "no free TCP port found on 127.0.0.1"
}

secret() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }

# Run a command as the OS user PostgreSQL runs as (see the header).
# (From /, which that user can always enter, whatever the caller's directory.)
as_pg() {
  if [ "$(id -u)" -ne 0 ]; then "$@"; return; fi
  if command -v runuser >/dev/null 2>&1; then (cd / && runuser -u postgres -- "$@"); return; fi
  (cd / && su -s /bin/sh postgres -c "$(printf '%q ' "$@")")
}

start_postgres() {
  local dir=$1 bin home port password attempt
  bin=$(pg_bindir)
  home="$dir/postgres"
  mkdir -p "$home"
  if [ "$(id -u)" -eq 0 ]; then
    id -u postgres >/dev/null 2>&1 ||
      useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres
    chmod 711 "$dir"
    chown postgres: "$home"
  fi
  chmod 700 "$home"
  password=$(secret)
  (umask 077; printf '%s\n' "$password" >"$home/pwfile")
  [ "$(id -u)" -ne 0 ] || chown postgres: "$home/pwfile"
  as_pg "$bin/initdb" --pgdata "$home/data" --username firstreply --pwfile "$home/pwfile" \
    --auth scram-sha-256 --encoding UTF8 --no-locale --no-sync >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  rm -f "$home/pwfile"
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    # No Unix socket (nothing to clean up, no shared /var/run/postgresql); TCP on
    # loopback only. Durability is not wanted here, speed is.
    if as_pg "$bin/pg_ctl" --pgdata "$home/data" --log "$home/server.log" --wait --timeout 60 --silent \
      -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='' -c max_connections=300 \
-c fsync=off -c synchronous_commit=off -c full_page_writes=off" start >/dev/null; then
      break
    fi
    [ "$attempt" -lt 5 ] || { tail -n 20 "$home/server.log" >&2; die "PostgreSQL did not start"; }
  done
  PGPASSWORD=$password "$bin/createdb" --host 127.0.0.1 --port "$port" --username firstreply firstreply ||
    die "createdb failed"
  echo "$port" >"$dir/postgres.port"
  echo "export FIRSTREPLY_TEST_POSTGRES_URL=postgresql://firstreply:$password@127.0.0.1:$port/firstreply"
}

start_redis() {
  local dir=$1 port password attempt
  command -v redis-server >/dev/null 2>&1 ||
    die "redis-server not found: run scripts/install-system-deps.sh (Debian package redis-server)"
  mkdir -p "$dir/redis"
  password=$(secret)
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    (umask 077; cat >"$dir/redis/redis.conf" <<CONF
bind 127.0.0.1
port $port
protected-mode yes
requirepass $password
daemonize yes
pidfile $dir/redis/redis.pid
logfile $dir/redis/redis.log
dir $dir/redis
save ""
appendonly no
CONF
    )
    redis-server "$dir/redis/redis.conf"
    for _ in $(seq 1 100); do
      if [ "$(REDISCLI_AUTH=$password redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
        echo "export FIRSTREPLY_TEST_REDIS_URL=redis://:$password@127.0.0.1:$port/0"
        return 0
      fi
      [ -s "$dir/redis/redis.pid" ] && ! kill -0 "$(cat "$dir/redis/redis.pid")" 2>/dev/null && break
      sleep 0.1
    done
    stop_redis "$dir"
  done
  tail -n 20 "$dir/redis/redis.log" >&2 || true
  die "Redis did not start"
}

stop_redis() {
  local dir=$1 pid
  [ -s "$dir/redis/redis.pid" ] || return 0
  pid=$(cat "$dir/redis/redis.pid")
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/redis/redis.pid"
}

stop_services() {
  local dir=$1
  [ -d "$dir" ] || return 0
  [ -f "$dir/.firstreply-test-services" ] || die "$dir was not made by this script; not touching it"
  if [ -f "$dir/postgres/data/postmaster.pid" ]; then
    as_pg "$(pg_bindir)/pg_ctl" --pgdata "$dir/postgres/data" --mode fast --wait --silent stop >/dev/null 2>&1 ||
      as_pg "$(pg_bindir)/pg_ctl" --pgdata "$dir/postgres/data" --mode immediate --silent stop >/dev/null 2>&1 || true
  fi
  stop_redis "$dir"
  rm -rf "$dir"
}

start_services() {
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/firstreply-services.XXXXXX")
  touch "$dir/.firstreply-test-services"
  # Nothing half-started is left behind when a step fails.
  trap 'stop_services "$dir"' EXIT
  echo "export FIRSTREPLY_TEST_SERVICES_DIR=$dir"
  start_postgres "$dir"
  start_redis "$dir"
  trap - EXIT
}

case "${1:-}" in
  start)
    start_services
    ;;
  stop)
    dir="${2:-${FIRSTREPLY_TEST_SERVICES_DIR:-}}"
    [ -n "$dir" ] || die "usage: $0 stop DIR (or set FIRSTREPLY_TEST_SERVICES_DIR)"
    stop_services "$dir"
    ;;
  run)
    shift
    [ $# -gt 0 ] || die "usage: $0 run CMD [ARG...]"
    env_lines=$(start_services) || exit 1
    eval "$env_lines"
    dir=$FIRSTREPLY_TEST_SERVICES_DIR
    # If this script is killed outright (no trap runs), the watchdog still stops the servers.
    parent=$$
    (
      trap '' INT TERM HUP
      while kill -0 "$parent" 2>/dev/null; do sleep 2; done
      stop_services "$dir"
    ) </dev/null >/dev/null 2>&1 &
    watchdog=$!
    trap 'kill "$watchdog" 2>/dev/null || true; stop_services "$dir"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    echo "test-services: PostgreSQL and Redis on 127.0.0.1 (data and logs in $dir)"
    status=0
    "$@" || status=$?
    exit "$status"
    ;;
  *)
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac
