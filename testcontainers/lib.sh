# shellcheck shell=bash
# Shared by the scripts in testcontainers/: settings, process control, and per-server
# install/start/ready functions. Sourced, never run. See README.md.

TC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$TC_DIR")
TC_HOME=${MESHGUARD_TC_HOME:-~/.cache/meshguard-tc}
TC_HOME=${TC_HOME%/}
# Absolute, so that the paths in the servers' command lines identify them (see svc_pid).
[[ $TC_HOME == /* ]] || TC_HOME=$PWD/$TC_HOME
TC_HOST=127.0.0.1
TC_TIMEOUT=${MESHGUARD_TC_TIMEOUT:-120}
TC_STOP_TIMEOUT=${MESHGUARD_TC_STOP_TIMEOUT:-60}
KAFKA_PORT=${MESHGUARD_TC_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${MESHGUARD_TC_KAFKA_CONTROLLER_PORT:-9093}
MARIADB_PORT=${MESHGUARD_TC_MARIADB_PORT:-3306}
FERRETDB_PORT=${MESHGUARD_TC_FERRETDB_PORT:-27017}
# FerretDB's backend: sqlite (files, the default) or postgresql (a PostgreSQL cluster of our own,
# the `postgresql` server below, started before FerretDB). See README.md, "FerretDB backends".
FERRETDB_BACKEND=${MESHGUARD_FERRETDB_BACKEND:-sqlite}
case $FERRETDB_BACKEND in
  sqlite | postgresql) ;;
  *)
    printf '[testcontainers] error: MESHGUARD_FERRETDB_BACKEND=%s (expected sqlite or postgresql)\n' "$FERRETDB_BACKEND" >&2
    exit 1
    ;;
esac
POSTGRESQL_PORT=${MESHGUARD_TC_POSTGRESQL_PORT:-5432}
POSTGRESQL_DATABASE=ferretdb
if [[ $FERRETDB_BACKEND == postgresql ]]; then
  ALL_SERVICES=(kafka mariadb ferretdb ferretdb_auth postgresql)
else
  ALL_SERVICES=(kafka mariadb ferretdb ferretdb_auth)
fi

# Secured endpoints (issue 6): TLS material shared by Kafka and MariaDB, the SASL_SSL listener,
# and the users with passwords. The passwords are test fixtures (testcontainers/env exports them).
TLS_DIR=$TC_HOME/tls
KAFKA_SASL_SSL_PORT=${MESHGUARD_TC_KAFKA_SASL_SSL_PORT:-9094}
KAFKA_SCRAM_USER=meshguard
KAFKA_SCRAM_PASSWORD=${MESHGUARD_TC_KAFKA_PASSWORD:-mg-kafka-scram-Secret-5e1b}
MARIADB_TLS_USER=meshguard
MARIADB_TLS_PASSWORD=${MESHGUARD_TC_MARIADB_PASSWORD:-mg-mariadb-Secret-93f0}
FERRETDB_AUTH_PORT=${MESHGUARD_TC_FERRETDB_AUTH_PORT:-27018}
FERRETDB_AUTH_USER=meshguard
FERRETDB_AUTH_PASSWORD=${MESHGUARD_TC_FERRETDB_PASSWORD:-mg-mongo-Secret-c27a}

# Installed jars and binaries; another MESHGUARD_TC_HOME (a private set of servers on other
# ports, e.g. tests/fault-harness) can reuse those of the default home instead of installing.
TC_INSTALL_HOME=${MESHGUARD_TC_INSTALL_HOME:-$TC_HOME}
TC_INSTALL_HOME=${TC_INSTALL_HOME%/}
[[ $TC_INSTALL_HOME == /* ]] || TC_INSTALL_HOME=$PWD/$TC_INSTALL_HOME
KAFKA_JARS=$TC_INSTALL_HOME/kafka/jars
FERRETDB_BIN=$TC_INSTALL_HOME/bin/ferretdb
FERRETDB_AUTH_BIN=$TC_INSTALL_HOME/bin/ferretdb-auth

log() { printf '[testcontainers] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# One up/down at a time per MESHGUARD_TC_HOME (fd 9, released when the script exits).
tc_lock() {
  mkdir -p "$TC_HOME"
  exec 9>"$TC_HOME/.lock"
  flock -w "$TC_TIMEOUT" 9 || die "another testcontainers/up or down holds $TC_HOME/.lock"
}

# Checks the names given on the command line; none means all servers.
# Sets SERVICES.
parse_services() {
  SERVICES=()
  local s
  for s in "$@"; do
    case $s in
      kafka | mariadb | postgresql | ferretdb | ferretdb_auth) SERVICES+=("$s") ;;
      *) die "unknown server '$s' (expected: ${ALL_SERVICES[*]})" ;;
    esac
  done
  if ((${#SERVICES[@]} == 0)); then SERVICES=("${ALL_SERVICES[@]}"); fi
}

svc_port() {
  case $1 in
    kafka) echo "$KAFKA_PORT" ;;
    mariadb) echo "$MARIADB_PORT" ;;
    postgresql) echo "$POSTGRESQL_PORT" ;;
    ferretdb) echo "$FERRETDB_PORT" ;;
    ferretdb_auth) echo "$FERRETDB_AUTH_PORT" ;;
  esac
}
svc_dir() { echo "$TC_HOME/$1"; }
svc_pidfile() { echo "$TC_HOME/$1/$1.pid"; }
svc_log() { echo "$TC_HOME/$1/logs/$1.log"; }

# A string that only this instance's command line contains, so that a reused pid or a server
# started from another MESHGUARD_TC_HOME is never taken for ours.
svc_signature() {
  case $1 in
    kafka) echo "$TC_HOME/kafka/server.properties" ;;
    mariadb) echo "$TC_HOME/mariadb/my.cnf" ;;
    postgresql) echo "-D $TC_HOME/postgresql/data" ;;
    ferretdb) echo "-dir $TC_HOME/ferretdb/data" ;;
    ferretdb_auth) echo "--state-dir=$TC_HOME/ferretdb_auth" ;;
  esac
}

# Prints the pid of our running server $1; fails if it is not running.
svc_pid() {
  local pidfile pid cmdline
  pidfile=$(svc_pidfile "$1")
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$(svc_signature "$1")"* ]] || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$TC_HOST/$1") 2>/dev/null; }

# Runs "$@" detached in a session of its own (it survives the calling shell), output appended
# to the server's log; the pid is written by the process itself just before exec, so it is the
# server's own pid.
spawn() {
  local svc=$1
  shift
  local pidfile logfile i
  pidfile=$(svc_pidfile "$svc")
  logfile=$(svc_log "$svc")
  mkdir -p "$(dirname "$logfile")"
  rm -f "$pidfile"
  printf '\n===== %s starting %s\n' "$(date -Is)" "$svc" >>"$logfile"
  # shellcheck disable=SC2016 # $$ and $0 belong to the inner shell.
  # 9>&-: the server must not inherit (and so hold forever) the lock of tc_lock.
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >>"$logfile" 2>&1 </dev/null 9>&- &
  for ((i = 0; i < 50; i++)); do
    [[ -s $pidfile ]] && return 0
    sleep 0.1
  done
  die "$svc: no pid file after starting it"
}

show_log_tail() {
  local f
  for f in "$@"; do
    [[ -f $f ]] || continue
    log "last lines of $f:"
    tail -n 40 "$f" >&2
  done
}

svc_logs() {
  case $1 in
    kafka) echo "$(svc_log kafka) $TC_HOME/kafka/logs/server.log" ;;
    *) svc_log "$1" ;;
  esac
}

# Polls "${svc}_ready" until it succeeds, the process dies, or TC_TIMEOUT passes.
wait_ready() {
  local svc=$1 deadline=$((SECONDS + TC_TIMEOUT)) logs
  read -r -a logs <<<"$(svc_logs "$svc")"
  while true; do
    if ! svc_pid "$svc" >/dev/null; then
      log "$svc exited while starting"
      show_log_tail "${logs[@]}"
      exit 1
    fi
    if "${svc}_ready"; then return 0; fi
    if ((SECONDS >= deadline)); then
      log "$svc did not answer on $TC_HOST:$(svc_port "$svc") within ${TC_TIMEOUT}s"
      show_log_tail "${logs[@]}"
      exit 1
    fi
    sleep 0.5
  done
}

# Installs what is missing, starts the server unless it runs, and returns without waiting.
svc_start() {
  local svc=$1 pid port
  "${svc}_install"
  if pid=$(svc_pid "$svc"); then
    if declare -F "${svc}_adopt" >/dev/null; then "${svc}_adopt" "$pid"; fi
    return 0
  fi
  port=$(svc_port "$svc")
  if port_open "$port"; then
    die "$svc: $TC_HOST:$port is taken by a process that is not ours ($(svc_pidfile "$svc")); stop it or set MESHGUARD_TC_${svc^^}_PORT"
  fi
  log "starting $svc on $TC_HOST:$port"
  mkdir -p "$(svc_dir "$svc")/data"
  "${svc}_launch"
}

svc_wait() {
  local svc=$1
  wait_ready "$svc"
  if declare -F "${svc}_after_ready" >/dev/null; then "${svc}_after_ready"; fi
  log "$svc is up on $TC_HOST:$(svc_port "$svc") (pid $(svc_pid "$svc"))"
}

# SIGTERM, wait up to TC_STOP_TIMEOUT seconds, then SIGKILL. Idempotent.
svc_stop() {
  local svc=$1 pid deadline
  if ! pid=$(svc_pid "$svc"); then
    rm -f "$(svc_pidfile "$svc")"
    return 0
  fi
  log "stopping $svc (pid $pid)"
  # PostgreSQL's SIGTERM is a "smart" shutdown that waits for FerretDB's pooled connections to
  # close; SIGINT is its "fast" shutdown (clients disconnected, a clean checkpoint).
  if [[ $svc == postgresql ]]; then
    kill -INT "$pid" 2>/dev/null || true
  else
    kill -TERM "$pid" 2>/dev/null || true
  fi
  deadline=$((SECONDS + TC_STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "$svc did not stop within ${TC_STOP_TIMEOUT}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  rm -f "$(svc_pidfile "$svc")"
}

as_root() {
  if ((EUID == 0)); then "$@"; else sudo "$@"; fi
}

# Runs "$@" (an install step) with its output appended to $TC_HOME/install.log; on failure shows
# the end of that log and returns non-zero.
run_logged() {
  local logfile=$TC_HOME/install.log rc=0
  mkdir -p "$TC_HOME"
  printf '\n===== %s %s\n' "$(date -Is)" "$*" >>"$logfile"
  "$@" >>"$logfile" 2>&1 || rc=$?
  if ((rc != 0)); then show_log_tail "$logfile"; fi
  return "$rc"
}

# apt-get install that never starts the packages' services (policy-rc.d answers "denied").
apt_install() {
  local policy=/usr/sbin/policy-rc.d own_policy=0 rc=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    own_policy=1
  fi
  run_logged as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || rc=$?
  if ((rc == 0)); then
    run_logged as_root env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "$@" || rc=$?
  fi
  if ((own_policy)); then as_root rm -f "$policy"; fi
  ((rc == 0)) || die "apt-get install $* failed (see $TC_HOME/install.log)"
}

# ---------------------------------------------------------------------------------------------
# TLS material for the secured listeners, made once with openssl under $TLS_DIR:
#   ca.crt/ca.key          the test CA that signs the server certificate
#   server.crt/server.key  CN and SAN 127.0.0.1 + localhost; server.pem = key + certificate
#                          (Kafka's PEM keystore)
#   other-ca.crt           a CA that signed nothing here: the "wrong CA" of the tests

tls_material() {
  [[ -s $TLS_DIR/server.pem && -s $TLS_DIR/other-ca.crt ]] && return 0
  command -v openssl >/dev/null || apt_install openssl
  log "generating a test CA and server certificate in $TLS_DIR"
  local tmp=$TLS_DIR.tmp
  rm -rf "$tmp"
  mkdir -p "$tmp"
  (
    cd "$tmp"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=meshguard testcontainers CA" \
      -keyout ca.key -out ca.crt
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.crt
    cat server.key server.crt >server.pem
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=some other CA" \
      -keyout other-ca.key -out other-ca.crt
    chmod 600 ./*.key server.pem
  ) >>"$TC_HOME/install.log" 2>&1 || die "openssl could not make the test certificates (see $TC_HOME/install.log)"
  rm -rf "$TLS_DIR"
  mv "$tmp" "$TLS_DIR"
}

# ---------------------------------------------------------------------------------------------
# Kafka: broker + controller in one JVM (KRaft), jars resolved by Maven.

kafka_install() {
  if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    log "installing Java and Maven (apt)"
    apt_install openjdk-17-jre-headless maven
  fi
  local want
  want=$(sha256sum <"$TC_DIR/kafka/pom.xml" | cut -d' ' -f1)
  if [[ -f $KAFKA_JARS/.pom.sha256 && $(<"$KAFKA_JARS/.pom.sha256") == "$want" ]]; then
    return 0
  fi
  log "resolving Kafka jars with Maven into $KAFKA_JARS"
  rm -rf "$KAFKA_JARS.tmp"
  run_logged mvn -B -ntp -Dstyle.color=never -f "$TC_DIR/kafka/pom.xml" \
    dependency:copy-dependencies "-Dtc.jars.dir=$KAFKA_JARS.tmp" ||
    die "mvn could not resolve the Kafka jars (see $TC_HOME/install.log)"
  echo "$want" >"$KAFKA_JARS.tmp/.pom.sha256"
  rm -rf "$KAFKA_JARS"
  mv "$KAFKA_JARS.tmp" "$KAFKA_JARS"
}

# Sets KAFKA_TOOL: the command line that runs a Kafka tool's main class from our jars.
kafka_tool_cmd() {
  [[ -d $KAFKA_JARS ]] || die "no Kafka jars in $KAFKA_JARS: run testcontainers/up kafka first"
  KAFKA_TOOL=(java -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
    -Dlog4j2.shutdownHookEnabled=false
    "-Dlog4j2.configurationFile=$TC_DIR/kafka/tools-log4j2.properties" -cp "$KAFKA_JARS/*")
}

kafka_tool() {
  kafka_tool_cmd
  "${KAFKA_TOOL[@]}" "$@"
}

kafka_write_config() {
  local dir=$TC_HOME/kafka
  cat >"$dir/server.properties" <<EOF
# Written by testcontainers/up at each start; edit testcontainers/lib.sh instead.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://$TC_HOST:$KAFKA_PORT,CONTROLLER://$TC_HOST:$KAFKA_CONTROLLER_PORT,SASL_SSL://$TC_HOST:$KAFKA_SASL_SSL_PORT
advertised.listeners=PLAINTEXT://$TC_HOST:$KAFKA_PORT,SASL_SSL://$TC_HOST:$KAFKA_SASL_SSL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_DIR/server.pem
controller.quorum.bootstrap.servers=$TC_HOST:$KAFKA_CONTROLLER_PORT
log.dirs=$dir/data
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
}

kafka_launch() {
  local dir=$TC_HOME/kafka cluster_id
  if port_open "$KAFKA_CONTROLLER_PORT"; then
    die "kafka: controller port $TC_HOST:$KAFKA_CONTROLLER_PORT is taken; stop that process or set MESHGUARD_TC_KAFKA_CONTROLLER_PORT"
  fi
  if port_open "$KAFKA_SASL_SSL_PORT"; then
    die "kafka: SASL_SSL port $TC_HOST:$KAFKA_SASL_SSL_PORT is taken; stop that process or set MESHGUARD_TC_KAFKA_SASL_SSL_PORT"
  fi
  mkdir -p "$dir/logs"
  tls_material
  kafka_write_config
  if [[ ! -f $dir/data/meta.properties ]]; then
    cluster_id=$(kafka_tool kafka.tools.StorageTool random-uuid)
    log "formatting Kafka storage (cluster id $cluster_id)"
    kafka_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" \
      --standalone --add-scram "SCRAM-SHA-512=[name=$KAFKA_SCRAM_USER,password=$KAFKA_SCRAM_PASSWORD]" \
      >>"$(svc_log kafka)" 2>&1 || {
      show_log_tail "$(svc_log kafka)"
      die "kafka storage format failed"
    }
  fi
  spawn kafka java -Xms512m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    "-Dkafka.logs.dir=$dir/logs" "-Dlog4j2.configurationFile=$TC_DIR/kafka/log4j2.properties" \
    -cp "$KAFKA_JARS/*" kafka.Kafka "$dir/server.properties"
}

# A real Admin API round trip (ListTopics), once the port accepts connections.
kafka_ready() {
  port_open "$KAFKA_PORT" && port_open "$KAFKA_SASL_SSL_PORT" || return 1
  kafka_tool_cmd
  timeout 30 "${KAFKA_TOOL[@]}" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$TC_HOST:$KAFKA_PORT" --list >/dev/null 2>&1
}

# The SCRAM user of the SASL_SSL listener. A fresh storage got it from `format --add-scram`; a
# storage formatted before the listener existed gets it here, through the PLAINTEXT listener
# (an upsert, so it also resets a changed password). Done once per cluster id and password.
kafka_after_ready() {
  local dir=$TC_HOME/kafka marker want
  marker=$dir/scram-user.sha256
  want=$( (grep '^cluster.id=' "$dir/data/meta.properties"; echo "$KAFKA_SCRAM_USER:$KAFKA_SCRAM_PASSWORD") | sha256sum | cut -d' ' -f1)
  [[ -f $marker && $(<"$marker") == "$want" ]] && return 0
  kafka_tool_cmd
  timeout 60 "${KAFKA_TOOL[@]}" org.apache.kafka.tools.ConfigCommand \
    --bootstrap-server "$TC_HOST:$KAFKA_PORT" --alter --entity-type users \
    --entity-name "$KAFKA_SCRAM_USER" \
    --add-config "SCRAM-SHA-512=[password=$KAFKA_SCRAM_PASSWORD]" >/dev/null ||
    die "kafka: could not add the SCRAM-SHA-512 user $KAFKA_SCRAM_USER"
  echo "$want" >"$marker"
}

# ---------------------------------------------------------------------------------------------
# MariaDB: Debian's server binaries on a data dir of our own.

MARIADB_SOCKET=$TC_HOME/mariadb/mysqld.sock

mariadb_install() {
  if ! PATH=$PATH:/usr/sbin command -v mariadbd >/dev/null || ! command -v mariadb >/dev/null; then
    log "installing mariadb-server (apt)"
    apt_install mariadb-server mariadb-client
    # Debian's own instance would take 3306: keep it stopped and off at boot.
    if [[ -d /run/systemd/system ]]; then
      as_root systemctl disable --now mariadb >/dev/null 2>&1 || true
    elif [[ -s /run/mysqld/mysqld.pid ]]; then
      as_root service mariadb stop >/dev/null 2>&1 || true
    fi
  fi
}

mariadb_write_config() {
  local dir=$TC_HOME/mariadb
  cat >"$dir/my.cnf" <<EOF
# Written by testcontainers/up at each start; edit testcontainers/lib.sh instead.
[mariadbd]
user=root
datadir=$dir/data
socket=$MARIADB_SOCKET
pid-file=$dir/mariadbd.pid
bind-address=$TC_HOST
port=$MARIADB_PORT
skip-name-resolve
character-set-server=utf8mb4
collation-server=utf8mb4_unicode_ci
# A source database keeps its hot rows in memory: with the 128 MB default a million-row table
# (the benchmark's) is read from disk at every reconciliation lookup (~60 ms per 1,000 keys
# instead of ~6). Test data needs no fsync per commit.
innodb_buffer_pool_size=1G
innodb_flush_log_at_trx_commit=2
ssl-ca=$TLS_DIR/ca.crt
ssl-cert=$TLS_DIR/server.crt
ssl-key=$TLS_DIR/server.key
EOF
}

mariadb_launch() {
  local dir=$TC_HOME/mariadb
  mkdir -p "$dir/logs"
  tls_material
  mariadb_write_config
  if [[ ! -d $dir/data/mysql ]]; then
    log "creating the MariaDB system tables in $dir/data"
    PATH=$PATH:/usr/sbin mariadb-install-db --defaults-file="$dir/my.cnf" \
      --auth-root-authentication-method=normal --skip-test-db >>"$(svc_log mariadb)" 2>&1 || {
      show_log_tail "$(svc_log mariadb)"
      rm -rf "$dir/data"
      die "mariadb-install-db failed"
    }
  fi
  spawn mariadb "$(PATH=$PATH:/usr/sbin command -v mariadbd)" --defaults-file="$dir/my.cnf"
}

mariadb_ready() {
  mariadb --no-defaults --socket="$MARIADB_SOCKET" -uroot -e 'select 1' >/dev/null 2>&1
}

# root@127.0.0.1 without a password over TCP (skip-name-resolve: 'localhost' would not match),
# then the project's migrations, in name order; each is idempotent.
mariadb_after_ready() {
  local f
  mariadb --no-defaults --socket="$MARIADB_SOCKET" -uroot -e "
    CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
    GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
    CREATE USER IF NOT EXISTS 'root'@'::1';
    GRANT ALL PRIVILEGES ON *.* TO 'root'@'::1' WITH GRANT OPTION;" ||
    die "mariadb: could not grant root@127.0.0.1"
  # The password user of the TLS tests: TLS required, reads the banking database only.
  mariadb --no-defaults --socket="$MARIADB_SOCKET" -uroot -e "
    CREATE USER IF NOT EXISTS '$MARIADB_TLS_USER'@'127.0.0.1';
    ALTER USER '$MARIADB_TLS_USER'@'127.0.0.1' IDENTIFIED BY '$MARIADB_TLS_PASSWORD' REQUIRE SSL;
    CREATE DATABASE IF NOT EXISTS banking;
    GRANT SELECT ON banking.* TO '$MARIADB_TLS_USER'@'127.0.0.1';" ||
    die "mariadb: could not create the user $MARIADB_TLS_USER"
  for f in "$REPO_DIR"/migrations/mysql/*.sql; do
    [[ -f $f ]] || continue
    mariadb --no-defaults -h"$TC_HOST" -P"$MARIADB_PORT" -uroot <"$f" ||
      die "mariadb: migration $f failed"
  done
}

# ---------------------------------------------------------------------------------------------
# FerretDB: testcontainers/ferretdb (embedded FerretDB, SQLite backend), built with Go.

ferretdb_install() {
  local src=$TC_DIR/ferretdb want version moddir tmp
  want=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" "$src"/patches/*.patch | sha256sum | cut -d' ' -f1)
  if [[ -x $FERRETDB_BIN && -f $FERRETDB_BIN.sha256 && $(<"$FERRETDB_BIN.sha256") == "$want" ]]; then
    return 0
  fi
  command -v go >/dev/null || die "Go (1.24 or newer) is needed to build FerretDB"
  log "building FerretDB into $FERRETDB_BIN (go build; a few minutes the first time)"
  mkdir -p "$(dirname "$FERRETDB_BIN")"
  # FerretDB's module, patched (testcontainers/ferretdb/patches), replaces the published one in a
  # copy of this folder: the build never writes into the source tree or the module cache.
  version=$(go -C "$src" list -m -f '{{.Version}}' github.com/FerretDB/FerretDB) ||
    die "cannot read the FerretDB version from $src/go.mod"
  moddir=$(ferretdb_module_dir "$src" "$version")
  tmp=$TC_HOME/ferretdb-build
  rm -rf "$tmp"
  mkdir -p "$tmp/main"
  cp "$src/go.mod" "$src/go.sum" "$src/main.go" "$tmp/main/" || die "could not copy $src"
  ferretdb_patched_copy "$moddir" "$tmp/ferretdb"
  go -C "$tmp/main" mod edit -replace "github.com/FerretDB/FerretDB=../ferretdb" ||
    die "go mod edit failed in $tmp/main"
  run_logged go -C "$tmp/main" build -trimpath -buildvcs=false -o "$FERRETDB_BIN.tmp" . ||
    die "go build of FerretDB failed (see $TC_HOME/install.log)"
  rm -rf "$tmp"
  mv -f "$FERRETDB_BIN.tmp" "$FERRETDB_BIN"
  echo "$want" >"$FERRETDB_BIN.sha256"
}

# The directory of FerretDB's module source in Go's module cache (downloaded if missing).
ferretdb_module_dir() {
  local moddir
  moddir=$(go -C "$1" mod download -json "github.com/FerretDB/FerretDB@$2" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') || true
  [[ -d $moddir ]] || die "go mod download of FerretDB $2 failed"
  echo "$moddir"
}

# A writable copy of FerretDB's module at $2 with testcontainers/ferretdb/patches applied:
# id-index.patch makes the `_id` index one that `_id` lookups use (SQLite: the index is on the
# very expression the queries push down; PostgreSQL: a GIN index beside the btree one, for
# the `@>` the queries use). Without it every find, update and delete by `_id` scans the
# collection (docs/benchmarks.md, round 5c). Stores created before the patch keep their old
# indexes: `testcontainers/down ferretdb` and remove its data folder to get the new ones.
# id-prefix.patch (SQLite) pushes the `_id` condition of any filter down, a `^literal` regex on
# `_id` as a range of that index (README.md, "FerretDB's `_id` prefix"). string-eq.patch (SQLite)
# adds the filter's top-level string equalities to that WHERE clause, so SQLite drops the rows
# that cannot match before FerretDB decodes them (README.md, "String equalities in SQL").
ferretdb_patched_copy() {
  local from=$1 to=$2 p
  rm -rf "$to"
  { cp -r "$from" "$to" && chmod -R u+w "$to"; } || die "could not copy the FerretDB module source"
  for p in "$TC_DIR"/ferretdb/patches/*.patch; do
    patch -s -p1 -d "$to" <"$p" >>"$TC_HOME/install.log" 2>&1 ||
      die "FerretDB: $p does not apply to $from (see $TC_HOME/install.log)"
  done
}

ferretdb_launch() {
  local backend=(-handler sqlite)
  if [[ $FERRETDB_BACKEND == postgresql ]]; then
    # FerretDB needs its database to answer before it starts (`up ferretdb` alone starts it too).
    if ! svc_pid postgresql >/dev/null || ! postgresql_ready; then
      svc_start postgresql
      svc_wait postgresql
    fi
    backend=(-handler postgresql -postgresql-url "$(postgresql_url)")
  fi
  spawn ferretdb "$FERRETDB_BIN" -addr "$TC_HOST:$FERRETDB_PORT" -dir "$TC_HOME/ferretdb/data" "${backend[@]}"
}

# A running FerretDB is adopted only if it has the backend asked for: switching backends needs
# `testcontainers/down ferretdb` first (the documents do not move from one backend to the other).
ferretdb_adopt() {
  local cmdline running=sqlite
  cmdline=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 0
  [[ $cmdline == *"-handler postgresql"* ]] && running=postgresql
  [[ $running == "$FERRETDB_BACKEND" ]] ||
    die "ferretdb runs with its $running backend (pid $1), MESHGUARD_FERRETDB_BACKEND asks for $FERRETDB_BACKEND: run testcontainers/down ferretdb first"
}

ferretdb_ready() {
  port_open "$FERRETDB_PORT" && "$FERRETDB_BIN" ping -timeout 2s "$TC_HOST:$FERRETDB_PORT" 2>/dev/null
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL (MESHGUARD_FERRETDB_BACKEND=postgresql): Debian's server binaries on a cluster of our
# own in $TC_HOME/postgresql/data, user `postgres` without a password (trust, 127.0.0.1 and our
# socket only), database `ferretdb` for FerretDB's documents.
#
# PostgreSQL refuses to run as root, and the default $TC_HOME (/root/.cache/...) is not
# reachable by Debian's `postgres` user. As root, initdb and the server therefore run in a user
# namespace of their own (`unshare --user`) where our uid 0 is mapped to a non-root uid: the
# files stay root's, reachable where root can reach them, and `down --wipe` deletes them. Where
# user namespaces are not allowed (a chroot, some containers), they run as the `postgres` user
# (`setpriv`), which works if that user can reach $TC_HOME.

postgresql_bindir() {
  local d
  d=$(find /usr/lib/postgresql -maxdepth 3 -path '*/bin/postgres' 2>/dev/null | sort -V | tail -n 1) || true
  [[ -n $d ]] && dirname "$d"
}

postgresql_install() {
  if [[ -z $(postgresql_bindir) ]] || ! command -v psql >/dev/null; then
    log "installing postgresql (apt)"
    apt_install postgresql
  fi
  [[ -n $(postgresql_bindir) ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql after apt-get install postgresql"
}

# Sets PG_AS_OWNER: the prefix that runs a PostgreSQL server program as a non-root uid when we
# are root (`unshare` and `setpriv` exec the program: the pid stays the same), and makes the
# cluster's directories writable by that uid.
postgresql_owner_cmd() {
  local dir=$TC_HOME/postgresql uid gid
  PG_AS_OWNER=()
  mkdir -p "$dir/run"
  ((EUID == 0)) || return 0
  uid=$(id -u postgres 2>/dev/null) || uid=70
  gid=$(id -g postgres 2>/dev/null) || gid=$uid
  if unshare --user "--map-user=$uid" "--map-group=$gid" true 2>/dev/null; then
    PG_AS_OWNER=(unshare --user "--map-user=$uid" "--map-group=$gid")
    return 0
  fi
  id postgres >/dev/null 2>&1 || die "postgresql: cannot run as root, user namespaces are not allowed here (unshare --user), and there is no postgres user"
  PG_AS_OWNER=(setpriv --reuid=postgres --regid=postgres --init-groups)
  mkdir -p "$dir/data"
  chown postgres:postgres "$dir/data" "$dir/run"
  chmod 700 "$dir/data"
  "${PG_AS_OWNER[@]}" test -w "$dir/data" ||
    die "postgresql: cannot run as root, user namespaces are not allowed here (unshare --user), and the postgres user cannot reach $dir: set MESHGUARD_TC_HOME to a directory it can reach (e.g. /var/tmp/meshguard-tc)"
}

postgresql_url() {
  echo "postgres://postgres@$TC_HOST:$POSTGRESQL_PORT/$POSTGRESQL_DATABASE"
}

postgresql_launch() {
  local dir=$TC_HOME/postgresql bin
  bin=$(postgresql_bindir)
  postgresql_owner_cmd
  mkdir -p "$dir/logs"
  if [[ ! -f $dir/data/PG_VERSION ]]; then
    log "creating a PostgreSQL cluster in $dir/data"
    rm -rf "$dir/data/"* # kept: the directory (its owner, when run as postgres)
    "${PG_AS_OWNER[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
      >>"$(svc_log postgresql)" 2>&1 || {
      show_log_tail "$(svc_log postgresql)"
      rm -rf "$dir/data"
      die "initdb failed (see $(svc_log postgresql))"
    }
  fi
  # Test data: no fsync wait per commit (as MariaDB's innodb_flush_log_at_trx_commit=2).
  spawn postgresql "${PG_AS_OWNER[@]}" "$bin/postgres" -D "$dir/data" -p "$POSTGRESQL_PORT" \
    -c listen_addresses="$TC_HOST" -c unix_socket_directories="$dir/run" \
    -c synchronous_commit=off -c max_connections=200 -c logging_collector=off
}

postgresql_ready() {
  port_open "$POSTGRESQL_PORT" &&
    psql -X -q -h "$TC_HOST" -p "$POSTGRESQL_PORT" -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1
}

postgresql_after_ready() {
  local have
  have=$(psql -X -q -h "$TC_HOST" -p "$POSTGRESQL_PORT" -U postgres -d postgres -tAc \
    "select 1 from pg_database where datname = '$POSTGRESQL_DATABASE'") ||
    die "postgresql: cannot list databases"
  if [[ $have != 1 ]]; then
    psql -X -q -h "$TC_HOST" -p "$POSTGRESQL_PORT" -U postgres -d postgres \
      -c "create database $POSTGRESQL_DATABASE" || die "postgresql: could not create database $POSTGRESQL_DATABASE"
  fi
}

# ---------------------------------------------------------------------------------------------
# FerretDB with authentication: the embedded API above cannot enforce credentials (ferretdb.Config
# has no auth setting), so this second instance runs FerretDB's own command, built from the same
# v1.24.2 module source, with `--test-enable-new-auth` (SCRAM-SHA-1/-256 against users stored by
# FerretDB) and a user created at first start (`--setup-*`). Anonymous commands other than the
# handshake and ping are refused.

ferretdb_auth_install() {
  ferretdb_install # for `ferretdb ping`
  local src=$TC_DIR/ferretdb version moddir want tmp
  version=$(go -C "$src" list -m -f '{{.Version}}' github.com/FerretDB/FerretDB) ||
    die "cannot read the FerretDB version from $src/go.mod"
  want=$version+skip-empty-exchange+$(cat "$src"/patches/*.patch | sha256sum | cut -c1-16)
  if [[ -x $FERRETDB_AUTH_BIN && -f $FERRETDB_AUTH_BIN.version && $(<"$FERRETDB_AUTH_BIN.version") == "$want" ]]; then
    return 0
  fi
  log "building FerretDB $version (its own command) into $FERRETDB_AUTH_BIN"
  moddir=$(ferretdb_module_dir "$src" "$version")
  # A patched, writable copy of the module with build/version/version.txt filled in, as
  # FerretDB's own `task gen-version` does (the module zip leaves it empty and the command
  # refuses to start).
  tmp=$TC_HOME/ferretdb_auth/src.tmp
  mkdir -p "$(dirname "$tmp")"
  ferretdb_patched_copy "$moddir" "$tmp"
  echo "$version" >"$tmp/build/version/version.txt" || die "could not write $tmp/build/version/version.txt"
  # FerretDB 1.24 ignores saslStart's `skipEmptyExchange` and answers the client's final SCRAM
  # message with done:false, expecting one more empty round; the Rust driver (mongodb 3.x) always
  # asks to skip it and fails with "expected SCRAM authentication to have completed". Answer
  # done:true once the proof is verified, as MongoDB does (the Go driver accepts both).
  local f=$tmp/internal/handler/msg_saslcontinue.go
  grep -q '"done", valid, // for compatibility' "$f" ||
    die "FerretDB $version: the saslContinue code to patch was not found in $f"
  sed -i 's|"done", valid, // for compatibility.*|"done", conv.Valid(), // meshguard: skipEmptyExchange|' "$f"
  run_logged go -C "$tmp" build -trimpath -buildvcs=false -o "$FERRETDB_AUTH_BIN.tmp" ./cmd/ferretdb ||
    die "go build of FerretDB's command failed (see $TC_HOME/install.log)"
  rm -rf "$tmp"
  mv -f "$FERRETDB_AUTH_BIN.tmp" "$FERRETDB_AUTH_BIN"
  echo "$want" >"$FERRETDB_AUTH_BIN.version"
}

ferretdb_auth_launch() {
  local dir=$TC_HOME/ferretdb_auth
  mkdir -p "$dir/data"
  # The password goes through the environment, not the command line (ps would show it).
  FERRETDB_SETUP_PASSWORD=$FERRETDB_AUTH_PASSWORD spawn ferretdb_auth "$FERRETDB_AUTH_BIN" \
    --handler=sqlite "--sqlite-url=file:$dir/data/" "--state-dir=$dir" \
    "--listen-addr=$TC_HOST:$FERRETDB_AUTH_PORT" --debug-addr=- --telemetry=disable --log-format=text \
    --test-enable-new-auth --setup-database=admin "--setup-username=$FERRETDB_AUTH_USER"
}

ferretdb_auth_ready() {
  port_open "$FERRETDB_AUTH_PORT" && "$FERRETDB_BIN" ping -timeout 2s "$TC_HOST:$FERRETDB_AUTH_PORT" 2>/dev/null
}
