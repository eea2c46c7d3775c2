#!/usr/bin/env python3
"""Soak run: `studyroom-loadtest churn` for a given time against a fresh `studyroom --dev`,
with the server sampled every --interval seconds, then judged.

Why a separate driver and not a loadtest subcommand: the samples come from outside the
server (/proc of its PID, /metrics, redis-cli), the judgement is arithmetic on a CSV, and
the same CSV feeds the plot (scripts/soak_plot.py) -- plain python3, no extra packages.

Phases (each sample row carries its phase):
  idle0  the fresh server, nobody connected (--idle-before s);
  load   churn: --rooms x --per-room slots, every participant publishes camera + mic,
         subscribes to everyone, leaves after ~--stay s and is replaced;
  idle1  everyone has left (--idle-after s).

Checks (exit 1 when one fails), each printed with its figure and bound:
  * in the second half of `load`, least-squares slopes per minute of RSS, open fds,
    threads, tokio tasks stay under their bounds (--max-rss-slope MiB/min etc.);
  * at the end of `idle1`: participants, transports, consumers, producers, routes, timers,
    Socket.IO connections are 0; fds and threads are back to within a few of idle0; live
    tokio tasks back to idle0's; RSS within --max-idle-rss-growth MiB of idle0's;
  * with REDIS_URL: the Redis key count at the end of idle1 is within 2 of idle0's;
  * the churn itself worked: the generator exited 0, participants were live during load.

Run it inside the loopback-only namespace:
  STUDYROOM_BIN=target/release/studyroom bash scripts/netns_run.sh \\
    python3 scripts/soak.py --duration 180 --csv soak.csv
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

COLUMNS = [
    "t_s", "phase", "rss_mib", "fds", "threads", "tokio_tasks", "participants",
    "socketio_connections", "rooms", "transports", "producers", "consumers", "routes",
    "timers", "signaling_entries", "redis_keys", "heap_allocated_mib", "heap_resident_mib",
]
METRICS = {
    "studyroom_tokio_alive_tasks": "tokio_tasks",
    "studyroom_participants": "participants",
    "studyroom_socketio_connections": "socketio_connections",
    "studyroom_sfu_rooms": "rooms",
    "studyroom_sfu_transports": "transports",
    "studyroom_sfu_producers": "producers",
    "studyroom_sfu_consumers": "consumers",
    "studyroom_sfu_routes": "routes",
    "studyroom_sfu_timers": "timers",
}


def proc_sample(pid):
    rss = threads = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds, threads


def metrics_sample(url):
    """The gauges of METRICS, plus signaling_entries: the sum of signaling's per-connection /
    per-participant maps (studyroom_signaling_entries{map=...}) except the focus history,
    which is kept per room by design (bounded); the maps themselves under "maps"."""
    out = {"signaling_entries": 0, "maps": {}}
    try:
        body = urllib.request.urlopen(url, timeout=20).read().decode()
    except OSError as e:
        # A scrape that times out on a saturated machine is a missing sample, not the end
        # of an hour-long run (a 1-hour run died on one at load 15).
        print(f"# metrics scrape failed: {e}", file=sys.stderr, flush=True)
        return out
    for line in body.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        if name in METRICS:
            out[METRICS[name]] = int(float(value))
        elif name in ("studyroom_heap_allocated_bytes", "studyroom_heap_resident_bytes"):
            key = "heap_allocated_mib" if "allocated" in name else "heap_resident_mib"
            out[key] = round(float(value) / 1048576.0, 2)
        elif name.startswith("studyroom_signaling_entries{"):
            m = name.split('"')[1]
            out["maps"][m] = int(float(value))
            if m != "focus_histories":
                out["signaling_entries"] += int(float(value))
    return out


def redis_keys(url):
    if not url:
        return ""
    r = subprocess.run(["redis-cli", "-u", url, "dbsize"], capture_output=True, text=True, timeout=5)
    return int(r.stdout.strip()) if r.returncode == 0 and r.stdout.strip().isdigit() else ""


def slope_per_min(rows, key):
    """Least-squares slope of rows[key] against t_s, per minute."""
    pts = [(r["t_s"], r[key]) for r in rows if r[key] != "" and r[key] is not None]
    if len(pts) < 3:
        return 0.0
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in pts)
    return 0.0 if sxx == 0 else sxy / sxx * 60.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=180, help="seconds of churn (load phase)")
    ap.add_argument("--rooms", type=int, default=10)
    ap.add_argument("--per-room", type=int, default=6)
    ap.add_argument("--stay", type=float, default=30, help="mean seconds a participant stays")
    ap.add_argument("--ramp", type=float, default=10, help="joins per second while ramping up")
    ap.add_argument("--video-kbps", type=int, default=100)
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--interval", type=float, default=10, help="seconds between samples")
    ap.add_argument("--idle-before", type=float, default=10)
    ap.add_argument("--idle-after", type=float, default=30)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--max-rss-slope", type=float, default=1.0, help="MiB/min, second half of load")
    ap.add_argument("--max-fd-slope", type=float, default=2.0, help="fds/min, second half of load")
    ap.add_argument("--max-thread-slope", type=float, default=0.5, help="threads/min")
    ap.add_argument("--max-task-slope", type=float, default=5.0, help="tokio tasks/min")
    ap.add_argument("--max-idle-rss-growth", type=float, default=16.0,
                    help="MiB the idle RSS after everyone left may exceed the idle RSS at start")
    ap.add_argument("--server-args", default="", help="extra studyroom arguments")
    args = ap.parse_args()

    bin_ = os.environ.get("STUDYROOM_BIN") or sys.exit("set STUDYROOM_BIN")
    lg = os.environ.get("LOADTEST_BIN") or os.path.join(os.path.dirname(bin_), "studyroom-loadtest")
    redis_url = os.environ.get("REDIS_URL", "")
    metrics_url = "http://127.0.0.1:9100/metrics"
    workdir = tempfile.mkdtemp(prefix="soak.")
    server_log = open(os.path.join(workdir, "studyroom.log"), "w")
    server = subprocess.Popen([bin_, "--dev", *args.server_args.split()], stdout=server_log,
                              stderr=subprocess.STDOUT)
    churn = None
    rows = []
    problems = []
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen("http://127.0.0.1:5002/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit("studyroom did not come up; log in " + workdir)
        t0 = time.monotonic()
        out = open(os.path.join(workdir, "churn.txt"), "w")

        def sample(phase):
            rss, fds, threads = proc_sample(server.pid)
            m = metrics_sample(metrics_url)
            row = {"t_s": round(time.monotonic() - t0, 1), "phase": phase, "rss_mib": round(rss, 2),
                   "fds": fds, "threads": threads, "redis_keys": redis_keys(redis_url)}
            for k in list(METRICS.values()) + ["signaling_entries", "heap_allocated_mib", "heap_resident_mib"]:
                row[k] = m.get(k, "")
            row["maps"] = m["maps"]
            rows.append(row)
            print(",".join(str(row[c]) for c in COLUMNS), flush=True)

        def sample_for(phase, seconds, until_exit=None):
            end = time.monotonic() + seconds
            while True:
                sample(phase)
                nxt = time.monotonic() + args.interval
                while time.monotonic() < nxt:
                    if until_exit is not None and until_exit.poll() is not None:
                        return
                    if until_exit is None and time.monotonic() >= end:
                        return
                    time.sleep(0.2)
                if until_exit is None and time.monotonic() >= end:
                    return

        print(",".join(COLUMNS), flush=True)
        sample_for("idle0", args.idle_before)
        churn_cmd = [lg, "churn", "--rooms", str(args.rooms), "--per-room", str(args.per_room),
                     "--stay", str(args.stay), "--ramp", str(args.ramp), "--seconds", str(args.duration),
                     "--video-kbps", str(args.video_kbps), "--fps", str(args.fps),
                     "--server-pid", str(server.pid), "--json", os.path.join(workdir, "churn.json")]
        print("# " + " ".join(churn_cmd), file=sys.stderr, flush=True)
        churn = subprocess.Popen(churn_cmd, stdout=out, stderr=subprocess.STDOUT)
        sample_for("load", 0, until_exit=churn)
        rc = churn.wait()
        churn = None
        if rc != 0:
            problems.append(f"the churn generator exited {rc} (output in {workdir}/churn.txt)")
        sample_for("idle1", args.idle_after)
    finally:
        if churn is not None:
            churn.kill()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()

    with open(args.csv, "w") as f:
        f.write(",".join(COLUMNS) + "\n")
        for r in rows:
            f.write(",".join(str(r[c]) for c in COLUMNS) + "\n")

    idle0 = [r for r in rows if r["phase"] == "idle0"]
    load = [r for r in rows if r["phase"] == "load"]
    idle1 = [r for r in rows if r["phase"] == "idle1"]
    if not idle0 or len(load) < 4 or not idle1:
        problems.append(f"too few samples: idle0 {len(idle0)}, load {len(load)}, idle1 {len(idle1)}")
        report(problems, workdir)
        return
    second = load[len(load) // 2:]
    peak = max(int(r["participants"] or 0) for r in load)
    live = [int(r["participants"] or 0) for r in second]
    print(f"load: {len(load)} samples, participants live max {peak}, second-half mean "
          f"{sum(live) / len(live):.0f}")
    if peak == 0:
        problems.append("no participant was ever live")
    for key, bound, unit in [("rss_mib", args.max_rss_slope, "MiB/min"), ("fds", args.max_fd_slope, "fds/min"),
                             ("threads", args.max_thread_slope, "threads/min"),
                             ("tokio_tasks", args.max_task_slope, "tasks/min")]:
        s = slope_per_min(second, key)
        ok = s < bound
        print(f"{'ok ' if ok else 'FAIL'} slope of {key} over the second half of load: {s:+.3f} {unit} (bound < {bound})")
        if not ok:
            problems.append(f"{key} grows {s:+.3f} {unit} in the second half of load")
    a, b = idle0[-1], idle1[-1]
    for key in ["participants", "socketio_connections", "rooms", "transports", "producers", "consumers",
                "routes", "timers", "signaling_entries"]:
        if b[key] not in ("", 0):
            problems.append(f"{key} is {b[key]} after everyone left")
    left = {k: v for k, v in b["maps"].items() if v and k != "focus_histories"}
    if left:
        problems.append(f"signaling maps not empty after everyone left: {left}")
    print(f"idle after: participants {b['participants']}, transports {b['transports']}, consumers "
          f"{b['consumers']}, routes {b['routes']}, timers {b['timers']}, signaling map entries "
          f"{b['signaling_entries']}")
    for key, slack in [("fds", 4), ("threads", 2), ("tokio_tasks", 2)]:
        if b[key] != "" and a[key] != "" and b[key] > a[key] + slack:
            problems.append(f"{key} {a[key]} idle before, {b[key]} idle after (slack {slack})")
        print(f"{key}: idle before {a[key]}, idle after {b[key]} (slack {slack})")
    growth = b["rss_mib"] - a["rss_mib"]
    peak_rss = max(r["rss_mib"] for r in load)
    ok = growth <= args.max_idle_rss_growth
    print(f"{'ok ' if ok else 'FAIL'} RSS idle before {a['rss_mib']:.1f} MiB, peak under load {peak_rss:.1f} MiB, "
          f"idle after {b['rss_mib']:.1f} MiB: {growth:+.1f} MiB (bound <= {args.max_idle_rss_growth})")
    if b.get("heap_allocated_mib") not in (None, ""):
        print(f"heap after: {b['heap_allocated_mib']} MiB held by the application, "
              f"{b['heap_resident_mib']} MiB resident in the allocator (idle before: "
              f"{a.get('heap_allocated_mib')} / {a.get('heap_resident_mib')})")
    if not ok:
        problems.append(f"idle RSS grew {growth:+.1f} MiB")
    if redis_url and a["redis_keys"] != "" and b["redis_keys"] != "" and b["redis_keys"] > a["redis_keys"] + 2:
        problems.append(f"Redis keys {a['redis_keys']} idle before, {b['redis_keys']} idle after")
    report(problems, workdir)


def report(problems, workdir):
    if problems:
        print("soak FAILED: " + "; ".join(problems) + f" (logs in {workdir})", file=sys.stderr)
        sys.exit(1)
    shutil.rmtree(workdir, ignore_errors=True)
    print("soak passed")


if __name__ == "__main__":
    main()
