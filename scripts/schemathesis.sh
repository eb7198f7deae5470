#!/usr/bin/env bash
# Fuzzes the HTTP API from outside against its own OpenAPI document: a real `sundial serve`
# (SQLite temp file, random loopback port, one admin token), Schemathesis with every check and
# every phase (examples, coverage, fuzzing, stateful), a fixed seed and a ~3 minute budget.
# Any failure (a 5xx, a response that breaks the schema, an undocumented status, ...) fails the
# script. Generic on purpose: it tests whatever operations /openapi.json lists.
#
# Needs python3 with venv; Schemathesis is installed from PyPI into target/schemathesis-venv.
# SCHEMATHESIS_MAX_TIME (seconds, default 180) and SCHEMATHESIS_SEED (default 20261130) override.
# No example database is kept between runs, so a seed always means the same requests. Checks
# left out for one operation (false positives no schema can avoid) are in scripts/schemathesis.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/schemathesis-venv
# A venv that cannot run (missing, or moved with its target/: its scripts name their old path)
# is made again.
if ! "$venv/bin/schemathesis" --version >/dev/null 2>&1; then
  rm -rf "$venv"
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

# Requests the server answered, from its own counter (so the figure is what really arrived).
answered() {
  curl -fsS -H "Authorization: Bearer $token" "$base/metrics" \
    | awk -v want="$1" '/^sundial_http_requests_total\{/ && $1 ~ want { n += $2 } END { printf "%d", n }'
}
before="$(answered 'status="')"

set +e
"$venv/bin/schemathesis" --no-color --config-file scripts/schemathesis.toml run "$base/openapi.json" \
  --header "Authorization: Bearer $token" \
  --phases examples,coverage,fuzzing,stateful \
  --seed "${SCHEMATHESIS_SEED:-20261130}" \
  --max-time "${SCHEMATHESIS_MAX_TIME:-180}" \
  --request-timeout 10 \
  --workers 1 \
  --generation-database none \
  --report junit --report-dir target/schemathesis \
  --continue-on-failure 2>&1 | tee "$work/st.out"
status="${PIPESTATUS[0]}"
set -e
requests=$(($(answered 'status="') - before))
server_errors="$(answered 'status="5')"

# One line for the record: operations tested of those documented, requests the server answered
# (and how many were 5xx), and Schemathesis's count of unique failures.
ops="$(awk '/^API Operations:/ { f = 1 } f && /Selected:/ { sel = $2 } f && /Tested:/ { print $2 " of " substr(sel, index(sel, "/") + 1); exit }' "$work/st.out")"
failures="$(grep -oE '[0-9]+ unique failures?' "$work/st.out" | grep -oE '^[0-9]+' || echo 0)"
echo "schemathesis summary: operations ${ops:-?}, requests $requests (5xx: $server_errors), failures $failures, seed ${SCHEMATHESIS_SEED:-20261130}, ${SCHEMATHESIS_MAX_TIME:-180}s"

# The server must still be up after all that.
curl -fsS "$base/healthz" >/dev/null || { echo "server down after fuzzing"; cat "$work/serve.log"; exit 1; }
if [ "$status" != 0 ]; then
  tail -n 50 "$work/serve.log"
  exit "$status"
fi
echo "schemathesis: ok"
