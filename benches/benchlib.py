"""Helpers shared by benches/idle_conns.py, benches/soak.py and benches/guard.py.

Self-contained (standard library only, no dependency on files outside the repository): every
script writes its own configs into a fresh temporary directory and picks free ports, so several
runs (or another benchmark on the same machine) do not collide on fixed ports.
"""
import os, re, shutil, signal, socket, subprocess, tempfile, time, urllib.request

TICK = os.sysconf("SC_CLK_TCK")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    """A port that was free a moment ago (bind to port 0, read it back, close)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def start(cmd, log, cpu=None):
    """Start a process in its own process group (so its CPU time and its children can be found)."""
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu)] + cmd
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(p):
    if p and p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        except ProcessLookupError:
            pass


def teardown(procs, run):
    """Stops the processes a script started (last started first) and removes its run directory."""
    for p in reversed(procs):
        stop(p)
    shutil.rmtree(run, ignore_errors=True)


def group_cpu_seconds(pgid):
    """utime+stime of every live process in a process group (the proxy's master and workers)."""
    return sum(group_cpu_split(pgid))


def group_cpu_split(pgid):
    """(utime, stime) in seconds of every live process in a process group."""
    user = system = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(f[2]) == pgid:
            user += int(f[11])
            system += int(f[12])
    return user / TICK, system / TICK


def proc_status_kib(pid, key):
    """A kB figure from /proc/PID/status, e.g. VmRSS or VmHWM."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


BACKENDS_NGINX = """
# Three upstream "services" in one nginx process: fixed small bodies, keep-alive on.
worker_processes 1;
daemon off;
pid {run}/backends.pid;
error_log {run}/backends.err warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
{servers}
}}
"""

PROXY_NGINX = """
# nginx as the peer reverse proxy: round robin over three backends, upstream keep-alive.
worker_processes {workers};
daemon off;
pid {run}/proxy-{port}.pid;
error_log {run}/proxy-{port}.err warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    upstream pool {{ {servers} keepalive 256; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://pool; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }}
    }}
}}
"""


def nginx_backends(run, ports, cpu=0):
    """One nginx worker serving `backend-N\\n` on each port and a 64 KiB file at /big (the
    peers.py backends)."""
    big = os.path.join(run, "big.bin")
    with open(big, "wb") as f:
        f.write(os.urandom(64 * 1024))
    # nginx's worker runs as an unprivileged user: it must be able to read the file.
    os.chmod(run, 0o755)
    os.chmod(big, 0o644)
    servers = "\n".join(
        f'    server {{ listen 127.0.0.1:{p}; location / {{ return 200 "backend-{i + 1}\\n"; }}'
        f' location /big {{ alias {big}; }} }}'
        for i, p in enumerate(ports))
    conf = os.path.join(run, "backends.nginx.conf")
    with open(conf, "w") as f:
        f.write(BACKENDS_NGINX.format(run=run, servers=servers))
    return start(["nginx", "-c", conf, "-p", run, "-e", os.path.join(run, "backends.err")],
                 os.path.join(run, "backends.log"), cpu)


def nginx_proxy(run, port, backend_ports, cpu=1, workers=1, group=None):
    """nginx as a reverse proxy on `port`; `group` wraps its command (benches/scaling.py: a
    cgroup)."""
    servers = " ".join(f"server 127.0.0.1:{p};" for p in backend_ports)
    conf = os.path.join(run, f"proxy-{port}.nginx.conf")
    with open(conf, "w") as f:
        f.write(PROXY_NGINX.format(run=run, servers=servers, port=port, workers=workers))
    cmd = ["nginx", "-c", conf, "-p", run, "-e", os.path.join(run, f"proxy-{port}.err")]
    return start(group(cmd) if group else cmd, os.path.join(run, f"proxy-{port}.log"), cpu)


def sluice_config(path, port, backend_ports, admin_port=None, extra_server="", extra_listener="", state_dir=None):
    admin = f'\n[admin]\nbind = "127.0.0.1:{admin_port}"\n' if admin_port else ""
    backends = ",\n".join(f'  {{ address = "127.0.0.1:{p}" }}' for p in backend_ports)
    state = f'state_dir = "{state_dir or os.path.dirname(path)}"\n'
    text = f"""
[server]
{state}watch = false
{extra_server}
[[listener]]
name = "bench"
bind = "127.0.0.1:{port}"
{extra_listener}
[[route]]
listener = "bench"
pool = "web"

[log]
access_log = false
{admin}
[pool.web]
algorithm = "round_robin"
backends = [
{backends},
]
"""
    with open(path, "w") as f:
        f.write(text)


def sluice_binary(arg):
    """The given binary, else the release build of this checkout ($CARGO_TARGET_DIR or target/)."""
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    b = arg or os.path.join(target, "release", "sluice")
    if not os.path.exists(b):
        raise SystemExit(f"sluice binary not found at {b}: run `cargo build --release` or pass its path")
    return os.path.abspath(b)


def metrics(admin_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric_sum(text, name, **labels):
    """Sum of every sample of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^([A-Za-z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        lab = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(lab.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def tempdir(prefix):
    return tempfile.mkdtemp(prefix=prefix)


def linear_slope(xs, ys):
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
