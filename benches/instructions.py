#!/usr/bin/env python3
"""Instructions sluice executes per proxied request, counted by valgrind's callgrind: a figure
that does not move with the machine's load, for comparing two builds when wall-clock and CPU
time are too noisy (this 2-core VM varies by +-10% between runs of peers.py).

usage: benches/instructions.py [BINARY ...] [--requests N] [--conns C] [--close] [--path /] [--metrics] [--keep FILE]

For each binary (default: target/release/sluice): three nginx backends and sluice (one worker,
`--workers 1`) under `valgrind --tool=callgrind`; a warm-up of C keep-alive connections, then the
counters are zeroed (`callgrind_control -z`), N requests are sent over the same C connections,
and the counters dumped (`callgrind_control -d`): instructions / N. Needs nginx and valgrind.
"""
import argparse, glob, os, re, shutil, socket, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402


def request_all(port, conns, per_conn, path, close=False):
    """Sends `per_conn` keep-alive GETs on each of `conns` connections, one at a time each,
    reading every response in full (Content-Length bodies). `close`: every request on a new
    connection instead (`Connection: close`, closed once the response is read)."""
    if close:
        for _ in range(per_conn * conns):
            one_request(port, path)
        return
    socks = [socket.create_connection(("127.0.0.1", port), 30) for _ in range(conns)]
    req = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    for _ in range(per_conn):
        for s in socks:
            s.sendall(req)
        for s in socks:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise SystemExit("sluice closed a connection")
                buf += chunk
            head, body = buf.split(b"\r\n\r\n", 1)
            if not head.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"unexpected answer: {head[:80]!r}")
            length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
            while len(body) < length:
                body += s.recv(65536)
    for s in socks:
        s.close()


def one_request(port, path):
    with socket.create_connection(("127.0.0.1", port), 30) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        if not answer.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"unexpected answer: {answer[:80]!r}")


def measure(binary, requests, conns, path, keep=None, metrics=False, close=False):
    run = b.tempdir("sluice-instr-")
    procs = []
    try:
        ports = [b.free_port() for _ in range(3)]
        procs.append(b.nginx_backends(run, ports))
        port = b.free_port()
        cfg = os.path.join(run, "sluice.toml")
        b.sluice_config(cfg, port, ports, admin_port=b.free_port() if metrics else None)
        for p in ports:
            if not b.wait_port(p):
                raise SystemExit("the nginx backends did not start")
        out = os.path.join(run, "callgrind.out")
        procs.append(b.start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--compress-strings=no",
                              binary, "run", "--config", cfg, "--workers", "1"],
                             os.path.join(run, "sluice.log")))
        if not b.wait_port(port, 120):
            raise SystemExit(f"sluice did not start under valgrind: {open(os.path.join(run, 'sluice.log')).read()[-2000:]}")
        request_all(port, conns, 20, path)
        pid = procs[-1].pid
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
        request_all(port, conns, requests // conns, path, close)
        subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
        sent = (requests // conns) * conns
        total = 0
        for dump in glob.glob(out + "*"):
            text = open(dump, errors="replace").read()
            m = re.search(r"^(?:summary|totals): *(\d+)", text, re.M)
            # Only the dump taken after zeroing (`-d` writes a numbered part file).
            if m and dump != out:
                total = max(total, int(m.group(1)))
                if keep:
                    shutil.copy(dump, keep)
        return total / sent
    finally:
        b.teardown(procs, run)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binaries", nargs="*")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--path", default="/")
    ap.add_argument("--keep", help="copy the callgrind dump here (for callgrind_annotate)")
    ap.add_argument("--metrics", action="store_true",
                    help="with an [admin] table, so per-request metrics are recorded")
    ap.add_argument("--close", action="store_true",
                    help="every request on a new connection (Connection: close): the cost of a connection")
    a = ap.parse_args()
    for tool in ("nginx", "valgrind", "callgrind_control"):
        if not shutil.which(tool):
            print(f"skipped: {tool} not installed")
            return 0
    for binary in a.binaries or [None]:
        binary = b.sluice_binary(binary)
        per = measure(binary, a.requests, a.conns, a.path, a.keep, a.metrics, a.close)
        print(f"{binary}: {per:,.0f} instructions per request ({a.requests} requests, "
              f"{'each on a new connection' if a.close else f'{a.conns} connections'}, "
              f"{a.path}, metrics {'on' if a.metrics else 'off'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
