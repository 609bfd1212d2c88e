#!/usr/bin/env bash
# Single-node Apache Kafka 4.x (KRaft, combined broker+controller) on 127.0.0.1 for development,
# the demo and the integration tests.
#
#   deploy/kafka/kafka.sh fetch     resolve the broker jars from Maven Central (only when missing)
#   deploy/kafka/kafka.sh start     fetch, format KRaft storage (first time), start, wait until it answers
#   deploy/kafka/kafka.sh topics    create gatewatch's topics (idempotent)
#   deploy/kafka/kafka.sh stop      stop the broker started by this script (by its own pid)
#   deploy/kafka/kafka.sh status    exit 0 when our broker runs and answers
#   deploy/kafka/kafka.sh reset     stop and delete the broker's data
#
# Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), GATEWATCH_KAFKA_DIR (.cache/kafka),
# INPUT_PARTITIONS (4, for gateway.access/gateway.tokens), EVENT_PARTITIONS (6, gatewatch.events*),
# KAFKA_HEAP (512m).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DIR="${GATEWATCH_KAFKA_DIR:-$ROOT/.cache/kafka}"
LIBS="$DIR/libs"
DATA="$DIR/data"
PORT="${KAFKA_PORT:-9092}"
CPORT="${KAFKA_CONTROLLER_PORT:-9093}"
PIDFILE="$DIR/broker.pid"
LOG="$DIR/broker.log"
PROPS="$DIR/server.properties"
BOOTSTRAP="127.0.0.1:$PORT"

log() { echo "kafka: $*" >&2; }

java_cp() { echo "$LIBS/*"; }

fetch() {
  if [ -f "$LIBS/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { log "mvn not found (install Maven)"; exit 1; }
  log "resolving Apache Kafka jars from Maven Central into $LIBS"
  rm -rf "$LIBS"
  mvn -q -B -f "$HERE/pom.xml" -Dmaven.repo.local="$ROOT/.cache/m2" \
    dependency:copy-dependencies -DoutputDirectory="$LIBS" -DincludeScope=runtime >&2
  ls "$LIBS"/kafka_2.13-*.jar >/dev/null
  touch "$LIBS/.complete"
}

write_props() {
  mkdir -p "$DATA"
  cat >"$PROPS" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
log.segment.bytes=134217728
EOF
  cat >"$DIR/log4j2.yaml" <<EOF
Configuration:
  Appenders:
    File:
      name: FILE
      fileName: "$LOG"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: FILE
EOF
}

our_pid() {
  # The pid in our pidfile, if that process is alive and is a Kafka broker of ours.
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $PROPS"; then
    echo "$pid"
    return 0
  fi
  return 1
}

running() {
  # Process $1 exists and has not exited (a zombie not yet reaped by this shell counts as exited).
  [ -r "/proc/$1/stat" ] || return 1
  local state
  state="$(sed 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f1)"
  [ "$state" != "Z" ]
}

answers() {
  # Port open and the broker reports its API versions.
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || return 1
  java -cp "$(java_cp)" -Dlog4j2.configurationFile="$DIR/log4j2.yaml" \
    org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$BOOTSTRAP" >/dev/null 2>&1
}

format_storage() {
  if [ -f "$DATA/meta.properties" ]; then return 0; fi
  local cid
  cid="$(java -cp "$(java_cp)" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
  log "formatting KRaft storage (cluster $cid)"
  java -cp "$(java_cp)" -Dlog4j2.configurationFile="$DIR/log4j2.yaml" \
    kafka.tools.StorageTool format -t "$cid" -c "$PROPS" --ignore-formatted >>"$LOG" 2>&1
}

start() {
  fetch
  if pid="$(our_pid)"; then
    log "already running (pid $pid) on $BOOTSTRAP"
    return 0
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    log "port $PORT is taken by another process; refusing to start a second broker"
    exit 1
  fi
  write_props
  format_storage
  log "starting broker on $BOOTSTRAP (log: $LOG)"
  # setsid: the broker outlives the calling shell; we stop it by its pid.
  setsid java -Xms256m -Xmx"${KAFKA_HEAP:-512m}" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$DIR/log4j2.yaml" \
    -cp "$(java_cp)" kafka.Kafka "$PROPS" >>"$LOG" 2>&1 </dev/null &
  local started=$!
  echo "$started" >"$PIDFILE"
  local i
  for i in $(seq 1 120); do
    # Alive, not whether it is already `java kafka.Kafka`: right after the fork the child may not have
    # exec'd yet, and `our_pid` would call a starting broker dead (seen: a restart reported as failed).
    if ! running "$started"; then
      log "broker exited during start-up; last lines of $LOG:"
      tail -n 20 "$LOG" >&2
      exit 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
      log "broker answers on $BOOTSTRAP (pid $(cat "$PIDFILE"))"
      return 0
    fi
    sleep 0.5
  done
  log "broker did not answer within 60 s; see $LOG"
  exit 1
}

topics() {
  local ip="${INPUT_PARTITIONS:-4}" ep="${EVENT_PARTITIONS:-6}"
  create_topic gateway.access "$ip"
  create_topic gateway.tokens "$ip"
  create_topic gatewatch.events "$ep"
  create_topic gatewatch.events.by_key "$ep"
  create_topic gatewatch.alerts 4 --config cleanup.policy=compact
  create_topic gatewatch.triage 1 --config retention.ms=-1
  create_topic gatewatch.risk 4 --config cleanup.policy=compact
  create_topic gatewatch.dlq 1 --config max.message.bytes=4194304
}

create_topic() {
  local name="$1" parts="$2"
  shift 2
  java -cp "$(java_cp)" -Dlog4j2.configurationFile="$DIR/log4j2.yaml" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$name" --partitions "$parts" --replication-factor 1 "$@" >/dev/null
  log "topic $name ($parts partitions)"
}

stop() {
  local pid
  if ! pid="$(our_pid)"; then
    rm -f "$PIDFILE"
    log "not running"
    return 0
  fi
  log "stopping broker (pid $pid)"
  kill -TERM "$pid"
  local i
  for i in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; log "stopped"; return 0; }
    sleep 0.5
  done
  log "broker did not stop in 30 s; killing"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
}

status() {
  if pid="$(our_pid)" && answers; then
    echo "running pid=$pid bootstrap=$BOOTSTRAP"
    return 0
  fi
  echo "not running"
  return 1
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  topics) topics ;;
  stop) stop ;;
  status) status ;;
  reset) stop; rm -rf "$DATA" "$PROPS" ;;
  *) echo "usage: $0 fetch|start|topics|stop|status|reset" >&2; exit 2 ;;
esac
