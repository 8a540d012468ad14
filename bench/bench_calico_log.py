"""Calico ``flows.log`` reading: records per second into a table and into the store, ours
against the peers, on one core and on all of them.

Generates ~1M lines shaped like the current-format records of ``sample_flows/calico/flows.log``
(every key Felix writes, ~1.8 KB a line) with varied times, IPs, pod names, ports and counters,
into a temporary file; then, for each ``--threads`` value, in a fresh process, times reading it
with:

* tierflow's ``ingest_calico`` into a new ``ingest.store.Store`` (read, validated, converted,
  written as zstd Parquet and committed): the end-to-end rate,
* tierflow's ``read_calico_log`` (validated, converted to ``ingest.schema.FLOWS``),
* ``json.loads`` per line into dicts (what a script over ``flows.log`` does),
* ``pandas.read_json(lines=True)`` in chunks of 65,536 lines,
* ``polars.read_ndjson`` (raw columns: no validation, labels or policy conversion),
* ``pyarrow.json.read_json`` with our explicit schema, raw: the parse that ours is built on.

``--threads 1`` pins the process to CPU 0 (``sched_setaffinity(0, {0})``, POLARS_MAX_THREADS=1,
Arrow's CPU pool of 1) and rates records per CPU second, so that other processes on a shared
machine do not count. ``--threads N`` > 1 gives the process CPUs 0..N-1, Arrow's CPU pool and
polars N threads, and rates records per wall second (CPU time is shown beside it). Each reader
is timed ``--repeat`` times and its fastest run kept.

Usage: ``python bench/bench_calico_log.py [--lines 1000000] [--threads 1 2] [--repeat 1]
[--out bench/results/calico_log.txt]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.json as pj

from ingest.calico_log import RAW, read_calico_log
from ingest.jobs import ingest_calico
from ingest.store import Store

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_flows" / "calico" / "flows.log"
BATCH = 65536
_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"
_OURS = "tierflow read_calico_log -> FLOWS (validated)"


def templates() -> list[dict[str, Any]]:
    """The sample's current-format records (with ``enforced_policies``), without a host."""
    out = []
    for line in SAMPLE.read_text().splitlines():
        record = json.loads(line)
        if "enforced_policies" in record["policies"] and "host" not in record:
            out.append(record)
    return out


