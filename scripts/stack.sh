#!/usr/bin/env bash
# StoreLens infrastructure the project starts itself, all on the loopback, all state in .stack/:
#   Kafka 4.x single node in KRaft mode  127.0.0.1:19092 (controller 127.0.0.1:19093)
#   PostgreSQL (project-local cluster)   127.0.0.1:15432  user/password/db storelens
#   Redis                                127.0.0.1:16379
#
# usage: scripts/stack.sh up|down|start|stop|restart|status|env [kafka|postgres|redis ...]
#   up|start   start what is not running yet (idempotent), then wait until each server answers
#   down|stop  stop what up started (SIGTERM, wait, then SIGKILL)
#   restart    stop then start, keeping the data (e.g. `restart kafka` mid-stream)
#   status     one line per server; exit code 3 if any of them is not running
#   env        `export STORELENS_...=...` lines, for: eval "$(scripts/stack.sh env)"
# With no server named, all three. `rm -rf .stack` (with the stack down) resets everything.
set -euo pipefail
umask 022

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
INFRA=$ROOT/infra
STACK=$ROOT/.stack

KAFKA_PORT=19092
KAFKA_CONTROLLER_PORT=19093
PG_PORT=15432
REDIS_PORT=16379
KAFKA_READY_TIMEOUT=${STORELENS_KAFKA_READY_TIMEOUT:-90}
KAFKA_STOP_TIMEOUT=60
PG_TIMEOUT=60
REDIS_TIMEOUT=30

KAFKA_DIR=$STACK/kafka
KAFKA_LIBS=$INFRA/kafka/target/libs
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}
PG_DIR=$STACK/pg
PG_DATA=$PG_DIR/data
PG_LOG=$PG_DIR/postgres.log
REDIS_DIR=$STACK/redis

log() { printf '[stack] %s\n' "$*"; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }
rel() { printf '%s' "${1#"$ROOT"/}"; }

# show_log FILE [FROM-LINE]: the last 40 lines of a log (from line FROM-LINE on), to stderr.
show_log() {
  local f=$1 from=${2:-1}
  if [[ -s $f ]] && (($(wc -l <"$f") >= from)); then
    printf '[stack] ---- last 40 lines of %s ----\n' "$(rel "$f")" >&2
    tail -n "+$from" "$f" | tail -n 40 >&2
    printf '[stack] ----\n' >&2
  fi
}
log_lines() { if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_alive PID PATTERN: the process exists and its command line contains PATTERN
# (guards against a stale pid file whose pid was reused).
pid_alive() {
  local pid=$1 pattern=$2 cmd
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ $cmd == *"$pattern"* ]]
}

# stop_pid NAME PID PATTERN TIMEOUT [SIGNAL]: SIGTERM (or SIGNAL), wait up to TIMEOUT s, then SIGKILL.
stop_pid() {
  local name=$1 pid=$2 pattern=$3 timeout=$4 sig=${5:-TERM} t0=$SECONDS
  kill -"$sig" "$pid" 2>/dev/null || true
  while pid_alive "$pid" "$pattern"; do
    if ((SECONDS - t0 >= timeout)); then
      log "$name: still running after ${timeout}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      local t1=$SECONDS
      while pid_alive "$pid" "$pattern" && ((SECONDS - t1 < 15)); do sleep 0.2; done
      pid_alive "$pid" "$pattern" && die "$name: pid $pid survived SIGKILL"
      return 0
    fi
    sleep 0.2
  done
}

