#!/usr/bin/env bash
# Compares sluice's two runtime architectures on the benchmark's backends (see docs/architecture.md):
#   per-core: one current-thread runtime per worker, SO_REUSEPORT sockets, per-worker upstream pools
#   shared:   one multi-thread runtime, one socket per listener, one shared upstream pool
# usage: benches/runtime_modes.sh [rounds] [seconds]   (needs nginx and wrk; run from the repo root)
set -euo pipefail
rounds=${1:-3}; secs=${2:-4}
run=/tmp/sluice-bench; mkdir -p "$run"
bin=$(pwd)/target/release/sluice
[ -x "$bin" ] || cargo build --release --quiet
cat > "$run/modes.toml" <<'TOML'
[[listener]]
name = "bench"
bind = "127.0.0.1:18082"
[[route]]
pool = "web"
[log]
access_log = false
[pool.web]
backends = [{ address = "127.0.0.1:19001" }, { address = "127.0.0.1:19002" }, { address = "127.0.0.1:19003" }]
TOML
taskset -c 0 nginx -c "$(pwd)/../shared/bench/backends.nginx.conf" -p "$run" &
trap 'kill %1 2>/dev/null || true; pkill -f "sluice run --config $run/modes.toml" || true' EXIT
sleep 0.5

# one measurement: mode, workers, cpu list for sluice, wrk connections
measure() {
  local mode=$1 workers=$2 cpus=$3 conns=$4
  SLUICE_RUNTIME=$mode taskset -c "$cpus" "$bin" run --config "$run/modes.toml" --workers "$workers" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/18082) 2>/dev/null && break; sleep 0.1; done
  taskset -c 0 wrk -t1 -c"$conns" -d1s http://127.0.0.1:18082/ >/dev/null
  local c0 c1 out n rps
  c0=$(awk '{print $14+$15}' /proc/$pid/stat)
  out=$(taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" http://127.0.0.1:18082/)
  c1=$(awk '{print $14+$15}' /proc/$pid/stat)
  n=$(echo "$out" | grep -oE '^ +[0-9]+ requests' | grep -oE '[0-9]+')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 -c "print(f'{\"$mode\":9} workers={$workers} cpus=$cpus  req/s={float($rps):9.0f}  cpu_us/req={($c1-$c0)*1e6/$(getconf CLK_TCK)/$n:6.2f}')"
}

for r in $(seq "$rounds"); do
  echo "round $r"
  for mode in per-core shared; do measure "$mode" 1 1 64; done
  for mode in per-core shared; do measure "$mode" 2 0,1 64; done
done
