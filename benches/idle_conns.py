#!/usr/bin/env python3
"""Memory held per idle keep-alive client connection.

Starts a tiny Python HTTP/1.1 backend and sluice (one listener on a free port, idle_timeout 1h,
server.max_connections above N), warms it up, then opens N client connections that each send
one keep-alive GET, read the response, and stay open and idle. sluice's VmRSS (and VmHWM) is
read from /proc before, at checkpoints while opening, once everything is open and idle, and after
the clients closed. Reports KiB per idle connection: (RSS with N idle - RSS before) / N, and the
least-squares slope over the checkpoints (the same figure without the one-off growth).

The issue's target: at most 10 KiB per idle keep-alive connection. Exit 1 above --max-kib (when given).

usage: benches/idle_conns.py [BINARY] [--conns 10000] [--workers 1] [--max-kib 10] [--json]
RLIMIT_NOFILE is raised to N + 1024 for this process and sluice (it inherits it): the hard limit
must allow that (root may raise it).
"""
import argparse, json, os, resource, socket, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402

BACKEND = r"""
import asyncio, sys
BODY = b"ok\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s" % (len(BODY), BODY)
async def serve(r, w):
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            w.write(RESP)
            await w.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        w.close()
async def main():
    srv = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
"""

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: idle_conns\r\n\r\n"


def get(sock):
    """Send one keep-alive GET and read the whole response (Content-Length framed)."""
    sock.sendall(REQUEST)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return status


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary", nargs="?", default=None, help="sluice binary (default target/release/sluice)")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--checkpoints", type=int, default=5)
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait before each RSS reading")
    ap.add_argument("--max-kib", type=float, default=None, help="exit 1 if KiB per idle connection is above this")
    ap.add_argument("--no-request", action="store_true",
                    help="diagnostic: connect only, send nothing (header_read_timeout raised to 1h so sluice keeps "
                         "them); separates the cost of an accepted connection from hyper's per-connection buffers")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    n = a.conns
    binary = b.sluice_binary(a.binary)

    want = n + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
        except (ValueError, OSError) as e:
            print(f"cannot raise RLIMIT_NOFILE to {want} (hard limit {hard}): {e}; use --conns "
                  f"{hard - 1024} or raise the hard limit", file=sys.stderr)
            return 2

    run = b.tempdir("sluice-idle-")
    procs, clients = [], []
    log = (lambda *x: None) if a.json else (lambda *x: print(*x, flush=True))
    try:
        bport, port = b.free_port(), b.free_port()
        procs.append(subprocess.Popen([sys.executable, "-c", BACKEND, str(bport)], start_new_session=True))
        conf = os.path.join(run, "sluice.toml")
        b.sluice_config(conf, port, [bport], extra_server=f"max_connections = {n + 1000}\n",
                        extra_listener='idle_timeout = "1h"\n' +
                        ('header_read_timeout = "1h"\n' if a.no_request else ""))
        sl = b.start([binary, "run", "--config", conf, "--workers", str(a.workers)], os.path.join(run, "sluice.log"))
        procs.append(sl)
        if not (b.wait_port(bport) and b.wait_port(port)):
            print(f"backend or sluice did not start; log in {run}", file=sys.stderr)
            return 2
        # Warm-up: a few connections and requests so one-off allocations (upstream pool, buffers,
        # allocator arenas of each worker) are in the baseline.
        for _ in range(4 * a.workers):
            with socket.create_connection(("127.0.0.1", port)) as s:
                for _ in range(5):
                    assert get(s) == 200
        time.sleep(a.settle)
        fd0 = fds(sl.pid)
        rss0 = b.proc_status_kib(sl.pid, "VmRSS")
        log(f"sluice {binary} --workers {a.workers}: before: VmRSS {rss0} KiB, {fd0} fds")
        points = [(0, rss0)]
        step = max(1, n // a.checkpoints)
        t0 = time.time()
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            status = 200 if a.no_request else get(s)
            if status != 200:
                raise RuntimeError(f"connection {i}: status {status}")
            clients.append(s)
            if (i + 1) % step == 0 and i + 1 < n:
                time.sleep(a.settle)
                points.append((i + 1, b.proc_status_kib(sl.pid, "VmRSS")))
                log(f"  {i + 1:6d} idle connections: VmRSS {points[-1][1]} KiB")
        opened_in = time.time() - t0
        time.sleep(a.settle)
        rss1 = b.proc_status_kib(sl.pid, "VmRSS")
        hwm1 = b.proc_status_kib(sl.pid, "VmHWM")
        fd1 = fds(sl.pid)
        points.append((n, rss1))
        # Every connection must still be open in sluice (not closed by a timeout or a limit).
        held = fd1 - fd0
        log(f"  {n:6d} idle connections: VmRSS {rss1} KiB, VmHWM {hwm1} KiB, sluice holds {fd1} fds (+{held}); "
            f"opened in {opened_in:.1f}s")
        for s in clients:
            s.close()
        clients.clear()
        time.sleep(a.settle * 2)
        rss2 = b.proc_status_kib(sl.pid, "VmRSS")
        fd2 = fds(sl.pid)
        per = (rss1 - rss0) / n
        slope = b.linear_slope([p[0] for p in points], [p[1] for p in points])
        res = {"workers": a.workers, "conns": n, "no_request": a.no_request,
               "rss_before_kib": rss0, "rss_idle_kib": rss1, "vmhwm_kib": hwm1,
               "rss_after_close_kib": rss2, "fds_after_close": fd2, "kib_per_conn": per, "kib_per_conn_slope": slope,
               "sluice_fds_added": held, "checkpoints": points, "target_kib": 10.0}
        ok = held >= n * 0.99 and (a.max_kib is None or per <= a.max_kib)
        res["ok"] = ok
        if a.json:
            print(json.dumps(res, indent=1))
        else:
            print(f"after the clients closed: VmRSS {rss2} KiB, sluice holds {fd2} fds")
            what = " (connected, no request)" if a.no_request else ""
            print(f"workers={a.workers} conns={n}{what}: {per:.2f} KiB per idle connection "
                  f"(slope over checkpoints {slope:.2f} KiB); target <= 10 KiB: "
                  f"{'met' if per <= 10 else 'NOT met'}")
            if held < n * 0.99:
                print(f"WARNING: sluice holds only {held} more fds than before, not {n}", file=sys.stderr)
        return 0 if ok else 1
    finally:
        for s in clients:
            s.close()
        b.teardown(procs, run)


if __name__ == "__main__":
    sys.exit(main())