# ---------------------------------------------------------------- another checkout's stack
# The ports are fixed, so two checkouts cannot both run a stack. When `up` finds a port held by a
# server that scripts/stack.sh of ANOTHER checkout started (e.g. a CI clone next to a developer's
# tree), or one of ours whose .stack was removed while it ran, it stops that server and starts its
# own; STORELENS_STACK_TAKEOVER=0 makes it refuse instead.
# other_stack_pid kafka|postgres|redis: the pid of such a server, recognised by command and cwd.
other_stack_pid() {
  local svc=$1 p cmd cwd own
  for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    cwd=$(readlink "$p/cwd" 2>/dev/null) || continue
    case $svc in
      kafka) own=$KAFKA_DIR; [[ $cmd == *" kafka.Kafka "*/.stack/kafka/server.properties* ]] ;;
      postgres) own=$PG_DATA; [[ $cmd == */bin/postgres\ -D\ *"-c port=$PG_PORT "* ]] ;;
      redis) own=$REDIS_DIR; [[ $cmd == "redis-server 127.0.0.1:$REDIS_PORT"* ]] ;;
    esac || continue
    [[ $cwd == *" (deleted)" ]] || [[ $cwd != "$own" ]] || continue
    cwd=${cwd% (deleted)}
    case $svc in
      kafka) [[ $cwd == */.stack/kafka ]] ;;
      postgres) [[ $cwd == */pg/data ]] ;;
      redis) [[ $cwd == */.stack/redis ]] ;;
    esac && { printf '%s' "${p#/proc/}"; return 0; }
  done
  return 1
}

# free_port SERVICE PORT: fail unless the port is free, after stopping another checkout's server.
free_port() {
  local svc=$1 port=$2 pid pattern sig=TERM t0=$SECONDS
  port_open "$port" || return 0
  if pid=$(other_stack_pid "$svc") && [[ ${STORELENS_STACK_TAKEOVER:-1} != 0 ]]; then
    log "$svc: port $port is held by pid $pid of another stack ($(readlink "/proc/$pid/cwd")); stopping it"
    case $svc in
      kafka) pattern=kafka.Kafka ;;
      postgres) pattern=postgres; sig=INT ;;   # SIGINT: PostgreSQL's fast (clean) shutdown
      redis) pattern=redis-server ;;
    esac
    stop_pid "$svc" "$pid" "$pattern" 60 "$sig"
    while port_open "$port"; do
      ((SECONDS - t0 < 70)) || break
      sleep 0.2
    done
  fi
  ! port_open "$port" || die "$svc: port $port is in use by a process this script did not start"
}

