#!/usr/bin/env bash
# Fuzzes the HTTP API from outside against its own OpenAPI document: a real `sundial serve`
# (SQLite temp file, random loopback port, one admin token), Schemathesis with every check and
# every phase (examples, coverage, fuzzing, stateful), a fixed seed and a ~3 minute budget.
# Any failure (a 5xx, a response that breaks the schema, an undocumented status, ...) fails the
# script. Generic on purpose: it tests whatever operations /openapi.json lists.
#
# Needs python3 with venv; Schemathesis is installed from PyPI into target/schemathesis-venv.
# SCHEMATHESIS_MAX_TIME (seconds, default 180) and SCHEMATHESIS_SEED (default 20261130) override.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/schemathesis-venv
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'schemathesis>=4,<5'
fi

cargo build -q -p sundial
work="$(mktemp -d)"
token="schemathesis-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"

./target/debug/sundial serve --listen "127.0.0.1:$port" --db "sqlite://$work/sundial.db" \
  --token "$token" --workers 2 >"$work/serve.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
  sleep 0.1
done

status=0
"$venv/bin/schemathesis" run "$base/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --phases examples,coverage,fuzzing,stateful \
  --seed "${SCHEMATHESIS_SEED:-20261130}" \
  --max-time "${SCHEMATHESIS_MAX_TIME:-180}" \
  --request-timeout 10 \
  --workers 1 \
  --report junit --report-dir target/schemathesis \
  --continue-on-failure || status=$?

# The server must still be up after all that.
curl -fsS "$base/healthz" >/dev/null || { echo "server down after fuzzing"; cat "$work/serve.log"; exit 1; }
if [ "$status" != 0 ]; then
  tail -n 50 "$work/serve.log"
  exit "$status"
fi
echo "schemathesis: ok"
