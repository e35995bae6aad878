# Shared by the infra scripts: install (cached) and start the real components
# the tests need, on a machine without Docker. Source it; do not run it.
#
# Tools are built from crates.io with `cargo install --locked` into
# $IMLOG_CACHE/tools (default ~/.cache/imlog/tools), so the first run on a
# fresh machine takes ~25 minutes (tansu dominates) and later runs none.

IMLOG_CACHE=${IMLOG_CACHE:-$HOME/.cache/imlog}
IMLOG_TOOLS=$IMLOG_CACHE/tools
TANSU_VERSION=0.6.0
S3S_FS_VERSION=0.14.1
export PATH="$IMLOG_TOOLS/bin:$PATH"

log() { printf '[infra] %s\n' "$*" >&2; }
die() { printf '[infra] error: %s\n' "$*" >&2; exit 1; }

# cargo_install CRATE VERSION BIN [FEATURES]: builds BIN once into the cache.
cargo_install() {
  local crate=$1 version=$2 bin=$3 features=${4:-}
  if [ -x "$IMLOG_TOOLS/bin/$bin" ] && "$IMLOG_TOOLS/bin/$bin" --version 2>/dev/null | grep -q "$version"; then
    return 0
  fi
  log "installing $crate $version (cached in $IMLOG_TOOLS; the first time takes a while)"
  local args=(install "$crate" --version "$version" --locked --root "$IMLOG_TOOLS")
  [ -n "$features" ] && args+=(--features "$features")
  CARGO_TARGET_DIR="$IMLOG_CACHE/tools-target" cargo "${args[@]}" >&2 || die "cargo install $crate failed"
}

install_tools() {
  cargo_install tansu "$TANSU_VERSION" tansu dynostore,libsql
  cargo_install s3s-fs "$S3S_FS_VERSION" s3s-fs binary
  ensure_postgres_binaries
}

# The client tests' tools: Debian's Chromium (browsers cannot be downloaded
# here, so playwright-core drives this one) and the npm packages of
# clients/package-lock.json, from an npm cache kept in $IMLOG_CACHE/npm.
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
export CHROMIUM

install_client_tools() {
  command -v node >/dev/null && command -v npm >/dev/null || die "Node.js (>= 20) and npm are needed for the client tests"
  if [ ! -x "$CHROMIUM" ]; then
    [ "$(id -u)" = 0 ] || die "Chromium not found at $CHROMIUM: apt-get install chromium (or set CHROMIUM)"
    log "installing chromium from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2 || die "apt-get install chromium failed"
  fi
  (cd clients && npm ci --cache "$IMLOG_CACHE/npm" --prefer-offline --no-audit --no-fund --loglevel=error >&2) \
    || die "npm ci in clients/ failed"
}

pg_bin_dir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  command -v pg_ctl >/dev/null && { dirname "$(readlink -f "$(command -v pg_ctl)")"; return 0; }
  return 1
}

ensure_postgres_binaries() {
  pg_bin_dir >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "Postgres server binaries not found: install postgresql (initdb, pg_ctl)"
  log "installing postgresql from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2 || die "apt-get install postgresql failed"
}

# A free TCP port outside the ephemeral range 32768-60999 (a TIME_WAIT
# socket there can leave a server bound but deaf).
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 10000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

wait_for_port() {
  local port=$1 what=$2 pid=$3
  for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || die "$what exited before listening (see its log)"
    sleep 0.1
  done
  die "$what did not listen on $port within 60s"
}

# Postgres refuses to run as root: the cluster runs as `postgres` then.
as_pg_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# start_postgres DIR: a private cluster for tests; sets IMLOG_TEST_POSTGRES_URL.
start_postgres() {
  local dir=$1/postgres bin port
  bin=$(pg_bin_dir) || die "no Postgres binaries"
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  chmod 700 "$dir"
  as_pg_owner "$bin/initdb" -D "$dir" -U imlog --auth=trust -E UTF8 --locale=C >/dev/null
  port=$(free_port)
  # fsync off: tests kill processes, not machines; it keeps the suite fast.
  as_pg_owner "$bin/pg_ctl" start -D "$dir" -w -t 60 -l "$dir/server.log" \
    -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='' -c max_connections=400 -c fsync=off" >/dev/null \
    || { cat "$dir/server.log" >&2; die "Postgres did not start"; }
  PG_DIR=$dir
  export IMLOG_TEST_POSTGRES_URL="postgres://imlog@127.0.0.1:$port/postgres"
  log "Postgres on 127.0.0.1:$port"
}

stop_postgres() {
  [ -n "${PG_DIR:-}" ] && as_pg_owner "$(pg_bin_dir)/pg_ctl" stop -D "$PG_DIR" -m fast -w >/dev/null 2>&1 || true
}

# start_tansu DIR: a Kafka-protocol broker with sqlite storage; sets IMLOG_TEST_KAFKA_BROKERS.
start_tansu() {
  local dir=$1/tansu port
  mkdir -p "$dir"
  port=$(free_port)
  # tansu reads .env from its working directory: start it in an empty one.
  (cd "$dir" && exec tansu broker --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "sqlite://tansu.db" --silent >"$dir/tansu.log" 2>&1) &
  TANSU_PID=$!
  wait_for_port "$port" tansu "$TANSU_PID"
  export IMLOG_TEST_KAFKA_BROKERS="127.0.0.1:$port"
  log "tansu on 127.0.0.1:$port"
}

# start_s3 DIR: s3s-fs with a bucket; sets IMLOG_TEST_S3_*.
start_s3() {
  local dir=$1/s3 port
  mkdir -p "$dir/imlog-test"
  port=$(free_port)
  s3s-fs --host 127.0.0.1 --port "$port" --access-key imlogtest --secret-key imlogtestsecret "$dir" \
    >"$1/s3s-fs.log" 2>&1 &
  S3_PID=$!
  wait_for_port "$port" s3s-fs "$S3_PID"
  # IMLOG_TEST_S3_DIR: where s3s-fs keeps objects and multipart parts, so
  # that tests can check that nothing is left behind.
  export IMLOG_TEST_S3_ENDPOINT="http://127.0.0.1:$port" IMLOG_TEST_S3_BUCKET=imlog-test \
    IMLOG_TEST_S3_ACCESS_KEY=imlogtest IMLOG_TEST_S3_SECRET_KEY=imlogtestsecret \
    IMLOG_TEST_S3_DIR="$dir"
  log "s3s-fs on 127.0.0.1:$port"
}

stop_all() {
  [ -n "${TANSU_PID:-}" ] && kill "$TANSU_PID" 2>/dev/null
  [ -n "${S3_PID:-}" ] && kill "$S3_PID" 2>/dev/null
  stop_postgres
  wait 2>/dev/null || true
}
