"""Calico ``flows.log`` reading: records per second into a table, ours against the peers.

Generates ~1M lines shaped like the current-format records of ``sample_flows/calico/flows.log``
(every key Felix writes, ~1.8 KB a line) with varied times, IPs, pod names, ports and counters,
into a temporary file; then, in one process pinned to one core (``sched_setaffinity(0, {0})``,
POLARS_MAX_THREADS=1, Arrow's CPU pool of 1), times reading it (CPU time, so that other
processes on a shared machine do not count; wall time is shown beside it) with:

* tierflow's ``read_calico_log`` (validated, converted to ``ingest.schema.FLOWS``),
* ``json.loads`` per line into dicts (what a script over ``flows.log`` does),
* ``pandas.read_json(lines=True)`` in chunks of 65,536 lines,
* ``polars.read_ndjson`` (raw columns: no validation, labels or policy conversion),
* ``pyarrow.json.read_json`` with our explicit schema, raw: the parse that ours is built on.

Usage: ``python bench/bench_calico_log.py [--lines 1000000] [--out bench/results/calico_log.txt]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
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

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_flows" / "calico" / "flows.log"
BATCH = 65536
_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"


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
    """Arrow's JSON reader alone, with our explicit schema: the parse under ours."""
    options = pj.ReadOptions(use_threads=False, block_size=16 << 20)
    parse = pj.ParseOptions(explicit_schema=RAW, unexpected_field_behavior="ignore")
    with pa.OSFile(str(path)) as f:
        return int(pj.read_json(f, read_options=options, parse_options=parse).num_rows)


def cpu_model() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    names = [line.split(":", 1)[1].strip() for line in info.splitlines()
             if line.startswith("model name")]
    return names[0] if names else platform.machine()


def timed(fn: Callable[[Path], int], path: Path) -> tuple[int, float, float]:
    """Records, wall seconds and CPU seconds (the rate uses CPU time: on a shared machine
    wall time also counts the time other processes held the core)."""
    wall, cpu = time.perf_counter(), time.process_time()
    n = fn(path)
    return n, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "calico_log.txt")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flows.log"
        start = time.perf_counter()
        generate(path, args.lines)
        size = path.stat().st_size
        report = [
            f"calico flows.log reading, one process pinned to CPU 0 of {os.cpu_count()} "
            f"({cpu_model()}), Python {sys.version.split()[0]}, "
            f"pyarrow {pa.__version__}, polars {pl.__version__}, pandas {pd.__version__}",
            f"input: {args.lines:,} lines, {size / 1e6:,.0f} MB ({size / args.lines:,.0f} B/line), "
            f"generated in {time.perf_counter() - start:.1f}s from the sample's current-format "
            "records",
            "",
            f"{'reader':<44} {'records':>10} {'wall s':>7} {'CPU s':>7} {'records/s':>10} "
            f"{'MB/s':>5} {'ours is':>8}",
        ]
        path.read_bytes()  # every reader starts from the page cache
        results = []
        for label, fn in (("tierflow read_calico_log -> FLOWS (validated)", ours),
                          ("json.loads per line -> dicts", json_loads),
                          ("pandas.read_json(lines=True, chunksize)", pandas),
                          ("polars.read_ndjson (raw, no conversions)", polars),
                          ("pyarrow.json.read_json (raw, our schema)", arrow)):
            n, wall, cpu = timed(fn, path)
            results.append((label, n, wall, cpu))
            print(f"{label}: {n:,} records, {wall:.2f}s wall, {cpu:.2f}s CPU", file=sys.stderr)
    base = results[0][1] / results[0][3]
    for label, n, wall, cpu in results:
        rate = n / cpu
        report.append(f"{label:<44} {n:>10,} {wall:>7.2f} {cpu:>7.2f} {rate:>10,.0f} "
                      f"{size / cpu / 1e6:>5.0f} {base / rate:>7.2f}x")
    report.append("records/s and MB/s per CPU second; 'ours is' = our rate / that reader's rate")
    text = "\n".join(report) + "\n"
    print(text, end="")
    args.out.write_text(text)


if __name__ == "__main__":
    main()
