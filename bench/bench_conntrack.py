"""Conntrack snapshot parsing: entries per second for a ~100k-entry table, on one core.

The input is real: ``--entries`` entries (TCP in every state, UDP, ICMP, IPv6, some marks and
zones) are loaded with ``conntrack -R`` into a throw-away network namespace (ctnetlink
inserts, no packets), then listed with ``conntrack -L -o extended,id`` and read from
``/proc/net/nf_conntrack``. Without root or the conntrack tool, a generated text in the same
format stands in (and the report says so). Timed in one run, pinned to one core
(``sched_setaffinity`` and ``POLARS_MAX_THREADS=1``), best of ``--repeat``:

* ``parse_conntrack`` (tierflow: polars string kernels, typed Arrow table out);
* the peers a user would write: a per-line ``str.split`` + dict parser (numbers as ``int``),
  and one compiled ``re`` per line (tuples of strings); each alone, and each followed by
  building a typed Arrow table, which is what ours returns (ours also validates every field);
* ``conntrack -L`` itself producing the text (kernel dump and formatting), for scale;
* ``segments`` over two such snapshots.

Usage: ``python bench/bench_conntrack.py [--entries 100000] [--cpu 0]``
(its output is ``bench/results/conntrack.txt``)
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import polars as pl
import pyarrow as pa

from ingest.conntrack import parse_conntrack, segments

STATES = ["ESTABLISHED"] * 6 + ["TIME_WAIT"] * 3 + ["SYN_SENT", "CLOSE", "FIN_WAIT",
                                                     "CLOSE_WAIT", "LAST_ACK", "SYN_RECV"]
REGEX_NUMBERS = {2, 3, 7, 8, 9, 10, 11, 12, 13, 17, 18, 19, 20, 22, 23, 24, 25, 26}  # groups
LINE_RE = re.compile(
    r"^(?:(ipv[46])\s+\d+\s+)?(\w+)\s+(\d+)\s+(\d+)\s+(?:([A-Z_0-9]+)\s+)?"
    r"src=(\S+) dst=(\S+) (?:sport=(\d+) dport=(\d+) |type=(\d+) code=(\d+) id=(\d+) )?"
    r"(?:packets=(\d+) bytes=(\d+) )?(\[UNREPLIED\] )?src=(\S+) dst=(\S+) "
    r"(?:sport=(\d+) dport=(\d+) |type=\d+ code=\d+ id=\d+ )?(?:packets=(\d+) bytes=(\d+) )?"
    r"(\[ASSURED\] )?(?:mark=(\d+) )?(?:zone=(\d+) )?(?:delta-time=(\d+) )?(?:use=(\d+))?"
    r"(?: id=(\d+))?")


def insert_commands(n: int, seed: int = 7) -> str:
    """``conntrack -R`` input: ``n`` entries, 70 % TCP, 15 % UDP, 5 % ICMP, 10 % TCP/IPv6."""
    rng, out = random.Random(seed), []
    for i in range(n):
        a, b = (f"10.244.{rng.randrange(1, 8)}.{rng.randrange(2, 250)}" for _ in range(2))
        sport, k = 1024 + i % 60000, rng.random()
        extra = (f" -m {rng.randrange(1, 100)}" if rng.random() < 0.1 else "") + (
            f" -w {rng.randrange(1, 9)}" if rng.random() < 0.05 else "")
        if k < 0.70:
            out.append(f"-I -s {a} -d {b} -p tcp --sport {sport} --dport "
                       f"{rng.choice([80, 443, 8080, 5432, 6379])} --state {rng.choice(STATES)} "
                       f"-t 3600 -u SEEN_REPLY,ASSURED{extra}")
        elif k < 0.85:
            out.append(f"-I -s {a} -d {b} -p udp --sport {sport} --dport 53 -t 3600{extra}")
        elif k < 0.90:
            out.append(f"-I -s {a} -d {b} -p icmp --icmp-type 8 --icmp-code 0 "
                       f"--icmp-id {i % 65536} -t 3600 -u SEEN_REPLY{extra}")
        else:
            a6, b6 = (f"fd00:10:244:{rng.randrange(1, 8)}::{rng.randrange(2, 250):x}"
                      for _ in range(2))
            out.append(f"-I -s {a6} -d {b6} -p tcp --sport {sport} --dport 443 --state "
                       f"ESTABLISHED -t 3600 -u SEEN_REPLY,ASSURED{extra}")
    return "\n".join(out) + "\n"


Listing = tuple[str, datetime]  # text, and when it was taken


def real_tables(n: int, repeat: int) -> tuple[Listing, Listing, Listing, float] | None:
    """Two ``conntrack -L -o extended,id`` listings a second apart and one ``/proc`` read of
    a private namespace holding ``n`` entries, and the best listing time; None where that
    cannot be done."""
    if os.geteuid() != 0 or not shutil.which("conntrack"):
        return None
    ns = f"tfbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def run(*cmd: str, stdin: str | None = None) -> Listing:
            out = subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True, text=True,
                                 capture_output=True, input=stdin).stdout
            return out, datetime.now(UTC)
        run("sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1",
            "net.netfilter.nf_conntrack_timestamp=1", f"net.netfilter.nf_conntrack_max={2 * n}")
        run("conntrack", "-R", "-", stdin=insert_commands(n))
        seconds = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            first = run("conntrack", "-L", "-o", "extended,id")
            seconds = min(seconds, time.perf_counter() - t0)
        time.sleep(1.0)  # so that delta-time moves on, as between real snapshots
        return first, run("conntrack", "-L", "-o", "extended,id"), run(
            "cat", "/proc/net/nf_conntrack"), seconds
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def generated_table(n: int, delta: int, seed: int = 7) -> str:
    """The same mix as :func:`insert_commands`, printed the way ``conntrack -L -o
    extended,id`` prints it."""
    rng, out = random.Random(seed), []
    for i in range(n):
        a, b = (f"10.244.{rng.randrange(1, 8)}.{rng.randrange(2, 250)}" for _ in range(2))
        sport, dport = 1024 + i % 60000, rng.choice([80, 443, 8080, 5432, 6379])
        out.append(f"ipv4     2 tcp      6 3599 {rng.choice(STATES)} src={a} dst={b} "
                   f"sport={sport} dport={dport} packets=0 bytes=0 src={b} dst={a} "
                   f"sport={dport} dport={sport} packets=0 bytes=0 [ASSURED] mark=0 "
                   f"delta-time={delta} use=1 id={rng.randrange(2**32)}")
    return "\n".join(out) + "\n"


NUMBERS = {"sport", "dport", "type", "code", "id", "packets", "bytes", "mark", "zone", "use",
           "delta-time"}


def naive(text: str) -> list[dict[str, str | int]]:
    """What a script would do: split each line into words, ``key=value`` into a dict (the
    second ``src=`` starts the reply tuple), numbers to ``int``."""
    rows = []
    for line in text.splitlines():
        words, row = line.split(), {}
        for word in words:
            key, eq, value = word.partition("=")
            if eq:
                if key in row:
                    key = f"reply_{key}" if f"reply_{key}" not in row else f"ct_{key}"
                row[key] = int(value) if key.rsplit("_", 1)[-1] in NUMBERS else value
        row["proto"] = words[3] if words[0].startswith("ipv") else words[1]
        rows.append(row)
    return rows


def per_line_regex(text: str) -> list[tuple[str | None, ...]]:
    return [m.groups() for line in text.splitlines() if (m := LINE_RE.match(line))]


def regex_table(text: str) -> pa.Table:
    """``per_line_regex``, then columns, numbers cast to int64: the same kind of table."""
    columns = list(zip(*per_line_regex(text), strict=True))
    table = pa.table({f"g{i}": pa.array(c, pa.string()) for i, c in enumerate(columns)})
    return pa.table({name: col.cast(pa.int64()) if i in REGEX_NUMBERS else col
                     for i, (name, col) in enumerate(zip(table.column_names, table.columns,
                                                         strict=True))})


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    seconds, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        seconds = min(seconds, time.perf_counter() - t0)
    return seconds, out


def report(name: str, listing: Listing, repeat: int, later: Listing | None = None) -> None:
    text, at = listing
    n = text.count("\n")
    dt, snap = best(lambda: parse_conntrack(text, source=name, time=at), repeat)
    assert snap.entries.num_rows == n and not snap.rejects
    dt_naive, _ = best(lambda: naive(text), repeat)
    dt_table, _ = best(lambda: pa.Table.from_pylist(naive(text)), repeat)
    dt_re, _ = best(lambda: per_line_regex(text), repeat)
    dt_re_table, _ = best(lambda: regex_table(text), repeat)
    print(f"{name}: {n:,} entries, {len(text) / 1e6:.1f} MB")
    for what, seconds in [("tierflow parse_conntrack", dt), ("naive str.split + dict", dt_naive),
                          ("naive, then Arrow table", dt_table), ("re.match per line", dt_re),
                          ("re.match, then Arrow table", dt_re_table)]:
        print(f"  {what:26s}{seconds:6.3f}s  {n / seconds:>10,.0f} entries/s" + (
            f"   peer/tierflow time x{seconds / dt:.2f}" if seconds != dt else ""))
    if later is not None:
        second = parse_conntrack(later[0], source=name, time=later[1])
        dt_seg, seg = best(lambda: segments([snap, second], interval=300), repeat)
        print(f"  {'segments, 2 snapshots':26s}{dt_seg:6.3f}s  {2 * n / dt_seg:>10,.0f} "
              f"entries/s -> {seg.num_rows:,} rows")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--cpu", type=int, default=0, help="the one core to run on")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    print(f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, pinned to cpu "
          f"{args.cpu}; Python {platform.python_version()}, polars {pl.__version__}, "
          f"POLARS_MAX_THREADS={os.environ['POLARS_MAX_THREADS']}; {datetime.now(UTC):%Y-%m-%d}")
    real = real_tables(args.entries, args.repeat)
    if real is None:
        print("not root or no conntrack tool: generated text in conntrack -L format")
        at = datetime.now(UTC)
        report("generated conntrack -L -o extended,id", (generated_table(args.entries, 1), at),
               args.repeat, (generated_table(args.entries, 2), at + timedelta(seconds=1)))
        return
    first, second, proc, seconds = real
    n = first[0].count("\n")
    print(f"conntrack -L -o extended,id itself: {n:,} entries in {seconds:.3f}s = "
          f"{n / seconds:,.0f} entries/s (kernel dump + formatting, for scale)")
    report("conntrack -L -o extended,id", first, args.repeat, second)
    report("/proc/net/nf_conntrack", proc, args.repeat)

if __name__ == "__main__":
    main()
