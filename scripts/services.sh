#!/usr/bin/env bash
# Starts local RabbitMQ (127.0.0.1:5672, guest/guest) and Redis (127.0.0.1:6379) if
# they are not already answering, and waits until both do. Fails loudly otherwise.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2 secs=$3
  for _ in $(seq 1 $((secs * 5))); do
    port_open "$port" && return 0
    sleep 0.2
  done
  echo "services: $name did not come up on 127.0.0.1:$port within ${secs}s" >&2
  return 1
}

if ! port_open 6379; then
  echo "services: starting redis-server"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /tmp --logfile /tmp/translation-worker-redis.log
  wait_port 6379 redis 30
fi

if ! port_open 5672; then
  echo "services: starting rabbitmq-server"
  if command -v rabbitmq-server >/dev/null; then RMQ=rabbitmq-server; else RMQ=/usr/sbin/rabbitmq-server; fi
  "$RMQ" -detached
  wait_port 5672 rabbitmq 120
  # The port opens before the broker accepts logins; wait for it to finish booting.
  if command -v rabbitmqctl >/dev/null; then
    timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true
  fi
fi

port_open 6379 || { echo "services: redis is not reachable" >&2; exit 1; }
port_open 5672 || { echo "services: rabbitmq is not reachable" >&2; exit 1; }
echo "services: rabbitmq 127.0.0.1:5672 and redis 127.0.0.1:6379 are up"
