#!/usr/bin/env bash
# Local backing services for tether, on loopback, without Docker:
#   * Apache Kafka 4.x, single combined broker+controller in KRaft mode, run from the
#     Apache Kafka jars on Maven Central (resolved by scripts/kafka/pom.xml);
#   * Redis 7 from Debian's redis-server package;
#   * nginx from Debian's package, installed only (tests/integration/test_gateway_nginx.py runs its own).
#
# Usage: scripts/services.sh up|down|status|env|clean|up-secure|down-secure|env-secure USER
#        scripts/services.sh up-cluster|down-cluster|env-cluster|cluster-node start|stop|kill N
#   up      install what is missing, start both (idempotent: running services are left alone)
#   down    stop both, and the secured broker if it runs (idempotent)
#   status  show what runs where
#   env     print the TETHER_* variables for a shell: eval "$(scripts/services.sh env)"
#   clean   down, then delete .services/ (Kafka jars, logs, data, certificates)
#   up-secure    a second broker beside the first, secured as docs/kafka-security.md describes:
#                one SASL_SSL listener (SCRAM-SHA-512 users admin, worker, agent, gateway, operator;
#                certificates made here with openssl and keytool), StandardAuthorizer, and
#                tether's ACLs per principal for the prefix 'tether.' (tether topics acls --apply)
#   down-secure  stop the secured broker
#   env-secure USER   the TETHER_* variables of a client logged in as USER (admin, worker, agent,
#                gateway, operator; agent-mtls: agent by client certificate on the MTLS listener):
#                eval "$(scripts/services.sh env-secure agent)"
#   up-cluster   a cluster of three brokers (KRaft; each node also one voter of a three-voter
#                controller quorum) on 19092-19094, controllers 19192-19194, data under
#                .services/cluster/; replication factor 3, min.insync.replicas 2 by default
#   down-cluster stop the cluster's nodes (also done by `down`)
#   up-redis     Redis alone (`make cluster` starts it beside the cluster)
#   env-cluster  the TETHER_* variables of a client of the cluster (bootstrap, replication 3,
#                min.insync.replicas 2): eval "$(scripts/services.sh env-cluster)"
#   cluster-node start|stop|kill N   one node of the cluster (1-3): start it again on its log
#                directory, stop it (SIGTERM: controlled shutdown) or kill -9 it (a crash);
#                the cluster fault tests use it (tests/fault/test_cluster_*.py, `make cluster`)
#
# Settings (environment): TETHER_KAFKA_PORT (9092), TETHER_KAFKA_CONTROLLER_PORT (9093),
# TETHER_REDIS_PORT (6379), TETHER_KAFKA_HEAP_OPTS ("-Xms256m -Xmx512m"),
# TETHER_SERVICES_DIR (<repo>/.services), TETHER_SERVICES_TIMEOUT (seconds to wait, 120);
# the secured broker: TETHER_KAFKA_SECURE_PORT (9094, SASL_SSL), TETHER_KAFKA_SECURE_MTLS_PORT
# (9096, TLS with client certificates), TETHER_KAFKA_SECURE_CONTROLLER_PORT (9095, the same), TETHER_VENV_PYTHON (<repo>/.venv/bin/python: the Python
# with confluent-kafka that creates the ACLs);
# the cluster: TETHER_CLUSTER_PORT_BASE (19091: node N listens on base+N, its controller on
# base+100+N), TETHER_CLUSTER_HEAP_OPTS ("-Xms128m -Xmx384m" per node: three JVMs on one machine).
#
# Kafka and Redis are ephemeral test services: every fresh start formats a new, empty Kafka
# log directory, and Redis runs without persistence.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SVC_DIR="${TETHER_SERVICES_DIR:-$ROOT/.services}"
HOST=127.0.0.1
KAFKA_PORT="${TETHER_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${TETHER_KAFKA_CONTROLLER_PORT:-9093}"
REDIS_PORT="${TETHER_REDIS_PORT:-6379}"
KAFKA_HEAP_OPTS="${TETHER_KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
WAIT_SECONDS="${TETHER_SERVICES_TIMEOUT:-120}"
PYTHON="${TETHER_PROBE_PYTHON:-python3}"
SECURE_PORT="${TETHER_KAFKA_SECURE_PORT:-9094}"
SECURE_CONTROLLER_PORT="${TETHER_KAFKA_SECURE_CONTROLLER_PORT:-9095}"
SECURE_MTLS_PORT="${TETHER_KAFKA_SECURE_MTLS_PORT:-9096}"
VENV_PYTHON="${TETHER_VENV_PYTHON:-$ROOT/.venv/bin/python}"
CLUSTER_PORT_BASE="${TETHER_CLUSTER_PORT_BASE:-19091}"
CLUSTER_HEAP_OPTS="${TETHER_CLUSTER_HEAP_OPTS:--Xms128m -Xmx384m}"
CLUSTER_NODES="1 2 3"

