#!/usr/bin/env python3
"""Plot a soak CSV (scripts/soak.py) as a small SVG: RSS (MiB, left axis) and live
participants (right axis) over time, the phases shaded. Plain python3, SVG written by hand.

  python3 scripts/soak_plot.py soak.csv docs/soak-1h.svg [--title "..."]
"""

import argparse
import csv

W, H = 720, 300
L, R, T, B = 60, 60, 30, 40  # margins


def nice_max(v):
    """The smallest 1, 2 or 5 x 10^k at or above v (an axis top)."""
    m = 1
    while True:
        for step in (1, 2, 5):
            if m * step >= v:
                return m * step
        m *= 10


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("svg")
    ap.add_argument("--title", default="studyroom soak: RSS and live participants")
    a = ap.parse_args()
    rows = list(csv.DictReader(open(a.csv)))
    t = [float(r["t_s"]) / 60 for r in rows]
    rss = [float(r["rss_mib"]) for r in rows]
    live = [int(r["participants"] or 0) for r in rows]
    tmax = max(t) or 1
    rmax = nice_max(max(rss) * 1.1)
    pmax = nice_max(max(live) * 1.1 or 1)
    pw, ph = W - L - R, H - T - B
    x = lambda v: L + v / tmax * pw  # noqa: E731
    yr = lambda v: T + ph - v / rmax * ph  # noqa: E731
    yp = lambda v: T + ph - v / pmax * ph  # noqa: E731
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         'font-family="sans-serif" font-size="11">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13">{a.title}</text>']
    # Phase shading: idle before / after the churn.
    for phase, colour in (("idle0", "#eeeeee"), ("idle1", "#e6f0e6")):
        ts = [t[i] for i, r in enumerate(rows) if r["phase"] == phase]
        if ts:
            x0, x1 = x(min(ts)), x(max(ts))
            o.append(f'<rect x="{x0:.1f}" y="{T}" width="{max(x1 - x0, 2):.1f}" height="{ph}" fill="{colour}"/>')
    # Grid and axes.
    for i in range(6):
        yv = T + ph - i * ph / 5
        o.append(f'<line x1="{L}" y1="{yv:.1f}" x2="{L + pw}" y2="{yv:.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{L - 6}" y="{yv + 4:.1f}" text-anchor="end" fill="#c0392b">{rmax * i / 5:.0f}</text>')
        o.append(f'<text x="{L + pw + 6}" y="{yv + 4:.1f}" fill="#2d6cdf">{pmax * i / 5:.0f}</text>')
    for i in range(7):
        xv = L + i * pw / 6
        o.append(f'<text x="{xv:.1f}" y="{T + ph + 16}" text-anchor="middle">{tmax * i / 6:.0f}</text>')
    o.append(f'<text x="{L + pw / 2}" y="{H - 6}" text-anchor="middle">minutes</text>')
    o.append(f'<text x="14" y="{T + ph / 2}" transform="rotate(-90 14 {T + ph / 2})" text-anchor="middle" '
             'fill="#c0392b">RSS (MiB)</text>')
    o.append(f'<text x="{W - 10}" y="{T + ph / 2}" transform="rotate(90 {W - 10} {T + ph / 2})" '
             'text-anchor="middle" fill="#2d6cdf">live participants</text>')
    o.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    pts = " ".join(f"{x(a_):.1f},{yp(b_):.1f}" for a_, b_ in zip(t, live))
    o.append(f'<polyline points="{pts}" fill="none" stroke="#2d6cdf" stroke-width="1.5"/>')
    pts = " ".join(f"{x(a_):.1f},{yr(b_):.1f}" for a_, b_ in zip(t, rss))
    o.append(f'<polyline points="{pts}" fill="none" stroke="#c0392b" stroke-width="2"/>')
    o.append("</svg>")
    open(a.svg, "w").write("\n".join(o) + "\n")


if __name__ == "__main__":
    main()
