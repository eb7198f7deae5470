"""Draws one PNG from the `steady`/`pinned` reports of `sundial bench --json` (see plot-steady.sh)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, out):
    reports = []
    with open(src) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                if r.get("series"):
                    reports.append(r)
    if not reports:
        sys.exit(f"{src}: no report with a series (run the steady or pinned scenario with --json)")
    fig, axes = plt.subplots(2, len(reports), figsize=(9 * len(reports), 7), sharex="col", squeeze=False)
    for col, r in enumerate(reports):
        s = r["series"]
        t = [p["t_s"] for p in s]
        top, bottom = axes[0][col], axes[1][col]
        top.plot(t, [p["submitted_per_s"] for p in s], label="submitted/s", color="#999999", lw=1)
        top.plot(t, [p["completed_per_s"] for p in s], label="completed/s", color="#1f6feb", lw=1.5)
        top.set_ylabel("jobs per second")
        top.set_ylim(0, 1.15 * max([p["submitted_per_s"] for p in s] + [p["completed_per_s"] for p in s] + [1]))
        top.legend(loc="lower left")
        settings = ", ".join(
            f"{k}={r[k]}" for k in ("autovacuum", "synchronous_commit", "synchronous") if r.get(k) is not None
        )
        build = f"server {r['server_exe'].split('/')[-1]}" if r.get("server_exe") else f"git {r.get('git_rev')}"
        top.set_title(
            f"sundial bench {r['scenario']} · {r['db']} · {r.get('load_rate')}/s offered · {build}\n{settings}",
            fontsize=10,
        )
        lag = [p["p99_lag_ms"] if p["p99_lag_ms"] is not None else float("nan") for p in s]
        bottom.plot(t, lag, label="pickup lag p99 (ms)", color="#d1242f", lw=1.5)
        bottom.set_yscale("log")
        bottom.set_ylabel("pickup lag p99, ms (log)")
        bottom.set_xlabel("seconds since the load started")
        twin = bottom.twinx()
        twin.plot(t, [p["backlog"] for p in s], label="backlog (runs)", color="#8250df", lw=1, ls="--")
        twin.set_ylabel("backlog, runs")
        twin.set_ylim(bottom=0)
        lines = bottom.get_lines() + twin.get_lines()
        bottom.legend(lines, [ln.get_label() for ln in lines], loc="upper left")
        start = 0.0
        for ph in r.get("phases", []):
            end = start + ph["secs"]
            if ph["name"] == "pinned":
                for ax in (top, bottom):
                    ax.axvspan(start, end, color="#f0b400", alpha=0.15, label="_pinned")
                top.text(start, top.get_ylim()[1] * 0.97, " snapshot pinned", va="top", fontsize=9)
            elif r["scenario"] == "steady":
                for ax in (top, bottom):
                    ax.axvline(end, color="#cccccc", lw=0.8)
            start = end
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
