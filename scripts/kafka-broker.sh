#!/usr/bin/env bash
# A local Kafka-protocol broker for sundial's Kafka ingest tests: tansu 0.6.0 on 127.0.0.1:19092,
# storing in SQLite under a temp dir.
#
#   scripts/kafka-broker.sh start     start it in the background (no-op when the port answers)
#   scripts/kafka-broker.sh stop      stop the one this script started
#   scripts/kafka-broker.sh status    exit 0 when the port answers
#   scripts/kafka-broker.sh topic NAME [PARTITIONS]   create a topic (tansu does not auto-create)
#
# Uses `tansu` from PATH, else installs it with cargo (a cold build takes ~17 minutes).
# Environment: SUNDIAL_KAFKA_PORT (default 19092), SUNDIAL_KAFKA_DIR (default
# ${TMPDIR:-/tmp}/sundial-kafka-broker): where tansu.db, tansu.pid and tansu.log live.
set -euo pipefail

port="${SUNDIAL_KAFKA_PORT:-19092}"
dir="${SUNDIAL_KAFKA_DIR:-${TMPDIR:-/tmp}/sundial-kafka-broker}"
url="tcp://127.0.0.1:$port"
pidfile="$dir/tansu.pid"

answers() {
  # bash's /dev/tcp: no nc needed.
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

ensure_tansu() {
  if command -v tansu >/dev/null; then return; fi
  if [ -x "$HOME/.cargo/bin/tansu" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
    return
  fi
  echo "kafka-broker: installing tansu 0.6.0 (a cold build takes ~17 minutes)" >&2
  cargo install tansu --version 0.6.0 --locked --no-default-features --features libsql >&2
  export PATH="$HOME/.cargo/bin:$PATH"
}

start() {
  mkdir -p "$dir"
  # One starter at a time (tests run in parallel processes); the others wait, then see the port.
  exec 9>"$dir/start.lock"
  flock 9
  if answers; then
    echo "kafka-broker: $url already answers"
    return
  fi
  ensure_tansu
  # The data of a previous run is of no use to tests (each uses topics of its own).
  rm -f "$dir"/tansu.db*
  (
    cd "$dir"
    # setsid: the broker outlives the test process or shell that started it.
    setsid tansu broker --listener-url "$url" --advertised-listener-url "$url" \
      --storage-engine sqlite://tansu.db >"$dir/tansu.log" 2>&1 </dev/null 9>&- &
    echo $! >"$pidfile"
  )
  for _ in $(seq 1 300); do
    if answers; then
      index_headers
      echo "kafka-broker: started on $url (pid $(cat "$pidfile"), dir $dir)"
      return
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "kafka-broker: tansu exited; its log:" >&2
      cat "$dir/tansu.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "kafka-broker: $url did not answer within 30s" >&2
  exit 1
}

# tansu 0.6.0's SQLite schema has no index on header(topition, offset_id), and its fetch looks up
# each record's headers with that join: every fetched record scans the whole header table, so
# consuming slows down with every header ever stored (5,000 messages: 10 s without, 0.3 s with).
index_headers() {
  local db="$dir/tansu.db"
  local sql="create index if not exists sundial_header_record on header (topition, offset_id)"
  for _ in $(seq 1 50); do
    if command -v sqlite3 >/dev/null; then
      sqlite3 -cmd ".timeout 5000" "$db" "$sql" 2>/dev/null && return
    elif command -v python3 >/dev/null; then
      python3 -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=5); c.execute(sys.argv[2]); c.commit()' \
        "$db" "$sql" 2>/dev/null && return
    else
      break
    fi
    sleep 0.1
  done
  echo "kafka-broker: could not index tansu's header table; consuming will be slow" >&2
}

stop() {
  if [ -f "$pidfile" ]; then
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    echo "kafka-broker: stopped"
  fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) answers ;;
  topic)
    ensure_tansu
    tansu topic create "${2:?topic name}" --broker "$url" --partitions "${3:-1}"
    ;;
  *)
    echo "usage: $0 start|stop|status|topic NAME [PARTITIONS]" >&2
    exit 2
    ;;
esac
