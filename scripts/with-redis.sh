#!/usr/bin/env bash
# Runs a command with REDIS_URL pointing at a reachable Redis.
# If REDIS_URL is set, that Redis must answer. Otherwise a private redis-server is started
# on a free loopback port (installed with apt-get when missing and running as root), with
# AOF persistence in a temporary directory, and stopped again when the command ends.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PY:-$here/.venv/bin/python}

ping() { "$py" -c "import redis,sys; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=2).ping()" "$1" 2>/dev/null; }

if [ -n "${REDIS_URL:-}" ]; then
  if ! ping "$REDIS_URL"; then
    echo "with-redis: REDIS_URL=$REDIS_URL does not answer; unset it to start a private redis-server" >&2
    exit 1
  fi
  exec "$@"
fi

if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "with-redis: installing redis-server with apt-get" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >&2
  else
    echo "with-redis: redis-server not found. Install it (Debian/Ubuntu: sudo apt-get install redis-server;" \
         "macOS: brew install redis) or set REDIS_URL to a running Redis." >&2
    exit 1
  fi
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/faultprint-redis.XXXXXX")
port=$("$py" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
# AOF persistence, fsynced every second, as faultprint needs of every Redis it uses: a Redis
# restarted without its data loses the reference cases (docs: README, "Redis durability").
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec --dir "$dir" \
  --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
# Waits for redis-server to exit before removing its directory (it writes its log while it
# stops), and never fails: the command's own exit status is what this script returns.
stop() {
  local pid
  pid=$(cat "$dir/redis.pid" 2>/dev/null || true)
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$dir" 2>/dev/null || true
}
trap stop EXIT
export REDIS_URL="redis://127.0.0.1:$port/0"
for _ in $(seq 50); do ping "$REDIS_URL" && break; sleep 0.1; done
echo "with-redis: private redis-server at $REDIS_URL" >&2
"$@"
