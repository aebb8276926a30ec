#!/usr/bin/env python3
"""Summarise an Nsight Compute CSV (`ncu --csv --section SpeedOfLight …`) per kernel.

    python3 scripts/ncu_summary.py ncu.csv > summary.md
    python3 scripts/ncu_summary.py --all ncu.csv > detail.md

--all: every numeric metric the CSV holds (whatever sections ncu collected:
occupancy, launch statistics, warp states…), its mean over the launches of each
kernel and grid (conv1's and conv2's launches of a kernel apart), a table each; no
metric names assumed.

Prints one line (kernels, launches, total time, the top five by time), then a markdown
table sorted by total time: launches, total and mean duration, and the SpeedOfLight
throughputs (percent of the device's peak compute and memory throughput), the mean
over the kernel's launches. Exit status 1 when the file holds no kernel rows (ncu could
not profile: no counters on this runtime). scripts/gpu-check runs it on the GPU machine.
"""
import csv
import sys
from collections import defaultdict

# Older ncu writes "nsecond"/"usecond"; 2025 releases (the H200 machine's) write "ns"/"us".
TIME_UNITS = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6,
              "ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}
THROUGHPUTS = {"Compute (SM) Throughput": "sm", "Memory Throughput": "memory", "DRAM Throughput": "dram"}


def number(text):
    return float(text.replace(",", ""))


def rows(path):
    """The CSV rows as dicts; the lines before the header (the profiled program's own
    output, ncu's ==PROF== messages) are skipped."""
    with open(path, newline="", errors="replace") as f:
        lines = f.read().splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID",')), None)
    if start is None:
        return []
    body = [l for l in lines[start:] if l.startswith('"')]
    return list(csv.DictReader(body))


def all_metrics(path):
    """--all: per kernel and grid, each numeric metric's mean over its launches, in CSV order."""
    values = defaultdict(lambda: defaultdict(list))  # kernel, grid -> (section, metric, unit) -> values
    for r in rows(path):
        try:
            value = number(r.get("Metric Value", ""))
        except ValueError:
            continue
        key = (r.get("Section Name", ""), r.get("Metric Name"), r.get("Metric Unit", ""))
        values[f'{r.get("Kernel Name")}, grid {r.get("Grid Size", "?")}'][key].append(value)
    if not values:
        sys.exit("ncu_summary: no metrics in " + path)
    for name, metrics in values.items():
        launches = max(len(v) for v in metrics.values())
        print(f"### {name} ({launches} launches)")
        print()
        print("| section | metric | mean | unit |")
        print("|---|---|---:|---|")
        for (section, metric, unit), v in metrics.items():
            print(f"| {section} | {metric} | {sum(v) / len(v):.4g} | {unit} |")
        print()


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--all":
        return all_metrics(sys.argv[2])
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    launches = defaultdict(dict)  # (kernel, launch id) -> metric -> value
    for r in rows(sys.argv[1]):
        name, metric, unit = r.get("Kernel Name"), r.get("Metric Name"), r.get("Metric Unit")
        try:
            value = number(r.get("Metric Value", ""))
        except ValueError:
            continue
        key = (name, r.get("ID"))
        if metric == "Duration" and unit in TIME_UNITS:
            launches[key]["us"] = value * TIME_UNITS[unit]
        elif metric in THROUGHPUTS:
            launches[key][THROUGHPUTS[metric]] = value
    kernels = defaultdict(list)
    for (name, _), m in launches.items():
        if "us" in m:
            kernels[name].append(m)
    if not kernels:
        sys.exit("ncu_summary: no kernel durations in " + sys.argv[1])

    def mean(ms, k):
        vals = [m[k] for m in ms if k in m]
        return sum(vals) / len(vals) if vals else float("nan")

    table = sorted(kernels.items(), key=lambda kv: -sum(m["us"] for m in kv[1]))
    total = sum(m["us"] for ms in kernels.values() for m in ms)
    count = sum(len(ms) for ms in kernels.values())
    top = ", ".join(f"{n} {sum(m['us'] for m in ms) / total:.0%}" for n, ms in table[:5])
    print(f"{len(kernels)} kernels, {count} launches, {total:.1f} µs of kernel time; top: {top}")
    print()
    print("| kernel | launches | total µs | mean µs | SM % of peak | memory % of peak | DRAM % of peak |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, ms in table:
        t = sum(m["us"] for m in ms)
        print(f"| {name} | {len(ms)} | {t:.1f} | {t / len(ms):.2f} | {mean(ms, 'sm'):.1f} | "
              f"{mean(ms, 'memory'):.1f} | {mean(ms, 'dram'):.1f} |")


if __name__ == "__main__":
    main()