KAFKA_POM="$ROOT/scripts/kafka/pom.xml"
KAFKA_DIR="$SVC_DIR/kafka"
KAFKA_LIBS="$KAFKA_DIR/libs"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_LOG="$KAFKA_DIR/kafka.log"
SECURE_DIR="$SVC_DIR/kafka-secure"
SECURE_DATA="$SECURE_DIR/data"
SECURE_PID="$SECURE_DIR/kafka.pid"
SECURE_LOG="$SECURE_DIR/kafka.log"
SECURE_TLS="$SECURE_DIR/tls"
SECURE_CLIENTS="$SECURE_DIR/clients"
SECURE_USERS=(admin worker agent gateway operator)
CLUSTER_DIR="$SVC_DIR/cluster"
REDIS_DIR="$SVC_DIR/redis"
REDIS_PID="$REDIS_DIR/redis.pid"
REDIS_LOG="$REDIS_DIR/redis.log"
PROBE=("$PYTHON" "$ROOT/scripts/probe.py")

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
  # Installs Debian packages when we are root (CI, dev containers) or have passwordless sudo.
  local sudo=()
  if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      return 1
    fi
  fi
  command -v apt-get >/dev/null || return 1
  mkdir -p "$SVC_DIR"
  local aptlog="$SVC_DIR/apt.log"
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-get update (log: $aptlog)"
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$aptlog" 2>&1; then
      tail -n 20 "$aptlog" >&2
      return 1
    fi
    APT_UPDATED=1
  fi
  log "apt-get install $* (log: $aptlog)"
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends "$@" >>"$aptlog" 2>&1; then
    tail -n 20 "$aptlog" >&2
    return 1
  fi
}

# pid_alive PIDFILE PATTERN: the pid file names a live process whose command line matches PATTERN.
pid_alive() {
  local pidfile=$1 pattern=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"
}

# stop_pid PIDFILE PATTERN NAME: TERM, wait up to 30 s, then KILL.
stop_pid() {
  local pidfile=$1 pattern=$2 name=$3 pid i
  if ! pid_alive "$pidfile" "$pattern"; then
    rm -f "$pidfile"
    log "$name: not running"
    return 0
  fi
  pid=$(<"$pidfile")
  log "$name: stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 120; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name: still running after 30 s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$pidfile"
  log "$name: stopped"
}

port_open() { "${PROBE[@]}" port "$HOST:$1" --quiet; }

# ---------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------
java_major() {
  # "17.0.15" -> 17, "1.8.0_392" -> 8
  local v
  v=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2; exit}')
  v=${v#1.}
  printf '%s' "${v%%.*}"
}

