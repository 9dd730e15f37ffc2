#!/usr/bin/env python3
"""Draws docs/performance-chart.svg: CPU time per request and requests/s of each proxy, from
peers.py results. Standard library only.

usage: benches/chart.py [RESULTS.json ...] [--out docs/performance-chart.svg]

Each RESULTS.json is the output of `python3 ../shared/bench/peers.py --checkout . --json` (one
panel per file, titled by the file's name). Without files, the figures recorded in
docs/performance.md for 2026-11-21 are drawn (the commands are given there).
"""
import json, os, sys

# docs/performance.md, "Issue 9": `peers.py --checkout . --rust-peers hyper-ref` before and after
# upstream::h1, and `--path /big` after it; then both again after protocol detection and dormant
# connections (the section of that name); then the floor and the latest run.
RECORDED = [
    ("10-byte responses, before issue 9 (hyper-util client)",
     {"nginx": (82780, 11.67), "haproxy": (75912, 12.96), "hyper-ref": (67809, 14.44), "sluice": (50661, 19.50)}),
    ("10-byte responses, with upstream::h1",
     {"nginx": (85694, 11.11), "haproxy": (72692, 13.42), "hyper-ref": (67149, 14.41), "sluice": (75138, 13.16)}),
    ("64 KiB responses, with upstream::h1",
     {"nginx": (13252, 56.53), "haproxy": (17092, 41.49), "sluice": (19086, 50.51)}),
    # "After protocol detection and dormant connections": the hyper-ref and --path /big runs.
    ("10-byte responses, after protocol detection and dormant connections",
     {"nginx": (75730, 12.99), "haproxy": (73207, 13.22), "hyper-ref": (69017, 14.28), "sluice": (76183, 12.99)}),
    ("64 KiB responses, after protocol detection and dormant connections",
     {"nginx": (14682, 50.92), "haproxy": (18852, 38.24), "sluice": (20203, 48.24)}),
    # "How far below nginx a tokio proxy can get here": benches/floor.py, then peers.py after
    # "The request path trimmed again" (a noisier machine).
    ("10-byte responses, floor.py: nginx, sluice and the floor of a tokio proxy",
     {"nginx": (67534, 13.07), "sluice": (57212, 16.29), "floor": (75331, 10.94)}),
    ("10-byte responses, after the request path was trimmed again",
     {"nginx": (79749, 12.08), "haproxy": (67711, 14.50), "hyper-ref": (63020, 15.21), "sluice": (69198, 13.50)}),
    # "The config watcher woke on every open beside the config": --path /big after the fix.
    ("64 KiB responses, after the config watcher stopped waking on opens",
     {"nginx": (17604, 53.36), "haproxy": (22939, 38.89), "sluice": (26367, 32.55)}),
]

COLORS = {"nginx": "#3b7d3b", "haproxy": "#2f5f9e", "hyper-ref": "#8a8a8a", "sluice": "#c0562b",
          "floor": "#b58900"}


def load(path):
    with open(path) as f:
        data = json.load(f)
    rows = data.get("results", data)
    return {name: (r["rps"], r["cpu_us_per_req"]) for name, r in rows.items() if name != "direct"}


def bars(x, y, w, h, title, values, unit, fmt):
    """One horizontal bar chart: values {name: number}."""
    out = [f'<text x="{x}" y="{y + 14}" font-size="12" fill="#444">{title}</text>']
    top = max(values.values()) or 1
    row = (h - 24) / max(len(values), 1)
    for i, (name, v) in enumerate(values.items()):
        by = y + 24 + i * row
        length = (w - 170) * v / top
        out.append(f'<text x="{x}" y="{by + row * 0.65:.1f}" font-size="12">{name}</text>')
        out.append(f'<rect x="{x + 80}" y="{by + 2:.1f}" width="{length:.1f}" height="{row - 6:.1f}" '
                   f'fill="{COLORS.get(name, "#666")}"/>')
        out.append(f'<text x="{x + 86 + length:.1f}" y="{by + row * 0.65:.1f}" font-size="12">{fmt(v)} {unit}</text>')
    return out


def main():
    args = sys.argv[1:]
    out = "docs/performance-chart.svg"
    if "--out" in args:
        i = args.index("--out")
        out = args[i + 1]
        del args[i:i + 2]
    panels = [(os.path.basename(p), load(p)) for p in args] or RECORDED
    width, panel_h = 900, 175
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{panel_h * len(panels) + 40}" '
           'font-family="sans-serif">',
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="10" y="22" font-size="15" font-weight="bold">sluice against nginx and HAProxy, one worker each '
           '(peers.py; CPU per request: lower is better)</text>']
    for i, (title, rows) in enumerate(panels):
        y = 40 + i * panel_h
        svg.append(f'<text x="10" y="{y + 16}" font-size="14" font-weight="bold">{title}</text>')
        y += 22
        svg += bars(10, y, width / 2 - 10, panel_h - 32, "CPU µs per request",
                    {n: c for n, (_, c) in rows.items()}, "µs", lambda v: f"{v:.2f}")
        svg += bars(width / 2 + 10, y, width / 2 - 20, panel_h - 32, "requests/s",
                    {n: r for n, (r, _) in rows.items()}, "", lambda v: f"{v:,.0f}")
    svg.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(svg) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
