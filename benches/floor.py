#!/usr/bin/env python3
"""How close to nginx any tokio proxy can get here: nginx, sluice and the floor side by side.

The floor (benches/floor/, its own crate) is the least work a tokio reverse proxy can do per
request: parse the head, add X-Forwarded-For, round robin over pooled keep-alive connections,
copy the response; no checks, timeouts or metrics. Its CPU per request bounds from below what
sluice (or any proxy on tokio's readiness model) can reach on this machine and load.

The method of guard.py and peers.py: three nginx backends (one worker) and wrk (-t1 -c64) on
CPU 0, each proxy alone on CPU 1 with one worker; interleaved rounds, medians. Prints req/s and
user, system and total CPU microseconds per request, and each as a ratio to nginx's.

usage: benches/floor.py [--binary target/release/sluice] [--rounds 5] [--seconds 3] [--path /]
"""
import argparse, os, shutil, statistics, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402
from guard import wrk  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def build_floor():
    target = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(b.REPO, "target"), "floor")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                    os.path.join(HERE, "floor", "Cargo.toml"), "--target-dir", target], check=True)
    return os.path.join(target, "release", "floor")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=None, help="sluice binary (default target/release/sluice)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--path", default="/", help="/ (10-byte body) or /big (64 KiB)")
    a = ap.parse_args()
    missing = [t for t in ("nginx", "wrk") if not shutil.which(t)]
    if missing:
        raise SystemExit(f"needs nginx and wrk (missing: {', '.join(missing)})")
    binary = b.sluice_binary(a.binary)
    floor = build_floor()
    run = b.tempdir("sluice-floor-")
    procs = []
    try:
        bports = [b.free_port() for _ in range(3)]
        ports = {name: b.free_port() for name in ("nginx", "sluice", "floor")}
        procs.append(b.nginx_backends(run, bports, cpu=0))
        procs.append(b.nginx_proxy(run, ports["nginx"], bports, cpu=1))
        pg = {"nginx": procs[-1].pid}
        conf = os.path.join(run, "sluice.toml")
        b.sluice_config(conf, ports["sluice"], bports)
        procs.append(b.start([binary, "run", "--config", conf, "--workers", "1"], os.path.join(run, "sluice.log"), 1))
        pg["sluice"] = procs[-1].pid
        procs.append(b.start([floor, f"127.0.0.1:{ports['floor']}"] + [f"127.0.0.1:{p}" for p in bports],
                             os.path.join(run, "floor.log"), 1))
        pg["floor"] = procs[-1].pid
        for p in bports + list(ports.values()):
            if not b.wait_port(p):
                raise SystemExit(f"port {p} did not open; logs in {run}")
        for port in ports.values():  # warm-up: open the upstream connections
            wrk(port, 1, a.conns, path=a.path)
        runs = {n: [] for n in ports}
        for _ in range(a.rounds):
            for name, port in ports.items():
                runs[name].append(wrk(port, a.seconds, a.conns, pg[name], a.path))
        keys = ("rps", "user_us", "system_us", "cpu_us_per_req")
        med = {n: {k: statistics.median(r[k] for r in rs) for k in keys} for n, rs in runs.items()}
        print(f"path {a.path}, {a.rounds} rounds of {a.seconds} s, medians (ratio to nginx)")
        print(f"{'':7} {'req/s':>16} {'user us/req':>16} {'system us/req':>16} {'cpu us/req':>16}")
        for name, m in med.items():
            cells = [f"{m[k]:8.{0 if k == 'rps' else 2}f} (x{m[k] / med['nginx'][k]:.2f})" for k in keys]
            print(f"{name:7} " + " ".join(f"{c:>16}" for c in cells))
        errors = {n: sum(r["non2xx"] for r in rs) for n, rs in runs.items()}
        if any(errors.values()):
            print(f"non-2xx responses: {errors}")
            return 1
        return 0
    finally:
        b.teardown(procs, run)


if __name__ == "__main__":
    sys.exit(main())