ensure_java_maven() {
  local missing=()
  command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  if ((${#missing[@]})); then
    log "Kafka needs Java 17+ and Maven; missing: ${missing[*]}"
    apt_install "${missing[@]}" || die "Java 17+ (java) and Maven (mvn) are required to run Kafka.
  Install them, e.g.: sudo apt-get install -y openjdk-17-jdk-headless maven
  (or use Docker: docker compose up kafka redis)"
  fi
  local major
  major=$(java_major)
  [[ $major =~ ^[0-9]+$ && $major -ge 17 ]] ||
    die "Kafka 4 needs Java 17 or newer; 'java' here is version '${major:-unknown}' ($(command -v java)). Set JAVA_HOME/PATH to a JDK 17+."
}

resolve_kafka_jars() {
  # Re-resolves only when scripts/kafka/pom.xml changed. Maven's own cache (~/.m2) is used as usual.
  local want have=""
  want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
  [[ -f $KAFKA_LIBS/.pom.sha256 ]] && have=$(<"$KAFKA_LIBS/.pom.sha256")
  if [[ $want == "$have" ]] && compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null; then
    return 0
  fi
  log "kafka: resolving broker jars from Maven Central (first run only; cached in ~/.m2 and $KAFKA_LIBS)"
  rm -rf "$KAFKA_LIBS"
  mkdir -p "$KAFKA_LIBS"
  local mvnlog="$KAFKA_DIR/maven.log"
  if ! mvn -B -q -f "$KAFKA_POM" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" >"$mvnlog" 2>&1; then
    tail -n 40 "$mvnlog" >&2
    rm -rf "$KAFKA_LIBS"
    die "Maven could not resolve the Kafka jars (full log: $mvnlog)"
  fi
  printf '%s\n' "$want" >"$KAFKA_LIBS/.pom.sha256"
}

kafka_version() {
  local jar
  jar=$(compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" | head -n 1) || true
  jar=${jar##*/kafka_2.13-}
  printf '%s' "${jar%.jar}"
}

write_kafka_config() {
  mkdir -p "$KAFKA_DIR"
  cat >"$KAFKA_DIR/server.properties" <<EOF
# Generated by scripts/services.sh: single-node combined broker+controller (KRaft) for tests.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA
# tether creates every topic explicitly (docs/contract.md: never by broker auto-creation).
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Tests create and delete many small topics; keep segments small and the cleaner responsive.
log.segment.bytes=16777216
log.cleaner.backoff.ms=1000
delete.topic.enable=true
EOF
  cat >"$KAFKA_DIR/log4j2.properties" <<'EOF'
# Generated by scripts/services.sh. Broker log goes to stdout (redirected to kafka.log).
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
EOF
}

kafka_up() {
  if pid_alive "$KAFKA_PID" kafka.Kafka; then
    if "${PROBE[@]}" kafka "$HOST:$KAFKA_PORT" --wait "$WAIT_SECONDS" --quiet; then
      log "kafka: already running (pid $(<"$KAFKA_PID")) on $HOST:$KAFKA_PORT"
      return 0
    fi
    log "kafka: pid $(<"$KAFKA_PID") runs but does not answer; restarting it"
    stop_pid "$KAFKA_PID" kafka.Kafka kafka
  fi
  if port_open "$KAFKA_PORT"; then
    die "port $HOST:$KAFKA_PORT is in use by a process this script did not start.
  Stop it, or choose free ports for both commands, e.g.
    TETHER_KAFKA_PORT=29092 TETHER_KAFKA_CONTROLLER_PORT=29093 make services test"
  fi
  if port_open "$KAFKA_CONTROLLER_PORT"; then
    die "Kafka controller port $HOST:$KAFKA_CONTROLLER_PORT is in use; set TETHER_KAFKA_CONTROLLER_PORT"
  fi

  ensure_java_maven
  resolve_kafka_jars
  write_kafka_config

  # Fresh, empty log directory on every start (ephemeral test broker).
  rm -rf "$KAFKA_DATA"
  mkdir -p "$KAFKA_DATA"
  local cluster_id
  # A Kafka Uuid in base64url, drawn again while it starts with "-" as Kafka's own
  # Uuid.randomUuid() does: StorageTool's parser takes "-..." for an option (1 start in 64 failed)
  cluster_id=$("$PYTHON" -c '
import base64, uuid
while (cid := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
    pass
print(cid)')
  if ! java -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format --standalone \
    --cluster-id "$cluster_id" --config "$KAFKA_DIR/server.properties" >"$KAFKA_DIR/format.log" 2>&1; then
    tail -n 40 "$KAFKA_DIR/format.log" >&2
    die "kafka: formatting the log directory failed (log: $KAFKA_DIR/format.log)"
  fi

  log "kafka: starting Apache Kafka $(kafka_version) (KRaft) on $HOST:$KAFKA_PORT"
  # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS is a list of JVM flags
  setsid nohup java $KAFKA_HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
    >"$KAFKA_LOG" 2>&1 </dev/null &
  echo $! >"$KAFKA_PID"

  local started=$SECONDS
  if ! "${PROBE[@]}" kafka "$HOST:$KAFKA_PORT" --wait "$WAIT_SECONDS" --quiet; then
    log "kafka: not ready after ${WAIT_SECONDS}s; last lines of $KAFKA_LOG:"
    tail -n 40 "$KAFKA_LOG" >&2 || true
    stop_pid "$KAFKA_PID" kafka.Kafka kafka
    die "kafka did not start"
  fi
  pid_alive "$KAFKA_PID" kafka.Kafka || die "kafka: the broker answered but pid $(<"$KAFKA_PID") is not it"
  log "kafka: ready after $((SECONDS - started))s (pid $(<"$KAFKA_PID"), log $KAFKA_LOG)"
}

# ---------------------------------------------------------------------------------------------
# Secured Kafka (up-secure): a second broker, beside the plaintext one, for the ACL tests
# ---------------------------------------------------------------------------------------------
# Listeners: SECURE (SASL_SSL, SCRAM-SHA-512) for every client and between brokers, as User:admin;
# MTLS (SSL, client certificate required) for clients that log in with a certificate instead, as
# User:<the certificate's CN> (one is made: CN=agent, the user `agent-mtls` of env-secure);
# CONTROLLER (SSL, client certificate required) for the broker's own link to its controller, as
# User:broker. Both principals are super users; everyone else gets only
# the ACLs `tether topics acls` grants. Nothing listens in plaintext.

new_secret() { "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(24))'; }

make_secure_tls() {
  # A CA, and a broker certificate it signs (SAN 127.0.0.1 and localhost), in PKCS#12 stores
  # for the JVM; clients verify the broker with ca.crt. Made once; `clean` removes them.
  local tls=$SECURE_TLS pass
  if [[ -s $tls/broker.p12 && -s $tls/truststore.p12 && -s $tls/store.password && -s $tls/agent.crt ]]; then
    return 0
  fi
  command -v openssl >/dev/null || die "openssl is required for the secured broker's certificates"
  command -v keytool >/dev/null || die "keytool (from the JDK) is required for the secured broker"
  rm -rf "$tls"
  mkdir -p "$tls"
  chmod 700 "$tls"
  pass=$(new_secret)
  printf '%s' "$pass" >"$tls/store.password"
  local sslog="$tls/openssl.log"
  {
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
      -keyout "$tls/ca.key" -out "$tls/ca.crt" -subj "/CN=tether-local-ca" &&
      openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$tls/broker.key" \
        -out "$tls/broker.csr" -subj "/CN=broker" &&
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' \
        >"$tls/broker.ext" &&
      openssl x509 -req -sha256 -days 3650 -in "$tls/broker.csr" -CA "$tls/ca.crt" \
        -CAkey "$tls/ca.key" -CAcreateserial -extfile "$tls/broker.ext" -out "$tls/broker.crt" &&
      openssl pkcs12 -export -name broker -in "$tls/broker.crt" -inkey "$tls/broker.key" \
        -certfile "$tls/ca.crt" -out "$tls/broker.p12" -passout "pass:$pass" &&
      keytool -importcert -noprompt -alias tether-local-ca -file "$tls/ca.crt" \
        -keystore "$tls/truststore.p12" -storetype PKCS12 -storepass "$pass" &&
      # a client certificate for the MTLS listener, its key encrypted (TETHER_KAFKA__SSL_KEY_PASSWORD)
      new_secret | tr -d '\n' >"$tls/agent.keypass" &&
      openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$tls/agent.plain.key" \
        -out "$tls/agent.csr" -subj "/CN=agent" &&
      printf 'extendedKeyUsage=clientAuth\n' >"$tls/agent.ext" &&
      openssl x509 -req -sha256 -days 3650 -in "$tls/agent.csr" -CA "$tls/ca.crt" \
        -CAkey "$tls/ca.key" -CAcreateserial -extfile "$tls/agent.ext" -out "$tls/agent.crt" &&
      openssl pkcs8 -topk8 -v2 aes-256-cbc -in "$tls/agent.plain.key" -out "$tls/agent.key" \
        -passout "file:$tls/agent.keypass" &&
      rm -f "$tls/agent.plain.key"
  } >"$sslog" 2>&1 || {
    tail -n 20 "$sslog" >&2
    die "could not make the secured broker's certificates (log: $sslog)"
  }
  log "kafka-secure: made a local CA and broker certificate in $tls"
}

write_secure_config() {
  local pass admin_pw
  pass=$(<"$SECURE_TLS/store.password")
  admin_pw=$(<"$SECURE_CLIENTS/admin.password")
  cat >"$SECURE_DIR/server.properties" <<PROPS
# Generated by scripts/services.sh up-secure: single-node KRaft broker, SASL_SSL only, with ACLs.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$SECURE_CONTROLLER_PORT
listeners=SECURE://$HOST:$SECURE_PORT,MTLS://$HOST:$SECURE_MTLS_PORT,CONTROLLER://$HOST:$SECURE_CONTROLLER_PORT
advertised.listeners=SECURE://$HOST:$SECURE_PORT,MTLS://$HOST:$SECURE_MTLS_PORT,CONTROLLER://$HOST:$SECURE_CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SECURE
listener.security.protocol.map=SECURE:SASL_SSL,MTLS:SSL,CONTROLLER:SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.secure.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pw";
ssl.keystore.type=PKCS12
ssl.keystore.location=$SECURE_TLS/broker.p12
ssl.keystore.password=$pass
ssl.key.password=$pass
ssl.truststore.type=PKCS12
ssl.truststore.location=$SECURE_TLS/truststore.p12
ssl.truststore.password=$pass
ssl.endpoint.identification.algorithm=https
listener.name.controller.ssl.client.auth=required
listener.name.mtls.ssl.client.auth=required
ssl.principal.mapping.rules=RULE:^CN=([^,]+)\$/\$1/,DEFAULT
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:broker
allow.everyone.if.no.acl.found=false
log.dirs=$SECURE_DATA
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.segment.bytes=16777216
log.cleaner.backoff.ms=1000
delete.topic.enable=true
PROPS
  chmod 600 "$SECURE_DIR/server.properties"
  cp "$KAFKA_DIR/log4j2.properties" "$SECURE_DIR/log4j2.properties"
}

write_secure_clients() {
  # One password per user, new on every fresh start (the storage is formatted anew with them);
  # env-secure prints a client's settings, pointing at its password file.
  rm -rf "$SECURE_CLIENTS"
  mkdir -p "$SECURE_CLIENTS"
  chmod 700 "$SECURE_CLIENTS"
  local user
  for user in "${SECURE_USERS[@]}"; do
    (umask 077 && new_secret | tr -d '\n' >"$SECURE_CLIENTS/$user.password")
    cat >"$SECURE_CLIENTS/$user.env" <<VARS
TETHER_KAFKA_BOOTSTRAP=$HOST:$SECURE_PORT
TETHER_KAFKA__SECURITY_PROTOCOL=SASL_SSL
TETHER_KAFKA__SASL_MECHANISM=SCRAM-SHA-512
TETHER_KAFKA__SASL_USERNAME=$user
TETHER_KAFKA__SASL_PASSWORD_FILE=$SECURE_CLIENTS/$user.password
TETHER_KAFKA__SSL_CA_FILE=$SECURE_TLS/ca.crt
VARS
  done
  cat >"$SECURE_CLIENTS/agent-mtls.env" <<VARS
TETHER_KAFKA_BOOTSTRAP=$HOST:$SECURE_MTLS_PORT
TETHER_KAFKA__SECURITY_PROTOCOL=SSL
TETHER_KAFKA__SSL_CA_FILE=$SECURE_TLS/ca.crt
TETHER_KAFKA__SSL_CERT_FILE=$SECURE_TLS/agent.crt
TETHER_KAFKA__SSL_KEY_FILE=$SECURE_TLS/agent.key
TETHER_KAFKA__SSL_KEY_PASSWORD=$(<"$SECURE_TLS/agent.keypass")
VARS
  chmod 600 "$SECURE_CLIENTS/agent-mtls.env"
}

secure_python() {
  # The project's Python (confluent-kafka), logged in as admin, tether importable from here.
  [[ -x $VENV_PYTHON ]] || die "the secured broker needs the project's venv ($VENV_PYTHON) to create its ACLs: run 'make venv' first, or set TETHER_VENV_PYTHON"
  local vars=()
  mapfile -t vars <"$SECURE_CLIENTS/admin.env"
  env PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" "${vars[@]}" "$VENV_PYTHON" "$@"
}

# Exit 0 once the admin logs in (SASL_SSL, the broker verified against the CA) and sees a broker.
WAIT_PY='import sys
from tether.adapters.kafka_admin import wait_for_broker
from tether.settings import Settings
wait_for_broker(Settings(), timeout=float(sys.argv[1]))'

kafka_secure_up() {
  if pid_alive "$SECURE_PID" kafka.Kafka && [[ -s $SECURE_CLIENTS/admin.env ]]; then
    if secure_python -c "$WAIT_PY" 30 >/dev/null 2>&1; then
      log "kafka-secure: already running (pid $(<"$SECURE_PID")) on $HOST:$SECURE_PORT"
      return 0
    fi
    log "kafka-secure: pid $(<"$SECURE_PID") runs but does not answer; restarting it"
    stop_pid "$SECURE_PID" kafka.Kafka kafka-secure
  fi
  local port
  for port in "$SECURE_PORT" "$SECURE_MTLS_PORT" "$SECURE_CONTROLLER_PORT"; do
    if port_open "$port"; then
      die "port $HOST:$port (secured Kafka) is in use; set TETHER_KAFKA_SECURE_PORT, TETHER_KAFKA_SECURE_MTLS_PORT and TETHER_KAFKA_SECURE_CONTROLLER_PORT"
    fi
  done
  [[ -x $VENV_PYTHON ]] || die "the secured broker needs the project's venv ($VENV_PYTHON) to create its ACLs: run 'make venv' first, or set TETHER_VENV_PYTHON"
  ensure_java_maven
  resolve_kafka_jars
  write_kafka_config # for its log4j2.properties, shared with the plaintext broker
  mkdir -p "$SECURE_DIR"
  chmod 700 "$SECURE_DIR"
  make_secure_tls
  write_secure_clients
  write_secure_config

  rm -rf "$SECURE_DATA"
  mkdir -p "$SECURE_DATA"
  local cluster_id user scram=()
  cluster_id=$("$PYTHON" -c '
import base64, uuid
while (cid := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
    pass
print(cid)')
  # SCRAM users exist from the first start: StorageTool writes them into the new metadata log.
  for user in "${SECURE_USERS[@]}"; do
    scram+=(--add-scram "SCRAM-SHA-512=[name=$user,password=$(<"$SECURE_CLIENTS/$user.password")]")
  done
  if ! java -Dlog4j2.configurationFile="$SECURE_DIR/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format --standalone \
    --cluster-id "$cluster_id" --config "$SECURE_DIR/server.properties" "${scram[@]}" \
    >"$SECURE_DIR/format.log" 2>&1; then
    tail -n 40 "$SECURE_DIR/format.log" >&2
    die "kafka-secure: formatting the log directory failed (log: $SECURE_DIR/format.log)"
  fi

  log "kafka-secure: starting Apache Kafka $(kafka_version) (KRaft, SASL_SSL, ACLs) on $HOST:$SECURE_PORT"
  # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS is a list of JVM flags
  setsid nohup java $KAFKA_HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$SECURE_DIR/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$SECURE_DIR/server.properties" \
    >"$SECURE_LOG" 2>&1 </dev/null &
  echo $! >"$SECURE_PID"

  local started=$SECONDS
  while ((SECONDS - started < WAIT_SECONDS)) && ! port_open "$SECURE_PORT"; do
    pid_alive "$SECURE_PID" kafka.Kafka || break
    sleep 0.25
  done
  # Ready once the admin logs in (SASL_SSL, broker verified against the CA) and sees the broker;
  # then tether's ACLs for the default prefix (tests grant the same for prefixes of their own).
  if ! secure_python -m tether.cli topics acls --apply --wait "$WAIT_SECONDS" \
    >"$SECURE_DIR/acls.log" 2>&1; then
    log "kafka-secure: no ACLs after ${WAIT_SECONDS}s; $SECURE_DIR/acls.log and the last lines of $SECURE_LOG:"
    tail -n 10 "$SECURE_DIR/acls.log" >&2 || true
    tail -n 30 "$SECURE_LOG" >&2 || true
    stop_pid "$SECURE_PID" kafka.Kafka kafka-secure
    die "the secured kafka did not start"
  fi
  log "kafka-secure: ready after $((SECONDS - started))s (pid $(<"$SECURE_PID"), log $SECURE_LOG); clients: eval \"\$(scripts/services.sh env-secure admin|worker|agent|gateway)\""
}

print_env_secure() {
  local user=${1:-}
  [[ " ${SECURE_USERS[*]} agent-mtls " == *" $user "* ]] ||
    die "env-secure takes one of: ${SECURE_USERS[*]} agent-mtls"
  [[ -s $SECURE_CLIENTS/$user.env ]] || die "the secured broker is not set up: scripts/services.sh up-secure"
  sed 's/^/export /' "$SECURE_CLIENTS/$user.env"
}

# ---------------------------------------------------------------------------------------------
# A three-broker cluster (up-cluster): replication, leader failover, ISR shrink and catch-up
# ---------------------------------------------------------------------------------------------
# Three combined broker+controller nodes with a static three-voter quorum
# (controller.quorum.voters): the quorum survives one node down, as the partitions do with
# replication factor 3 and min.insync.replicas 2. Unclean leader election stays off, so a
# record a producer saw acknowledged (acks=all) is on at least two replicas and a replica that
# lacks it never becomes leader. Like the other brokers, each `up-cluster` formats fresh log
# directories; `cluster-node start N` restarts one node on its existing one.

cluster_port() { printf '%s' $((CLUSTER_PORT_BASE + $1)); }
cluster_controller_port() { printf '%s' $((CLUSTER_PORT_BASE + 100 + $1)); }
cluster_bootstrap() {
  local n out=()
  for n in $CLUSTER_NODES; do out+=("$HOST:$(cluster_port "$n")"); done
  (IFS=,; printf '%s' "${out[*]}")
}
cluster_node_dir() { printf '%s' "$CLUSTER_DIR/node$1"; }

write_cluster_config() {
  local n=$1 dir voters="" m
  dir=$(cluster_node_dir "$n")
  mkdir -p "$dir"
  for m in $CLUSTER_NODES; do voters+="${voters:+,}$m@$HOST:$(cluster_controller_port "$m")"; done
  cat >"$dir/server.properties" <<EOF
# Generated by scripts/services.sh up-cluster: node $n of a three-node KRaft cluster for tests.
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://$HOST:$(cluster_port "$n"),CONTROLLER://$HOST:$(cluster_controller_port "$n")
advertised.listeners=PLAINTEXT://$HOST:$(cluster_port "$n")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
auto.create.topics.enable=false
num.partitions=1
# Replicated as production runs it: three copies, an acks=all write needs two of them.
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
# A killed node leaves the ISR after this long without fetching (Kafka's default: 30 s).
replica.lag.time.max.ms=10000
# Quicker failure detection between the nodes (defaults: 9 s session, 2 s heartbeat).
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000
log.segment.bytes=16777216
log.cleaner.backoff.ms=1000
delete.topic.enable=true
EOF
  cp "$KAFKA_DIR/log4j2.properties" "$dir/log4j2.properties"
}

# cluster_node_start N: launch node N on its existing log directory (formatted by up-cluster).
cluster_node_start() {
  local n=$1 dir
  dir=$(cluster_node_dir "$n")
  [[ -s $dir/server.properties && -d $dir/data ]] ||
    die "cluster node $n is not set up: scripts/services.sh up-cluster"
  if pid_alive "$dir/kafka.pid" kafka.Kafka; then
    log "cluster node $n: already running (pid $(<"$dir/kafka.pid"))"
    return 0
  fi
  if port_open "$(cluster_port "$n")"; then
    die "port $HOST:$(cluster_port "$n") (cluster node $n) is in use; set TETHER_CLUSTER_PORT_BASE"
  fi
  # shellcheck disable=SC2086  # CLUSTER_HEAP_OPTS is a list of JVM flags
  setsid nohup java $CLUSTER_HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" \
    >>"$dir/kafka.log" 2>&1 </dev/null &
  echo $! >"$dir/kafka.pid"
  log "cluster node $n: started (pid $!) on $HOST:$(cluster_port "$n")"
}

# cluster_node_stop N SIGNAL: TERM (controlled shutdown, waits up to 30 s) or KILL (a crash).
cluster_node_stop() {
  local n=$1 sig=${2:-TERM} dir pid i
  dir=$(cluster_node_dir "$n")
  if ! pid_alive "$dir/kafka.pid" kafka.Kafka; then
    rm -f "$dir/kafka.pid"
    log "cluster node $n: not running"
    return 0
  fi
  if [[ $sig == KILL ]]; then
    pid=$(<"$dir/kafka.pid")
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    rm -f "$dir/kafka.pid"
    log "cluster node $n: killed (pid $pid)"
  else
    stop_pid "$dir/kafka.pid" kafka.Kafka "cluster node $n"
  fi
}

# cluster_wait: every node answers, and the metadata lists all three brokers.
cluster_wait() {
  local n started=$SECONDS info=""
  for n in $CLUSTER_NODES; do
    if ! "${PROBE[@]}" kafka "$HOST:$(cluster_port "$n")" --wait "$WAIT_SECONDS" --quiet; then
      tail -n 30 "$(cluster_node_dir "$n")/kafka.log" >&2 || true
      die "cluster node $n is not ready after ${WAIT_SECONDS}s (log: $(cluster_node_dir "$n")/kafka.log)"
    fi
  done
  while ((SECONDS - started < WAIT_SECONDS)); do
    info=$("${PROBE[@]}" kafka "$HOST:$(cluster_port 1)" 2>/dev/null || true)
    [[ $(grep -o '@' <<<"$info" | wc -l) -ge 3 ]] && return 0
    sleep 0.5
  done
  die "the cluster's metadata does not list three brokers after ${WAIT_SECONDS}s: $info"
}

cluster_up() {
  local n dir alive=0 cluster_id started
  for n in $CLUSTER_NODES; do
    if pid_alive "$(cluster_node_dir "$n")/kafka.pid" kafka.Kafka; then alive=$((alive + 1)); fi
  done
  if ((alive == 3)); then
    cluster_wait
    log "cluster: already running on $(cluster_bootstrap)"
    print_env_cluster | sed 's/^/export /'
    return 0
  fi
  if ((alive > 0)); then cluster_down; fi
  for n in $CLUSTER_NODES; do
    if port_open "$(cluster_port "$n")" || port_open "$(cluster_controller_port "$n")"; then
      die "port $HOST:$(cluster_port "$n") or $HOST:$(cluster_controller_port "$n") is in use; set TETHER_CLUSTER_PORT_BASE"
    fi
  done
  ensure_java_maven
  resolve_kafka_jars
  write_kafka_config # for its log4j2.properties
  cluster_id=$("$PYTHON" -c '
import base64, uuid
while (cid := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
    pass
print(cid)')
  for n in $CLUSTER_NODES; do
    dir=$(cluster_node_dir "$n")
    write_cluster_config "$n"
    rm -rf "$dir/data"
    mkdir -p "$dir/data"
    : >"$dir/kafka.log"
    # A static quorum (controller.quorum.voters): every node is formatted alike, one cluster id.
    if ! java -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$KAFKA_LIBS/*" \
      kafka.tools.StorageTool format --cluster-id "$cluster_id" \
      --config "$dir/server.properties" >"$dir/format.log" 2>&1; then
      tail -n 30 "$dir/format.log" >&2
      die "cluster node $n: formatting the log directory failed (log: $dir/format.log)"
    fi
  done
  log "cluster: starting three nodes of Apache Kafka $(kafka_version) (KRaft) on $(cluster_bootstrap)"
  started=$SECONDS
  for n in $CLUSTER_NODES; do cluster_node_start "$n"; done
  cluster_wait
  log "cluster: ready after $((SECONDS - started))s; clients: eval \"\$(scripts/services.sh env-cluster)\""
  print_env_cluster | sed 's/^/export /'
}

# up-redis: Redis alone (what `make cluster` needs beside the cluster).
ensure_redis_only() {
  mkdir -p "$SVC_DIR"
  redis_up
}

cluster_down() {
  # All three at once: stopped one after another, the last node's controlled shutdown waits for
  # a quorum that is gone (it took the 30 s and a KILL).
  local n
  for n in $CLUSTER_NODES; do cluster_node_stop "$n" TERM & done
  wait
}

print_env_cluster() {
  printf 'TETHER_KAFKA_BOOTSTRAP=%s\n' "$(cluster_bootstrap)"
  printf 'TETHER_KAFKA__REPLICATION_FACTOR=3\n'
  printf 'TETHER_KAFKA__MIN_INSYNC_REPLICAS=2\n'
  printf 'TETHER_CLUSTER_BOOTSTRAP=%s\n' "$(cluster_bootstrap)"
}

cluster_status() {
  local n dir
  for n in $CLUSTER_NODES; do
    dir=$(cluster_node_dir "$n")
    if pid_alive "$dir/kafka.pid" kafka.Kafka; then
      echo "cluster node $n: up    pid $(<"$dir/kafka.pid")  $HOST:$(cluster_port "$n")"
    elif [[ -d $dir ]]; then
      echo "cluster node $n: down"
    fi
  done
}

cluster_node_cmd() {
  local action=${1:-} n=${2:-}
  [[ $n =~ ^[123]$ ]] || die "cluster-node takes start|stop|kill and a node number 1-3"
  case "$action" in
    start) cluster_node_start "$n" ;;
    stop) cluster_node_stop "$n" TERM ;;
    kill) cluster_node_stop "$n" KILL ;;
    *) die "cluster-node takes start|stop|kill and a node number 1-3" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------
redis_server_version() { redis-server --version | sed -n 's/.* v=\([0-9][0-9.]*\).*/\1/p'; }

ensure_redis() {
  if ! command -v redis-server >/dev/null; then
    log "redis: redis-server not found; installing Debian's redis-server"
    apt_install redis-server || die "redis-server (Redis 7+) is required.
  Install it, e.g.: sudo apt-get install -y redis-server   (or: docker compose up redis)"
  fi
  local v
  v=$(redis_server_version)
  [[ ${v%%.*} =~ ^[0-9]+$ && ${v%%.*} -ge 7 ]] ||
    die "Redis 7 or newer is required; $(command -v redis-server) is version '${v:-unknown}'"
}

redis_up() {
  if pid_alive "$REDIS_PID" redis-server; then
    if "${PROBE[@]}" redis "$HOST:$REDIS_PORT" --wait 10 --quiet; then
      log "redis: already running (pid $(<"$REDIS_PID")) on $HOST:$REDIS_PORT"
      return 0
    fi
    stop_pid "$REDIS_PID" redis-server redis
  fi
  if port_open "$REDIS_PORT"; then
    local v
    if v=$("${PROBE[@]}" redis "$HOST:$REDIS_PORT" 2>/dev/null) && [[ ${v%%.*} -ge 7 ]]; then
      log "redis: reusing the Redis $v already listening on $HOST:$REDIS_PORT (not started here; 'down' leaves it alone)"
      return 0
    fi
    die "port $HOST:$REDIS_PORT is in use by something that is not Redis 7+; set TETHER_REDIS_PORT"
  fi
  ensure_redis
  mkdir -p "$REDIS_DIR"
  rm -f "$REDIS_PID"
  log "redis: starting Redis $(redis_server_version) on $HOST:$REDIS_PORT"
  redis-server --port "$REDIS_PORT" --bind "$HOST" --protected-mode yes \
    --daemonize yes --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" --dir "$REDIS_DIR" \
    --save '' --appendonly no >/dev/null
  if ! "${PROBE[@]}" redis "$HOST:$REDIS_PORT" --wait 30 --quiet; then
    tail -n 20 "$REDIS_LOG" >&2 || true
    die "redis did not start (log: $REDIS_LOG)"
  fi
  log "redis: ready (pid $(<"$REDIS_PID"), log $REDIS_LOG)"
}

# ---------------------------------------------------------------------------------------------
# docker-compose (validation only: no engine is needed for `docker-compose config`)
# ---------------------------------------------------------------------------------------------
have_compose_tool() {
  command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1
}

# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------
print_env() {
  printf 'TETHER_KAFKA_BOOTSTRAP=%s\n' "$HOST:$KAFKA_PORT"
  printf 'TETHER_REDIS_URL=%s\n' "redis://$HOST:$REDIS_PORT/0"
}

cmd_up() {
  mkdir -p "$SVC_DIR"
  command -v "$PYTHON" >/dev/null || die "python3 is required (set TETHER_PROBE_PYTHON)"
  # Install what is missing in one apt-get run, then start.
  local packages=()
  command -v redis-server >/dev/null || packages+=(redis-server)
  # nginx (auth_request is built into Debian's package): tests/integration/test_gateway_nginx.py
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || packages+=(nginx)
  have_compose_tool || packages+=(docker-compose)
  if ((${#packages[@]})); then
    log "installing Debian packages: ${packages[*]} (docker-compose only validates docker-compose.yml in tests/unit/test_compose.py)"
    apt_install "${packages[@]}" || log "could not install ${packages[*]}"
  fi
  have_compose_tool || log "compose: no docker compose / docker-compose; tests/unit/test_compose.py will skip"
  redis_up
  kafka_up
  print_env
}

cmd_down() {
  if [[ -e $SECURE_PID ]]; then stop_pid "$SECURE_PID" kafka.Kafka kafka-secure; fi
  if [[ -d $CLUSTER_DIR ]]; then cluster_down; fi
  stop_pid "$KAFKA_PID" kafka.Kafka kafka
  stop_pid "$REDIS_PID" redis-server redis
}

cmd_status() {
  local rc=0 info
  if pid_alive "$KAFKA_PID" kafka.Kafka; then
    if info=$("${PROBE[@]}" kafka "$HOST:$KAFKA_PORT" 2>&1); then
      echo "kafka: up    pid $(<"$KAFKA_PID")  $HOST:$KAFKA_PORT  Apache Kafka $(kafka_version)  $info"
    else
      echo "kafka: pid $(<"$KAFKA_PID") alive but not answering: $info"; rc=1
    fi
  else
    echo "kafka: down"; rc=1
  fi
  if info=$("${PROBE[@]}" redis "$HOST:$REDIS_PORT" 2>&1); then
    if pid_alive "$REDIS_PID" redis-server; then
      echo "redis: up    pid $(<"$REDIS_PID")  $HOST:$REDIS_PORT  Redis $info"
    else
      echo "redis: up    (not started by this script)  $HOST:$REDIS_PORT  Redis $info"
    fi
  else
    echo "redis: down"; rc=1
  fi
  if pid_alive "$SECURE_PID" kafka.Kafka; then
    echo "kafka-secure: up    pid $(<"$SECURE_PID")  $HOST:$SECURE_PORT (SASL_SSL, ACLs)  clients: scripts/services.sh env-secure USER"
  fi
  cluster_status
  return $rc
}

cmd_clean() {
  cmd_down
  log "removing $SVC_DIR"
  rm -rf "$SVC_DIR"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) print_env | sed 's/^/export /' ;;
  clean) cmd_clean ;;
  up-secure) kafka_secure_up ;;
  down-secure) stop_pid "$SECURE_PID" kafka.Kafka kafka-secure ;;
  env-secure) print_env_secure "${2:-}" ;;
  up-redis) ensure_redis_only ;;
  up-cluster) cluster_up ;;
  down-cluster) cluster_down ;;
  env-cluster) print_env_cluster | sed 's/^/export /' ;;
  cluster-node) cluster_node_cmd "${2:-}" "${3:-}" ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
