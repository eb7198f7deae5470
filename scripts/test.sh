#!/usr/bin/env bash
# Runs every test of sundial. Needs: a Rust toolchain, python3 (with venv; Schemathesis comes from
# PyPI), Node.js with npm and Chromium
# (both installed from Debian's packages when missing and run as root), tansu (installed by
# scripts/kafka-broker.sh when missing), and PostgreSQL reachable at
# $SUNDIAL_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/sundial_test; the database
# is created if missing). On this project's machines a local PostgreSQL is started if it is down.
set -euo pipefail
cd "$(dirname "$0")/.."

export SUNDIAL_TEST_PG_URL="${SUNDIAL_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/sundial_test}"
admin_url="${SUNDIAL_TEST_PG_URL%/*}/postgres"

if command -v pg_isready >/dev/null && ! pg_isready -d "$admin_url" -q; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "starting local PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_isready -d "$admin_url" -q && break; sleep 1; done
fi
db="${SUNDIAL_TEST_PG_URL##*/}"
if command -v psql >/dev/null; then
  psql "$admin_url" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
    || psql "$admin_url" -qc "CREATE DATABASE \"$db\""
fi

# The dashboard's browser tests drive a real headless Chromium with Node's playwright-core.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing chromium for the dashboard test"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if ! command -v npm >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing node and npm for the dashboard test"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi

# The Kafka tests need a Kafka-protocol broker (tansu); start it up front so a missing install
# (~17 minutes of cargo install) shows here rather than inside a test.
./scripts/kafka-broker.sh start

cargo test --workspace --all-targets -- --test-threads 4
cargo test --workspace --doc

cargo build -p sundial

# Dashboard in a browser: a real `sundial serve`, clicked through by Playwright in Chromium;
# screenshots land in target/screenshots/.
# Every round-2 route is served now: the dashboard's steps for them are mandatory.
(cd crates/sundial-server/ui && npm ci --no-audit --no-fund --loglevel=error && SUNDIAL_UI_ALL_ROUTES=1 npm test)

./scripts/test-sdks.sh # the Python and TypeScript SDKs; worker conformance for all three workers

# The HTTP API fuzzed from outside against its own /openapi.json (Schemathesis, every check and
# phase, fixed seed, ~3 minutes); any failure fails the run. Prints a one-line summary.
./scripts/schemathesis.sh

# Benchmark smoke: every scenario at small size on both stores; correctness only (each scenario
# checks exactly N runs succeeded, none twice), no timing assertions.
./target/debug/sundial bench --n 2000 --json > /dev/null
./target/debug/sundial bench --n 2000 --json --db "${SUNDIAL_TEST_PG_URL%/*}/sundial_bench_smoke" > /dev/null
echo "bench smoke: ok"