# ---------------------------------------------------------------- packages
# ensure_pkgs "CHECK-COMMAND|PACKAGE..." ...: installs the packages of each check that fails.
ensure_pkgs() {
  local missing=() spec check
  for spec in "$@"; do
    check=${spec%%|*}
    if ! eval "$check" >/dev/null 2>&1; then
      # shellcheck disable=SC2206
      missing+=(${spec#*|})
    fi
  done
  ((${#missing[@]})) || return 0
  [[ $EUID -eq 0 ]] || die "missing packages: ${missing[*]} (sudo apt-get install -y ${missing[*]})"
  local apt_log=$STACK/apt.log created_policy=0 rc=0
  log "apt: installing ${missing[*]}"
  # Do not let the packages start their system-wide services (we run our own servers).
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && created_policy=1
  fi
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
  if ! "${apt[@]}" install -y -q "${missing[@]}" >"$apt_log" 2>&1; then
    log "apt: install failed, running apt-get update and retrying"
    { "${apt[@]}" update -q && "${apt[@]}" install -y -q "${missing[@]}"; } >>"$apt_log" 2>&1 || rc=$?
  fi
  ((created_policy)) && rm -f /usr/sbin/policy-rc.d
  if ((rc)); then show_log "$apt_log"; die "apt: could not install ${missing[*]}"; fi
  log "apt: installed ${missing[*]}"
}

# ---------------------------------------------------------------- kafka
kafka_pid() {
  local pid
  pid=$(cat "$KAFKA_DIR/kafka.pid" 2>/dev/null) || return 1
  pid_alive "$pid" kafka.Kafka && printf '%s' "$pid"
}

kafka_java() {
  java -Djava.awt.headless=true \
    -Dkafka.logs.dir="$KAFKA_DIR/logs" \
    -Dlog4j2.configurationFile="$INFRA/kafka/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" "$@"
}

# Resolve the broker's jars from Maven Central, once per version of infra/kafka/pom.xml.
kafka_jars() {
  local stamp=$KAFKA_LIBS/.resolved want
  want=$(sha1sum "$INFRA/kafka/pom.xml" | cut -c1-40)
  [[ -f $stamp && $(cat "$stamp") == "$want" ]] && return 0
  ensure_pkgs "command -v java|openjdk-17-jre-headless" "command -v mvn|maven"
  log "kafka: resolving jars with Maven (infra/kafka/pom.xml -> $(rel "$KAFKA_LIBS"))"
  local t0=$SECONDS try mvn_log=$KAFKA_DIR/maven.log
  rm -rf "$KAFKA_LIBS"
  mkdir -p "$KAFKA_DIR"
  for try in 1 2 3; do
    if (cd "$INFRA/kafka" && mvn -B -q -Dmaven.wagon.http.retryHandler.count=3 \
          dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=target/libs) \
          >"$mvn_log" 2>&1; then
      echo "$want" >"$stamp"
      log "kafka: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars resolved in $((SECONDS - t0))s"
      return 0
    fi
    log "kafka: Maven failed (try $try of 3)"
    sleep $((try * 5))
  done
  show_log "$mvn_log"
  die "kafka: could not resolve the jars with Maven"
}

kafka_render_config() {
  mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
  sed "s|@KAFKA_DATA_DIR@|$KAFKA_DIR/data|g" "$INFRA/kafka/server.properties" >"$KAFKA_DIR/server.properties"
}

# Format the KRaft storage once (a single-node dynamic quorum: --standalone).
kafka_format() {
  [[ -f $KAFKA_DIR/data/meta.properties ]] && return 0
  if [[ ! -s $KAFKA_DIR/cluster.id ]]; then
    kafka_java kafka.tools.StorageTool random-uuid 2>"$KAFKA_DIR/format.log" | tr -d '[:space:]' >"$KAFKA_DIR/cluster.id.tmp" ||
      { show_log "$KAFKA_DIR/format.log"; die "kafka: could not generate a cluster id"; }
    mv "$KAFKA_DIR/cluster.id.tmp" "$KAFKA_DIR/cluster.id"
  fi
  local id
  id=$(cat "$KAFKA_DIR/cluster.id")
  log "kafka: formatting storage (cluster id $id) in $(rel "$KAFKA_DIR/data")"
  kafka_java kafka.tools.StorageTool format --standalone -t "$id" -c "$KAFKA_DIR/server.properties" \
    >>"$KAFKA_DIR/format.log" 2>&1 || { show_log "$KAFKA_DIR/format.log"; die "kafka: storage format failed"; }
}

kafka_start() {
  local pid
  if pid=$(kafka_pid); then
    log "kafka: already running (pid $pid)"
    return 0
  fi
  free_port kafka "$KAFKA_PORT"
  free_port kafka "$KAFKA_CONTROLLER_PORT"
  kafka_jars
  kafka_render_config
  kafka_format
  rm -f "$KAFKA_DIR/kafka.pid"
  KAFKA_LOG_FROM=$(($(log_lines "$KAFKA_DIR/logs/server.log") + 1))
  log "kafka: starting broker+controller on 127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT)"
  # Detached (own session, no terminal, lock fd closed); the launcher records its pid, then execs java.
  # shellcheck disable=SC2016,SC2086
  setsid bash -c 'cd "$0" && echo $$ >"$1" && shift && exec "$@"' "$KAFKA_DIR" "$KAFKA_DIR/kafka.pid" \
    java $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
      -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
      -Dkafka.logs.dir="$KAFKA_DIR/logs" -Dlog4j2.configurationFile="$INFRA/kafka/log4j2.properties" \
      -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
    </dev/null >"$KAFKA_DIR/kafka.out" 2>&1 9>&- &
  local t0=$SECONDS
  until [[ -s $KAFKA_DIR/kafka.pid ]]; do
    ((SECONDS - t0 < 10)) || die "kafka: the launcher did not write its pid"
    sleep 0.1
  done
}

# A Python with aiokafka for the ready-check (the project's venv), if there is one.
kafka_probe_python() {
  local py
  for py in "${STORELENS_PYTHON:-}" "$ROOT/.venv/bin/python" python3; do
    [[ -n $py ]] && command -v "$py" >/dev/null 2>&1 && "$py" -c 'import aiokafka' 2>/dev/null &&
      { printf '%s' "$py"; return 0; }
  done
  return 1
}

kafka_probe() {
  if [[ -n ${KAFKA_PY:-} ]]; then
    "$KAFKA_PY" - "$KAFKA_PORT" 2>/dev/null <<'EOF'
import asyncio
import sys

from aiokafka.admin import AIOKafkaAdminClient


async def brokers() -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers="127.0.0.1:" + sys.argv[1], request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), 3)
        return len((await asyncio.wait_for(admin.describe_cluster(), 3))["brokers"])
    finally:
        await admin.close()

sys.exit(0 if asyncio.run(brokers()) else 1)
EOF
  else
    # (no pipe into grep -q: with pipefail, an early exit of grep could read as a failure)
    awk -v from="${KAFKA_LOG_FROM:-1}" 'NR >= from && /Kafka Server started/ { found = 1; exit }
      END { exit !found }' "$KAFKA_DIR/logs/server.log" 2>/dev/null && port_open "$KAFKA_PORT"
  fi
}

kafka_wait() {
  local t0=$SECONDS pid how
  KAFKA_PY=$(kafka_probe_python) || KAFKA_PY=
  how=${KAFKA_PY:+aiokafka describe_cluster}
  while :; do
    if ! pid=$(kafka_pid); then
      show_log "$KAFKA_DIR/logs/server.log" "${KAFKA_LOG_FROM:-1}"; show_log "$KAFKA_DIR/kafka.out"
      die "kafka: the broker exited during start-up"
    fi
    kafka_probe && break
    if ((SECONDS - t0 >= KAFKA_READY_TIMEOUT)); then
      show_log "$KAFKA_DIR/logs/server.log" "${KAFKA_LOG_FROM:-1}"; show_log "$KAFKA_DIR/kafka.out"
      die "kafka: no answer on 127.0.0.1:$KAFKA_PORT after ${KAFKA_READY_TIMEOUT}s"
    fi
    sleep 1
  done
  log "kafka: ready on 127.0.0.1:$KAFKA_PORT (pid $pid, checked with ${how:-its log and port})"
}

kafka_stop() {
  local pid
  if ! pid=$(kafka_pid); then
    log "kafka: not running"
    rm -f "$KAFKA_DIR/kafka.pid"
    return 0
  fi
  log "kafka: stopping (pid $pid)"
  local t0=$SECONDS
  stop_pid kafka "$pid" kafka.Kafka "$KAFKA_STOP_TIMEOUT"
  rm -f "$KAFKA_DIR/kafka.pid"
  log "kafka: stopped in $((SECONDS - t0))s"
}

kafka_status() {
  local pid
  if pid=$(kafka_pid); then
    echo "kafka     running  pid $pid  127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT)  log $(rel "$KAFKA_DIR/logs/server.log")"
  elif port_open "$KAFKA_PORT"; then
    echo "kafka     not ours  port $KAFKA_PORT is in use by another process"; return 1
  else
    echo "kafka     stopped"; return 1
  fi
}

# ---------------------------------------------------------------- postgres
pg_bin() {
  local v bin
  if [[ -f $PG_DATA/PG_VERSION ]]; then
    v=$(cat "$PG_DATA/PG_VERSION")
    [[ -x /usr/lib/postgresql/$v/bin/postgres ]] && { printf '%s' "/usr/lib/postgresql/$v/bin"; return 0; }
    die "postgres: .stack/pg/data was made by PostgreSQL $v, which is not installed (rm -rf .stack/pg to start over)"
  fi
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [[ -n $bin && -x $bin/initdb ]] || die "postgres: no /usr/lib/postgresql/*/bin/initdb"
  printf '%s' "$bin"
}

# Run a command as the cluster's owner: PostgreSQL refuses to run as root.
as_pg() {
  if [[ $EUID -eq 0 ]]; then
    (cd "$PG_DIR" && runuser -u postgres -- "$@")
  else
    (cd "$PG_DIR" && "$@")
  fi
}

pg_pid() {
  local pid
  pid=$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null) || return 1
  pid_alive "$pid" postgres && printf '%s' "$pid"
}

# .stack/pg owned by the postgres user. If that user cannot reach the checkout (e.g. a clone
# under /root), the cluster lives in /var/tmp and .stack/pg links to it.
pg_prepare_dir() {
  mkdir -p "$STACK"
  chmod o+x "$STACK"
  if [[ ! -e $PG_DIR ]]; then
    mkdir -p "$PG_DIR"
    if [[ $EUID -eq 0 ]]; then
      getent passwd postgres >/dev/null || die "postgres: no 'postgres' OS user (reinstall the postgresql package)"
      chown postgres:postgres "$PG_DIR"
      if ! runuser -u postgres -- test -w "$PG_DIR" 2>/dev/null; then
        local ext
        ext=/var/tmp/storelens-stack-$(printf '%s' "$ROOT" | sha1sum | cut -c1-12)/pg
        log "postgres: the postgres user cannot reach $(rel "$PG_DIR"); keeping the cluster in $ext (linked)"
        rmdir "$PG_DIR"
        rm -rf "$ext"
        mkdir -p "$ext"
        chmod 755 "$(dirname "$ext")"
        chown postgres:postgres "$ext"
        ln -s "$ext" "$PG_DIR"
      fi
    fi
  fi
  pg_resolve
  mkdir -p "$PG_DIR/run"
  [[ $EUID -eq 0 ]] && chown postgres:postgres "$PG_DIR" "$PG_DIR/run"
  return 0
}

# Paths handed to the postgres user go around the link, if .stack/pg is one.
pg_resolve() {
  if [[ -L $PG_DIR ]]; then
    PG_DIR=$(readlink -f "$PG_DIR")
    PG_DATA=$PG_DIR/data
    PG_LOG=$PG_DIR/postgres.log
  fi
}

pg_init() {
  [[ -f $PG_DATA/PG_VERSION ]] && return 0
  local bin=$1 pwfile=$PG_DIR/.pwfile
  log "postgres: initdb into $(rel "$PG_DATA") (superuser storelens)"
  rm -rf "$PG_DATA"
  printf 'storelens\n' >"$pwfile"
  [[ $EUID -eq 0 ]] && chown postgres:postgres "$pwfile"
  chmod 600 "$pwfile"
  if ! as_pg "$bin/initdb" -D "$PG_DATA" -U storelens --pwfile="$pwfile" -E UTF8 --locale=C \
      --auth-local=trust --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1; then
    rm -f "$pwfile"
    show_log "$PG_DIR/initdb.log"
    die "postgres: initdb failed"
  fi
  rm -f "$pwfile"
  printf "\n# StoreLens settings (scripts/stack.sh copies infra/postgres/storelens.conf here)\ninclude_if_exists = 'storelens.conf'\n" \
    >>"$PG_DATA/postgresql.conf"
}

pg_start() {
  local pid bin
  pg_prepare_dir
  bin=$(pg_bin)
  if pid=$(pg_pid); then
    log "postgres: already running (pid $pid)"
    return 0
  fi
  free_port postgres "$PG_PORT"
  pg_init "$bin"
  cp "$INFRA/postgres/storelens.conf" "$PG_DATA/storelens.conf"
  [[ $EUID -eq 0 ]] && chown postgres:postgres "$PG_DATA/storelens.conf"
  # Unix socket inside .stack/pg when the path fits in a socket address, else TCP only.
  local sock=$PG_DIR/run
  ((${#sock} + 16 < 100)) || sock=
  PG_LOG_FROM=$(($(log_lines "$PG_LOG") + 1))
  log "postgres: starting $(basename "$(dirname "$bin")") on 127.0.0.1:$PG_PORT"
  if ! as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$PG_TIMEOUT" -s \
      -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories='$sock'" start 9>&-; then
    show_log "$PG_LOG" "$PG_LOG_FROM"
    die "postgres: pg_ctl start failed"
  fi
}

pg_wait() {
  local bin t0=$SECONDS
  bin=$(pg_bin)
  until "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2; do
    if ((SECONDS - t0 >= PG_TIMEOUT)); then
      show_log "$PG_LOG" "${PG_LOG_FROM:-1}"
      die "postgres: no answer on 127.0.0.1:$PG_PORT after ${PG_TIMEOUT}s"
    fi
    sleep 0.5
  done
  local psql=("$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U storelens)
  if [[ $(PGPASSWORD=storelens "${psql[@]}" -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'storelens'") != 1 ]]; then
    log "postgres: creating database storelens"
    PGPASSWORD=storelens "${psql[@]}" -d postgres -c 'CREATE DATABASE storelens OWNER storelens' >/dev/null ||
      { show_log "$PG_LOG"; die "postgres: could not create the database"; }
  fi
  log "postgres: ready on 127.0.0.1:$PG_PORT (pid $(pg_pid), database storelens)"
}

pg_stop() {
  local pid bin
  pg_resolve
  if ! pid=$(pg_pid); then
    log "postgres: not running"
    return 0
  fi
  bin=$(pg_bin)
  log "postgres: stopping (pid $pid)"
  local t0=$SECONDS
  # pg_ctl's fast mode is PostgreSQL's clean shutdown (SIGINT: roll back sessions, checkpoint).
  if ! as_pg "$bin/pg_ctl" -D "$PG_DATA" -w -t "$PG_TIMEOUT" -s -m fast stop; then
    log "postgres: no clean stop within ${PG_TIMEOUT}s, stopping in immediate mode"
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -w -t 15 -s -m immediate stop || true
    pid_alive "$pid" postgres && stop_pid postgres "$pid" postgres 5
  fi
  log "postgres: stopped in $((SECONDS - t0))s"
}

pg_status() {
  local pid
  if [[ -e $PG_DIR ]] && pid=$(pg_pid); then
    echo "postgres  running  pid $pid  127.0.0.1:$PG_PORT  db storelens  log $(rel "$PG_LOG")"
  elif port_open "$PG_PORT"; then
    echo "postgres  not ours  port $PG_PORT is in use by another process"; return 1
  else
    echo "postgres  stopped"; return 1
  fi
}

# ---------------------------------------------------------------- redis
redis_pid() {
  local pid
  pid=$(cat "$REDIS_DIR/redis.pid" 2>/dev/null) || return 1
  pid_alive "$pid" redis-server && printf '%s' "$pid"
}

redis_start() {
  local pid
  if pid=$(redis_pid); then
    log "redis: already running (pid $pid)"
    return 0
  fi
  free_port redis "$REDIS_PORT"
  mkdir -p "$REDIS_DIR"
  sed "s|@REDIS_DIR@|$REDIS_DIR|g" "$INFRA/redis/redis.conf" >"$REDIS_DIR/redis.conf"
  rm -f "$REDIS_DIR/redis.pid"
  REDIS_LOG_FROM=$(($(log_lines "$REDIS_DIR/redis.log") + 1))
  log "redis: starting on 127.0.0.1:$REDIS_PORT"
  (cd "$REDIS_DIR" && redis-server "$REDIS_DIR/redis.conf" </dev/null >>"$REDIS_DIR/redis.out" 2>&1 9>&-) ||
    { show_log "$REDIS_DIR/redis.log" "$REDIS_LOG_FROM"; show_log "$REDIS_DIR/redis.out"; die "redis: redis-server failed"; }
}

redis_wait() {
  local t0=$SECONDS
  until [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && redis_pid >/dev/null; do
    if ((SECONDS - t0 >= REDIS_TIMEOUT)); then
      show_log "$REDIS_DIR/redis.log" "${REDIS_LOG_FROM:-1}"
      die "redis: no answer on 127.0.0.1:$REDIS_PORT after ${REDIS_TIMEOUT}s"
    fi
    sleep 0.2
  done
  log "redis: ready on 127.0.0.1:$REDIS_PORT (pid $(redis_pid))"
}

redis_stop() {
  local pid
  if ! pid=$(redis_pid); then
    log "redis: not running"
    return 0
  fi
  log "redis: stopping (pid $pid)"
  local t0=$SECONDS
  stop_pid redis "$pid" redis-server 30   # SIGTERM: redis saves its RDB snapshot and exits
  log "redis: stopped in $((SECONDS - t0))s"
}

redis_status() {
  local pid
  if pid=$(redis_pid); then
    echo "redis     running  pid $pid  127.0.0.1:$REDIS_PORT  log $(rel "$REDIS_DIR/redis.log")"
  elif port_open "$REDIS_PORT"; then
    echo "redis     not ours  port $REDIS_PORT is in use by another process"; return 1
  else
    echo "redis     stopped"; return 1
  fi
}

# ---------------------------------------------------------------- commands
has() { local s; for s in "${SERVICES[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }

lock() {
  mkdir -p "$STACK"
  exec 9>"$STACK/.lock"
  flock -w 900 9 || die "another scripts/stack.sh has held .stack/.lock for 15 minutes"
}

cmd_up() {
  local what=${1:-up} t0=$SECONDS specs=()
  has postgres && specs+=("compgen -G '/usr/lib/postgresql/*/bin/initdb'|postgresql")
  has redis && specs+=("command -v redis-server && command -v redis-cli|redis-server")
  ((${#specs[@]})) && ensure_pkgs "${specs[@]}"
  # Kafka first (slowest to boot), the others while it starts, then wait for all.
  has kafka && kafka_start
  has postgres && pg_start
  has redis && redis_start
  has postgres && pg_wait
  has redis && redis_wait
  has kafka && kafka_wait
  log "$what: ${SERVICES[*]} ready in $((SECONDS - t0))s"
}

cmd_down() {
  has kafka && kafka_stop
  has redis && redis_stop
  has postgres && pg_stop
  return 0
}

cmd_status() {
  local rc=0
  has kafka && { kafka_status || rc=3; }
  has postgres && { pg_status || rc=3; }
  has redis && { redis_status || rc=3; }
  return $rc
}

cmd_env() {
  has kafka && echo "export STORELENS_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT"
  has postgres && echo "export STORELENS_PG_DSN=postgresql://storelens:storelens@127.0.0.1:$PG_PORT/storelens"
  has redis && echo "export STORELENS_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
  return 0
}

usage() {
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

main() {
  local cmd=${1:-}
  [[ -n $cmd ]] || usage
  shift
  SERVICES=()
  local s
  for s in "$@"; do
    case $s in
      kafka) SERVICES+=(kafka) ;;
      postgres | postgresql | pg) SERVICES+=(postgres) ;;
      redis) SERVICES+=(redis) ;;
      *) die "unknown server '$s' (kafka, postgres, redis)" ;;
    esac
  done
  ((${#SERVICES[@]})) || SERVICES=(kafka postgres redis)
  case $cmd in
    up | start) lock; cmd_up ;;
    down | stop) lock; cmd_down ;;
    restart) lock; cmd_down; cmd_up restart ;;
    status) cmd_status ;;
    env) cmd_env ;;
    -h | --help | help) usage ;;
    *) die "unknown command '$cmd' (up, down, start, stop, restart, status, env)" ;;
  esac
}

main "$@"
