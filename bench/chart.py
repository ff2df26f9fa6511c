#!/usr/bin/python3
"""Draws bench/RESULTS.md as an SVG chart (bench/RESULTS.svg): requests per
second and CPU per request, per setup and workload, so that setups can be
compared at a glance. bench.py calls it after every full run; it can also be
run by hand on an existing RESULTS.md:

    bench/chart.py [RESULTS.md [OUT.svg]]

Only the standard library: the SVG is written by hand.
"""

import math
import os
import sys
from xml.sax.saxutils import escape

COLORS = {"rust": "#d95f02", "pools": "#1b9e77", "c-itk": "#7570b3", "prefork": "#999999",
          "fpm": "#e7298a"}


def tables(text):
    """The markdown tables of `text`: a list of (header cells, rows of cells)."""
    out, cur = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cur is None:
                cur = (cells, [])
            elif not set("".join(cells)) <= set("-: "):
                cur[1].append(cells)
        elif cur is not None:
            out.append(cur)
            cur = None
    if cur is not None:
        out.append(cur)
    return out


def parse(text):
    """(setups, [(label, {setup: rps}, {setup: cpu_us})])."""
    found = tables(text)
    thr = next(t for t in found if any(h.endswith("req/s") for h in t[0]))
    res = next(t for t in found if any(h.startswith("CPU µs/req") for h in t[0]))
    setups = [h[: -len(" req/s")] for h in thr[0] if h.endswith(" req/s")]
    cpu_col = next(i for i, h in enumerate(res[0]) if h.startswith("CPU µs/req"))
    rows = []
    for t_row, r_row in zip(thr[1], res[1]):
        label = "%s, c%s" % (t_row[0].replace("Connection: close", "close"), t_row[1])
        rps = {s: float(t_row[thr[0].index(s + " req/s")]) for s in setups}
        cpus = [float(x) for x in r_row[cpu_col].split("/")]
        rows.append((label, rps, dict(zip(setups, cpus))))
    return setups, rows


def panel(y0, title, rows, setups, key, log_scale, unit):
    """One bar chart: a group of bars per row, one bar per setup."""
    left, width, height = 250, 620, 22 * len(rows) * len(setups) // 2 + 40
    values = [r[key][s] for r in rows for s in setups]
    vmax = max(values) or 1.0

    def scale(v):
        if log_scale:
            lo = math.log10(max(min(values), 1.0)) - 0.2
            return width * (math.log10(max(v, 1.0)) - lo) / (math.log10(vmax) - lo)
        return width * v / vmax

    out = ['<text x="10" y="%d" font-weight="bold">%s</text>' % (y0 + 16, escape(title))]
    y = y0 + 30
    bar = 9
    for label, *_ in rows:
        row = next(r for r in rows if r[0] == label)
        out.append('<text x="%d" y="%d" text-anchor="end">%s</text>'
                   % (left - 8, y + bar * len(setups) / 2 + 4, escape(label)))
        for s in setups:
            v = row[key][s]
            w = max(scale(v), 1)
            out.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>'
                       % (left, y, w, bar - 1, COLORS.get(s, "#333")))
            out.append('<text x="%.1f" y="%d" font-size="9">%s</text>'
                       % (left + w + 3, y + bar - 2, "%.0f %s" % (v, unit)))
            y += bar
        y += 8
    return out, y + 10


def svg(setups, rows):
    parts, y = panel(0, "Requests per second (higher is better)", rows, setups, 1, False, "")
    more, y = panel(y, "CPU per request, µs, log scale (lower is better)", rows, setups, 2,
                    True, "µs")
    parts += more
    legend_x = 10
    for s in setups:
        parts.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/>'
                     % (legend_x, y, COLORS.get(s, "#333")))
        parts.append('<text x="%d" y="%d">%s</text>' % (legend_x + 16, y + 11, escape(s)))
        legend_x += 110
    y += 24
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="960" height="%d" '
            'font-family="sans-serif" font-size="11">\n<rect width="100%%" height="100%%" '
            'fill="white"/>\n%s\n</svg>\n' % (y, "\n".join(parts)))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "RESULTS.md")
    dst = sys.argv[2] if len(sys.argv) > 2 else os.path.splitext(src)[0] + ".svg"
    with open(src) as f:
        setups, rows = parse(f.read())
    with open(dst, "w") as f:
        f.write(svg(setups, rows))
    print("bench: wrote %s" % dst, file=sys.stderr)


if __name__ == "__main__":
    main()