def vary(record: dict[str, Any], i: int, rng: random.Random) -> dict[str, Any]:
    r = dict(record)
    r["start_time"] = 1715684400 + 15 * (i // 2000)
    r["end_time"] = r["start_time"] + 15
    for side in ("source", "dest"):
        if r[f"{side}_ip"] is not None and r[f"{side}_type"] == "wep":
            r[f"{side}_ip"] = f"10.244.{rng.randrange(64)}.{rng.randrange(1, 255)}"
            r[f"{side}_name"] = r[f"{side}_name_aggr"][:-1] + "".join(rng.choices(_SUFFIX, k=5))
    if r["source_port"] is not None:
        r["source_port"] = rng.randrange(32768, 61000)
    flows = rng.randrange(1, 40)
    r.update(num_flows=flows, num_flows_started=rng.randrange(flows + 1),
             num_flows_completed=rng.randrange(flows + 1),
             packets_in=rng.randrange(1 << 12), packets_out=rng.randrange(1 << 12),
             bytes_in=rng.randrange(1 << 22), bytes_out=rng.randrange(1 << 22))
    return r


def generate(path: Path, lines: int) -> None:
    rng = random.Random(7)
    shapes = templates()
    with path.open("w") as f:
        for i in range(lines):
            f.write(json.dumps(vary(rng.choice(shapes), i, rng), separators=(",", ":")) + "\n")


def store(path: Path) -> int:
    """End to end: ``tierflow ingest calico`` into a new store (zstd Parquet, committed)."""
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        return ingest_calico([path], Store(tmp), host="bench").written


def ours(path: Path) -> int:
    with path.open("rb") as f:
        return sum(b.table.num_rows for b in read_calico_log(f, name=path.name, host="bench"))


def json_loads(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        batch: list[dict[str, Any]] = []
        for line in f:
            batch.append(json.loads(line))
            if len(batch) == BATCH:  # dicts per batch, as a streaming script would hold them
                n, batch = n + len(batch), []
    return n + len(batch)


def pandas(path: Path) -> int:
    with pd.read_json(path, lines=True, chunksize=BATCH) as chunks:
        return sum(len(chunk) for chunk in chunks)


def polars(path: Path) -> int:
    return pl.read_ndjson(path).height


def arrow(path: Path) -> int:
    """Arrow's JSON reader alone, with our explicit schema: the parse under ours (its own
    threads when Arrow's CPU pool has more than one)."""
    threads = pa.cpu_count() > 1
    options = pj.ReadOptions(use_threads=threads, block_size=(4 if threads else 16) << 20)
    parse = pj.ParseOptions(explicit_schema=RAW, unexpected_field_behavior="ignore")
    with pa.OSFile(str(path)) as f:
        return int(pj.read_json(f, read_options=options, parse_options=parse).num_rows)


READERS: tuple[tuple[str, Callable[[Path], int]], ...] = (
    ("tierflow ingest_calico -> Store (zstd Parquet)", store),
    (_OURS, ours),
    ("json.loads per line -> dicts", json_loads),
    ("pandas.read_json(lines=True, chunksize)", pandas),
    ("polars.read_ndjson (raw, no conversions)", polars),
    ("pyarrow.json.read_json (raw, our schema)", arrow),
)


def cpu_model() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    names = [line.split(":", 1)[1].strip() for line in info.splitlines()
             if line.startswith("model name")]
    return names[0] if names else platform.machine()


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (``/proc/stat``), NaN if unknown."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait


def timed(fn: Callable[[Path], int], path: Path, repeat: int) -> dict[str, Any]:
    """Records, wall seconds, CPU seconds (of all the process's threads) and the CPU seconds
    other processes took meanwhile, of the fastest of ``repeat`` runs."""
    runs = []
    for _ in range(repeat):
        busy, wall, cpu = busy_seconds(), time.perf_counter(), time.process_time()
        n = fn(path)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        runs.append({"records": n, "wall": wall, "cpu": cpu,
                     "others": max(0.0, busy_seconds() - busy - cpu)})
    return min(runs, key=lambda r: float(r["wall"]))


def measure(path: Path, threads: int, repeat: int) -> None:
    """Child process: time every reader with ``threads`` CPUs, one JSON line per reader."""
    os.sched_setaffinity(0, set(range(threads)))
    pa.set_cpu_count(threads)
    pa.set_io_thread_count(threads)
    path.read_bytes()  # every reader starts from the page cache
    for label, fn in READERS:
        result = timed(fn, path, repeat)
        print(f"{label}: {result}", file=sys.stderr)
        print(json.dumps({"label": label, **result}), flush=True)


def run(path: Path, threads: int, repeat: int) -> list[dict[str, Any]]:
    """Time the readers in a fresh process: polars sizes its thread pool once, at import."""
    env = {**os.environ, "POLARS_MAX_THREADS": str(threads)}
    out = subprocess.run(
        [sys.executable, __file__, "--measure", str(path), "--threads", str(threads),
         "--repeat", str(repeat)], env=env, check=True, stdout=subprocess.PIPE, text=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


def table(results: list[dict[str, Any]], threads: int, size: int) -> list[str]:
    per = "CPU" if threads == 1 else "wall"
    where = ("one process pinned to CPU 0, Arrow CPU pool 1, POLARS_MAX_THREADS=1"
             if threads == 1 else f"CPUs 0-{threads - 1}, Arrow CPU pool {threads}, "
             f"POLARS_MAX_THREADS={threads}")
    lines = [f"--threads {threads}: {where}; rates per {per} second",
             f"{'reader':<47} {'records':>10} {'wall s':>7} {'CPU s':>7} {'records/s':>10} "
             f"{'MB/s':>5} {'ours is':>8} {'others':>7}"]
    base = next(r["records"] / r[per.lower()] for r in results if r["label"] == _OURS)
    for r in results:
        seconds = r[per.lower()]
        rate = r["records"] / seconds
        lines.append(f"{r['label']:<47} {r['records']:>10,} {r['wall']:>7.2f} {r['cpu']:>7.2f} "
                     f"{rate:>10,.0f} {size / seconds / 1e6:>5.0f} {base / rate:>7.2f}x "
                     f"{r['others']:>7.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="CPUs to run on: 1 = pinned to CPU 0 (default: 1 2)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per reader, fastest kept")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "calico_log.txt")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.threads[0], args.repeat)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flows.log"
        start = time.perf_counter()
        generate(path, args.lines)
        size = path.stat().st_size
        report = [
            f"calico flows.log reading on {os.cpu_count()} CPUs ({cpu_model()}), "
            f"Python {sys.version.split()[0]}, pyarrow {pa.__version__}, "
            f"polars {pl.__version__}, pandas {pd.__version__}",
            f"input: {args.lines:,} lines, {size / 1e6:,.0f} MB ({size / args.lines:,.0f} B/line), "
            f"generated in {time.perf_counter() - start:.1f}s from the sample's current-format "
            f"records; fastest of {args.repeat} run(s) per reader",
        ]
        rates = {}
        for threads in args.threads:
            results = run(path, threads, args.repeat)
            report += ["", *table(results, threads, size)]
            per = "cpu" if threads == 1 else "wall"  # as in the tables
            rates[threads] = {r["label"]: r["records"] / r[per] for r in results}
    report += ["", "records/s and MB/s per CPU second (1 thread) or wall second (more); "
               "'ours is' = read_calico_log's rate / that reader's rate;",
               "others = CPU seconds that other processes on the machine took meanwhile "
               "(they slow the wall-clock rates of more than 1 thread)"]
    if 1 in rates and len(rates) > 1:
        report += [f"{n} threads against 1 (records/s as above): read_calico_log "
                   f"{rates[n][_OURS] / rates[1][_OURS]:.2f}x, ingest_calico "
                   f"{rates[n][READERS[0][0]] / rates[1][READERS[0][0]]:.2f}x"
                   for n in rates if n != 1]
    text = "\n".join(report) + "\n"
    print(text, end="")
    args.out.write_text(text)


if __name__ == "__main__":
    main()
