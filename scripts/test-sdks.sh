#!/usr/bin/env bash
# The Python and TypeScript SDKs: installs both from this repository into throwaway
# environments (a venv; a node_modules from `npm pack`), type-checks a TypeScript consumer
# against the installed package, runs each SDK's unit tests against a real server, then the
# worker conformance suite (sdks/conformance/) for the Rust, Python and TypeScript workers.
# Needs python3 with venv, node >= 20.3 and npm; reaches PyPI and npm for setuptools and tsc.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

cargo build -q -p sundial --bin sundial --example conformance_worker
export SUNDIAL_BIN="$repo/target/debug/sundial"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "sdks: installing the Python SDK into a venv"
python3 -m venv --without-pip "$tmp/venv" # the system pip installs into it: much faster than ensurepip
py="$tmp/venv/bin/python"
cp -r sdks/python "$tmp/python-sdk" # built from a copy: setuptools leaves build/ beside the source
python3 -m pip --python "$py" install -q --disable-pip-version-check "$tmp/python-sdk" \
  || { "$py" -m ensurepip -q && "$py" -m pip install -q --disable-pip-version-check "$tmp/python-sdk"; }

echo "sdks: installing the TypeScript SDK (npm pack) into a node_modules"
mkdir "$tmp/node"
(cd "$tmp/node" && npm init -y >/dev/null \
  && npm install -q --no-audit --no-fund "$tmp/$(npm pack -q "$repo/sdks/typescript" --pack-destination "$tmp")" typescript@5 >/dev/null)
cp sdks/typescript/test/consumer.ts "$tmp/node/"
(cd "$tmp/node" && npx tsc --noEmit --strict --module nodenext --moduleResolution nodenext --target es2022 --lib es2022,dom consumer.ts)
echo "sdks: TypeScript types check"

echo "sdks: Python SDK unit tests (installed package)"
(cd sdks/python/tests && "$py" -m unittest test_client test_worker)

echo "sdks: TypeScript SDK unit tests"
(cd sdks/typescript && node --test test/*.test.js)

echo "sdks: worker conformance (rust, python, typescript)"
(cd sdks/conformance && SUNDIAL_CONF_PYTHON="$py" SUNDIAL_CONF_NODE_DIR="$tmp/node" SUNDIAL_CONF_REQUIRE=1 \
  "$py" -m unittest -v test_conformance)
