#!/bin/bash
# Lock contention on the request path, counted: futex system calls (what a contended lock or a
# blocked thread costs; an uncontended std or parking_lot lock makes none), context switches
# and CPU migrations of sluice under wrk, with WORKERS workers.
# usage: benches/lock_contention.sh [WORKERS] [BINARY]   (needs nginx, wrk, perf; run from the checkout)
set -u
W=${1:-1}; B=${2:-target/release/sluice}
CONF=$(mktemp /tmp/sluice-lock-XXXX.toml)
cat > "$CONF" <<T
[[listener]]
name = "bench"
bind = "127.0.0.1:18082"
[[route]]
listener = "bench"
pool = "web"
[log]
access_log = false
[admin]
bind = "127.0.0.1:19901"
[pool.web]
algorithm = "round_robin"
backends = [ { address = "127.0.0.1:19001" }, { address = "127.0.0.1:19002" }, { address = "127.0.0.1:19003" } ]
T
RUN=/tmp/sluice-bench; mkdir -p $RUN
nginx -c "$(pwd)/../shared/bench/backends.nginx.conf" -p $RUN >/dev/null 2>&1 &
sleep 0.5
$B run --config "$CONF" --workers $W > $RUN/sluice.log 2>&1 &
SP=$!
sleep 1
wrk -t1 -c64 -d2s http://127.0.0.1:18082/ >/dev/null
wrk -t1 -c64 -d8s http://127.0.0.1:18082/ > $RUN/wrk.txt &
sleep 1
perf stat -e 'syscalls:sys_enter_futex,context-switches,cpu-migrations' -p $SP -- sleep 5 2> $RUN/stat.txt
wait %3 2>/dev/null; sleep 1
kill $SP; pkill -f backends.nginx.conf; sleep 0.3
echo "workers $W (counts over 5 s of the 8 s run):"
grep Requests/sec $RUN/wrk.txt; grep -E "futex|context|migr" $RUN/stat.txt
rm -f "$CONF"
