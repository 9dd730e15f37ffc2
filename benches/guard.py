#!/usr/bin/env python3
"""CI regression guard: sluice's CPU time per request against nginx as a reverse proxy.

The method of the side-by-side benchmark (peers.py): three nginx backends (one worker) and wrk
(-t1 -c64) share CPU 0; each proxy runs alone on CPU 1 with one worker (nginx worker_processes 1,
sluice --workers 1), round robin over the three backends with upstream keep-alive. Rounds are
interleaved (nginx, sluice, nginx, sluice, ...); each proxy's CPU time per request is the
user+system time of its process group (from /proc) over the round divided by the requests wrk
completed, and the median over the rounds is compared. CPU per request is the steadiest figure
on a shared machine; req/s is printed for information only.

Exit 1 if sluice's CPU/request exceeds nginx's by more than --max-ratio (or a round had errors).
If nginx or wrk is missing: prints "skipped: nginx/wrk not installed" and exits 0.

`--compare OTHER` runs a second sluice build beside them, in the same interleaved rounds (for
measuring a change: its figures are printed, the verdict is the first binary's).

usage: benches/guard.py [--binary target/release/sluice] [--compare OTHER] [--rounds 3] [--seconds 3] [--max-ratio 1.5]
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402


def wrk(port, seconds, conns, pgid=None, path="/"):
    """One wrk round; with `pgid`, the CPU time that process group spent per request (user,
    system and both, in microseconds)."""
    cpu0 = b.group_cpu_split(pgid) if pgid else (0.0, 0.0)
    cmd = (["taskset", "-c", "0"] if shutil.which("taskset") else []) + \
        ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    cpu1 = b.group_cpu_split(pgid) if pgid else (0.0, 0.0)
    user, system = ((c1 - c0) * 1e6 / total if pgid and total else 0.0 for c0, c1 in zip(cpu0, cpu1))
    return {"rps": rps, "requests": total, "cpu_us_per_req": user + system, "user_us": user,
            "system_us": system, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sock.group(1) if sock else ""}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=None, help="sluice binary (default target/release/sluice)")
    ap.add_argument("--compare", default=None, help="another sluice binary, measured alongside")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--max-ratio", type=float, default=1.5,
                    help="fail if sluice's CPU us/request > this x nginx's (docs/performance-memory.md)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    missing = [t for t in ("nginx", "wrk") if not shutil.which(t)]
    if missing:
        print(f"skipped: nginx/wrk not installed (missing: {', '.join(missing)})")
        return 0
    binary = b.sluice_binary(a.binary)
    run = b.tempdir("sluice-guard-")
    procs = []
    try:
        bports = [b.free_port() for _ in range(3)]
        nport, sport = b.free_port(), b.free_port()
        procs.append(b.nginx_backends(run, bports, cpu=0))
        procs.append(b.nginx_proxy(run, nport, bports, cpu=1))
        pg = {"nginx": procs[-1].pid}
        conf = os.path.join(run, "sluice.toml")
        # Metrics on, as issue 9 asks and users run it (an [admin] table).
        b.sluice_config(conf, sport, bports, admin_port=b.free_port())
        procs.append(b.start([binary, "run", "--config", conf, "--workers", "1"], os.path.join(run, "sluice.log"), 1))
        pg["sluice"] = procs[-1].pid
        targets = {"nginx": nport, "sluice": sport}
        if a.compare:
            cport = b.free_port()
            cconf = os.path.join(run, "compare.toml")
            b.sluice_config(cconf, cport, bports, admin_port=b.free_port())
            procs.append(b.start([a.compare, "run", "--config", cconf, "--workers", "1"],
                                 os.path.join(run, "compare.log"), 1))
            pg["compare"] = procs[-1].pid
            targets["compare"] = cport
        for p in bports + list(targets.values()):
            if not b.wait_port(p):
                print(f"port {p} did not open; logs in {run}", file=sys.stderr)
                for f in os.listdir(run):
                    if f.endswith((".log", ".err")):
                        sys.stderr.write(f"--- {f}\n" + open(os.path.join(run, f)).read())
                return 2
        for port in targets.values():  # warm-up: open the upstream pools
            wrk(port, 1, a.conns)
        runs = {n: [] for n in targets}
        for _ in range(a.rounds):
            for name, port in targets.items():
                runs[name].append(wrk(port, a.seconds, a.conns, pg[name]))
        res = {n: {"rps": statistics.median(r["rps"] for r in rs),
                   "cpu_us_per_req": statistics.median(r["cpu_us_per_req"] for r in rs),
                   "user_us": statistics.median(r["user_us"] for r in rs),
                   "system_us": statistics.median(r["system_us"] for r in rs),
                   "rounds_cpu_us_per_req": [round(r["cpu_us_per_req"], 2) for r in rs],
                   "non2xx": sum(r["non2xx"] for r in rs),
                   "socket_errors": [r["socket_errors"] for r in rs if r["socket_errors"]]}
               for n, rs in runs.items()}
        ratio = res["sluice"]["cpu_us_per_req"] / res["nginx"]["cpu_us_per_req"]
        errors = res["sluice"]["non2xx"] or res["nginx"]["non2xx"]
        ok = ratio <= a.max_ratio and not errors
        if a.json:
            print(json.dumps({"targets": res, "ratio": ratio, "max_ratio": a.max_ratio, "ok": ok}, indent=1))
        else:
            for name, r in res.items():
                print(f"{name:7} {r['rps']:9.0f} req/s  {r['cpu_us_per_req']:7.2f} cpu us/req "
                      f"(user {r['user_us']:.2f}, system {r['system_us']:.2f}) "
                      f"(rounds {r['rounds_cpu_us_per_req']})  non2xx {r['non2xx']} {' '.join(r['socket_errors'])}")
            print(f"sluice/nginx cpu per request: x{ratio:.3f} (limit x{a.max_ratio:g}): {'PASS' if ok else 'FAIL'}")
            if errors:
                print("FAIL: non-2xx responses during the rounds")
        return 0 if ok else 1
    finally:
        b.teardown(procs, run)


if __name__ == "__main__":
    sys.exit(main())
