#!/usr/bin/env bash
# The one test command: installs (cached) and starts a Kafka-protocol broker
# (tansu), a private Postgres cluster and an S3 server (s3s-fs), runs every
# test of the workspace against them, then the client tests (JavaScript SDK,
# web app in headless Chromium), and stops them again.
#
#   infra/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
source infra/lib.sh

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$IMLOG_CACHE/target}
install_tools

RUN_DIR=$(mktemp -d /tmp/imlog-test.XXXXXX)
chmod 755 "$RUN_DIR"
trap 'stop_all; rm -rf "$RUN_DIR"' EXIT

start_postgres "$RUN_DIR"
start_tansu "$RUN_DIR"
start_s3 "$RUN_DIR"
export IMLOG_TEST_REQUIRE_KAFKA=1 IMLOG_TEST_REQUIRE_S3=1

# nextest ends with one summary line over all tests; plain cargo test is the
# fallback where it is not installed.
status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@" || status=$?
else
  cargo test --workspace --locked --no-fail-fast "$@" || status=$?
fi

# The JavaScript SDK and the web app (clients/): the SDK's types checked by
# tsc, then Node's test runner against a real `imlog serve` — the SDK's
# tests and the two-browser end-to-end test in headless Chromium.
install_client_tools
# The tests' `imlog-proc` is the real command line, already built above
# (building `-p imlog` alone would rebuild crates under other features).
export IMLOG_BIN=${IMLOG_BIN:-$CARGO_TARGET_DIR/debug/imlog-proc}
[ -x "$IMLOG_BIN" ] || cargo build -p imlog-tests --bin imlog-proc --locked
(
  cd clients
  npx tsc -p js/tsconfig.json
  npx tsc -p web/tsconfig.json
  node --experimental-websocket --test --test-concurrency=1 tests/
) || status=$?
exit $status
