#!/usr/bin/env python3
"""Does throughput scale with workers? Each proxy worker gets the same share of CPU time (a cgroup
CPU quota, as a container's CPU limit gives it), so the proxy, not the load generator, is what
saturates, even on a machine with as few cores as the benchmark VM (2): two workers under twice
the quota should serve twice the requests, unless they contend (a shared lock, a shared counter,
a shared queue).

sluice runs with its metrics on (an `[admin]` table), so every request also writes its counters.
For each target (sluice's per-core runtimes, sluice's one shared multi-thread runtime,
`SLUICE_RUNTIME=shared`, and nginx), with 1 and with 2 workers: the proxy runs in its own cgroup
with a quota of `workers x --share` of a CPU (period 10 ms), free to run on every core; wrk
(-t1 -c64) and three nginx backends share the machine with it, unpinned. Rounds are
interleaved; the medians of req/s and CPU per request are reported with the scaling factor
req/s(2 workers) / req/s(1 worker). 2.0 is perfect scaling.

Needs root (to create cgroups: v1 `cpu` controller or v2 `cpu.max`), nginx and wrk; otherwise
prints "skipped: ..." and exits 0.

usage: benches/scaling.py [--binary BIN ...] [--rounds 3] [--seconds 4] [--share 0.4]
(`--binary` more than once compares builds: each is run per-core, named by its path.)
"""
import argparse, os, re, shutil, statistics, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402

PERIOD_US = 10_000


class Cgroup:
    """A CPU-quota cgroup: v1 (`/sys/fs/cgroup/cpu`) or v2 (`/sys/fs/cgroup` with `cpu.max`)."""

    def __init__(self, name, cpus):
        v1 = "/sys/fs/cgroup/cpu"
        if os.path.isdir(v1):
            self.path = os.path.join(v1, name)
            os.makedirs(self.path, exist_ok=True)
            self._write("cpu.cfs_period_us", PERIOD_US)
            self._write("cpu.cfs_quota_us", int(cpus * PERIOD_US))
        else:
            root = "/sys/fs/cgroup"
            if "cpu" not in open(os.path.join(root, "cgroup.controllers")).read().split():
                raise OSError("no cpu controller")
            with open(os.path.join(root, "cgroup.subtree_control"), "w") as f:
                f.write("+cpu")
            self.path = os.path.join(root, name)
            os.makedirs(self.path, exist_ok=True)
            self._write("cpu.max", f"{int(cpus * PERIOD_US)} {PERIOD_US}")

    def _write(self, file, value):
        with open(os.path.join(self.path, file), "w") as f:
            f.write(str(value))

    def wrap(self, cmd):
        """`cmd` started inside the cgroup (its threads and children follow)."""
        procs = os.path.join(self.path, "cgroup.procs")
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh"] + cmd

    def remove(self):
        try:
            os.rmdir(self.path)
        except OSError:
            pass


def wrk(port, seconds, pgid):
    cpu0 = b.group_cpu_seconds(pgid)
    out = subprocess.run(["wrk", "-t1", "-c64", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "cpu_us": (b.group_cpu_seconds(pgid) - cpu0) * 1e6 / max(total, 1),
            "errors": int(bad.group(1)) if bad else 0}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", action="append", default=None,
                    help="sluice binary (default target/release/sluice); repeat to compare builds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--share", type=float, default=0.4, help="CPUs of quota per worker")
    a = ap.parse_args()
    missing = [t for t in ("nginx", "wrk") if not shutil.which(t)]
    if missing:
        print(f"skipped: nginx/wrk not installed (missing: {', '.join(missing)})")
        return 0
    binaries = [b.sluice_binary(x) for x in a.binary] if a.binary else [b.sluice_binary(None)]
    # (name, binary, runtime): with one build, both of its runtimes; with several, per-core each.
    sluices = ([("sluice", binaries[0], "per-core"), ("sluice-shared", binaries[0], "shared")]
               if len(binaries) == 1 else [(x, x, "per-core") for x in binaries])
    names = [n for n, _, _ in sluices] + ["nginx"]
    run = b.tempdir("sluice-scaling-")
    procs, groups = [], []
    try:
        bports = [b.free_port() for _ in range(3)]
        procs.append(b.nginx_backends(run, bports, cpu=None))
        targets = {}  # (name, workers) -> (port, pgid)
        for workers in (1, 2):
            for name in names:
                try:
                    group = Cgroup(f"sluice-scaling-{os.getpid()}-{len(targets)}", workers * a.share)
                except OSError as e:
                    print(f"skipped: cannot create a CPU-quota cgroup ({e}); run as root")
                    return 0
                groups.append(group)
                port = b.free_port()
                if name == "nginx":
                    p = b.nginx_proxy(run, port, bports, cpu=None, workers=workers, group=group.wrap)
                else:
                    _, binary, runtime = next(s for s in sluices if s[0] == name)
                    conf = os.path.join(run, f"sluice-{len(targets)}.toml")
                    # Metrics on, as users run it (an [admin] table): every request counts.
                    b.sluice_config(conf, port, bports, admin_port=b.free_port())
                    env = {**os.environ, "SLUICE_RUNTIME": runtime}
                    p = subprocess.Popen(group.wrap([binary, "run", "--config", conf, "--workers", str(workers)]),
                                         stdout=open(os.path.join(run, f"sluice-{len(targets)}.log"), "w"),
                                         stderr=subprocess.STDOUT, start_new_session=True, env=env)
                procs.append(p)
                targets[(name, workers)] = (port, p.pid)
        for port in bports + [port for port, _ in targets.values()]:
            if not b.wait_port(port):
                print(f"port {port} did not open; logs in {run}", file=sys.stderr)
                return 2
        for port, pgid in targets.values():  # warm-up: upstream pools
            wrk(port, 1, pgid)
        runs = {t: [] for t in targets}
        for _ in range(a.rounds):
            for t, (port, pgid) in targets.items():
                runs[t].append(wrk(port, a.seconds, pgid))
        print(f"quota {a.share:g} CPU per worker, {a.rounds} rounds of {a.seconds} s, medians")
        width = max(len(n) for n in names)
        print(f"{'target':{width}} {'workers':>7} {'req/s':>9} {'cpu us/req':>10}")
        med = {t: {k: statistics.median(r[k] for r in rs) for k in ("rps", "cpu_us")} for t, rs in runs.items()}
        for (name, workers), m in med.items():
            print(f"{name:{width}} {workers:7d} {m['rps']:9.0f} {m['cpu_us']:10.2f}")
        for name in names:
            print(f"{name:{width}} scaling x{med[(name, 2)]['rps'] / med[(name, 1)]['rps']:.2f} "
                  f"(cpu/req x{med[(name, 2)]['cpu_us'] / med[(name, 1)]['cpu_us']:.2f})")
        errors = sum(r["errors"] for rs in runs.values() for r in rs)
        if errors:
            print(f"FAIL: {errors} non-2xx responses")
            return 1
        return 0
    finally:
        b.teardown(procs, run)
        for g in groups:
            g.remove()


if __name__ == "__main__":
    sys.exit(main())
