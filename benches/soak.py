#!/usr/bin/env python3
"""Soak test: memory trend and upstream connection reuse of sluice under sustained load.

Starts three nginx backends (one worker, CPU 0) and sluice (--workers W, CPU 1) on free ports,
runs wrk (-t1 -cC, CPU 0) for --minutes, samples sluice's VmRSS every --interval seconds and
reads its /metrics after the warm-up and at the end. Reports RSS start/end/max, the least-squares
slope of RSS after --warmup seconds (KiB per minute), and upstream connection reuse in steady
state: 1 - (connections opened / upstream requests) between the end of the warm-up and the end.

Exit 1 if the slope exceeds --max-slope KiB/min, reuse is under --min-reuse (when given), any
response was not 2xx, or the backends or sluice exited during the run.

usage: benches/soak.py [--binary target/release/sluice] [--minutes 10] [--interval 5]
                       [--warmup 60] [--max-slope 64] [--min-reuse 0.999] [--conns 64] [--workers 1]
Needs nginx and wrk.
"""
import argparse, json, os, re, shutil, subprocess, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=None, help="sluice binary (default target/release/sluice)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=5.0, help="RSS sampling period, seconds")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds excluded from the slope and reuse figures")
    ap.add_argument("--max-slope", type=float, default=64.0, help="fail above this RSS slope, KiB/min")
    ap.add_argument("--min-reuse", type=float, default=None, help="fail under this reuse ratio (e.g. 0.999)")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            print(f"soak: {tool} is not installed", file=sys.stderr)
            return 2
    binary = b.sluice_binary(a.binary)
    run = b.tempdir("sluice-soak-")
    seconds = int(a.minutes * 60)
    procs = []
    try:
        bports = [b.free_port() for _ in range(3)]
        port, admin = b.free_port(), b.free_port()
        backends = b.nginx_backends(run, bports, cpu=0)
        procs.append(backends)
        conf = os.path.join(run, "sluice.toml")
        b.sluice_config(conf, port, bports, admin_port=admin)
        sl = b.start([binary, "run", "--config", conf, "--workers", str(a.workers)], os.path.join(run, "sluice.log"),
                     cpu=None if a.workers > 1 else 1)
        procs.append(sl)
        for p in bports + [port, admin]:
            if not b.wait_port(p):
                print(f"port {p} did not open; logs in {run}", file=sys.stderr)
                return 2
        t0 = time.time()
        wrk = subprocess.Popen((["taskset", "-c", "0"] if shutil.which("taskset") else []) +
                               ["wrk", "-t1", f"-c{a.conns}", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        samples = []  # (seconds since start, VmRSS KiB)
        snaps = {}
        warm_taken = threading.Event()
        next_t = 0.0
        backends_died = None
        while wrk.poll() is None:
            now = time.time() - t0
            if backends_died is None and (backends.poll() is not None or sl.poll() is not None):
                backends_died = now
                print(f"ERROR: {'the backends (nginx)' if backends.poll() is not None else 'sluice'} exited at "
                      f"t={now:.0f}s; the figures after that are not a soak of proxying", file=sys.stderr, flush=True)
            if now >= next_t:
                samples.append((now, b.proc_status_kib(sl.pid, "VmRSS")))
                if not a.json:
                    print(f"  t={now:6.0f}s rss={samples[-1][1]} KiB", flush=True)
                next_t += a.interval
            if not warm_taken.is_set() and now >= a.warmup:
                snaps["warm"] = (now, b.metrics(admin))
                warm_taken.set()
            time.sleep(0.2)
        out = wrk.stdout.read()
        end_metrics = b.metrics(admin)
        samples.append((time.time() - t0, b.proc_status_kib(sl.pid, "VmRSS")))
        hwm = b.proc_status_kib(sl.pid, "VmHWM")
        total_req = int(re.search(r"(\d+) requests in", out).group(1))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        sock = re.search(r"Socket errors: (.*)", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

        def counts(text):
            return (b.metric_sum(text, "sluice_upstream_connections_opened_total", pool="web"),
                    b.metric_sum(text, "sluice_upstream_requests_total", pool="web"))

        opened_end, req_end = counts(end_metrics)
        if "warm" in snaps:
            opened_w, req_w = counts(snaps["warm"][1])
        else:  # run shorter than the warm-up: whole-run figure
            opened_w, req_w = 0.0, 0.0
        d_open, d_req = opened_end - opened_w, req_end - req_w
        reuse = 1 - d_open / d_req if d_req else float("nan")
        reuse_all = 1 - opened_end / req_end if req_end else float("nan")
        steady = [(t, r) for t, r in samples if t >= a.warmup] or samples
        slope = b.linear_slope([t / 60 for t, _ in steady], [r for _, r in steady])
        rss = [r for _, r in samples]
        res = {"minutes": a.minutes, "workers": a.workers, "conns": a.conns, "requests": total_req, "rps": rps,
               "rss_start_kib": rss[0], "rss_after_warmup_kib": steady[0][1], "rss_end_kib": rss[-1],
               "rss_max_kib": max(rss), "vmhwm_kib": hwm, "slope_kib_per_min": slope, "samples": len(rss),
               "upstream_opened_steady": d_open, "upstream_requests_steady": d_req, "reuse_steady": reuse,
               "upstream_opened_total": opened_end, "upstream_requests_total": req_end, "reuse_total": reuse_all,
               "non2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": sock.group(1) if sock else ""}
        res["died_at_s"] = backends_died
        ok = (slope <= a.max_slope and (a.min_reuse is None or reuse >= a.min_reuse)
              and not res["non2xx"] and backends_died is None)
        res["ok"] = ok
        if a.json:
            print(json.dumps(res, indent=1))
        else:
            print(f"load: {total_req} requests in {a.minutes:g} min, {rps:.0f} req/s, non2xx {res['non2xx']}"
                  f"{', socket errors ' + res['socket_errors'] if res['socket_errors'] else ''}")
            print(f"RSS KiB: start {rss[0]}, after warm-up {steady[0][1]}, end {rss[-1]}, max {max(rss)}, "
                  f"VmHWM {hwm}; slope after {a.warmup:g}s: {slope:+.1f} KiB/min (limit {a.max_slope:g})")
            print(f"upstream reuse after warm-up: 1 - {d_open:.0f}/{d_req:.0f} = {reuse * 100:.4f}%"
                  f" (whole run: 1 - {opened_end:.0f}/{req_end:.0f} = {reuse_all * 100:.4f}%)")
            print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        b.teardown(procs, run)


if __name__ == "__main__":
    sys.exit(main())
