"""How fast the classifier runs: rules load time and entries classified per second on one core.

Classification runs for every stored entry and again for all of them on `reclassify`, so its cost per entry
bounds how large a backlog can be re-run. Run from the repository root:

    .venv/bin/python bench/classify.py [--entries 20000]

The labelled corpus is repeated until it reaches the requested number of entries, and classified against the
full shipped baseline, with the process pinned to one CPU where the platform allows it.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from monitor.catalogue import Catalogue, load_baseline
from monitor.classify import classify
from monitor.evaluate import read_corpus
from monitor.ruleset import load_rules

ROOT = Path(__file__).resolve().parent.parent


def _pin_to_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to CPU {core}"
    return "not pinned (no sched_setaffinity here)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000, help="entries to classify (default 20000)")
    args = parser.parse_args()
    print(_pin_to_one_core())

    started = time.perf_counter()
    rules = load_rules()
    print(f"rules load:      {(time.perf_counter() - started) * 1000:8.1f} ms ({len(rules.rule_ids())} rules)")

    started = time.perf_counter()
    catalogue = Catalogue(load_baseline(ROOT / "config" / "baseline.yaml"))
    catalogue.find_in_text("warm-up builds the name index")
    print(f"catalogue load:  {(time.perf_counter() - started) * 1000:8.1f} ms ({len(catalogue)} products)")

    corpus = read_corpus(ROOT / "tests" / "data" / "corpus.jsonl")
    items = (corpus * (args.entries // len(corpus) + 1))[: args.entries]
    started = time.perf_counter()
    atmp = 0
    for item in items:
        atmp += classify(item.title, item.summary, regulator=item.regulator, catalogue=catalogue, rules=rules).is_atmp
    elapsed = time.perf_counter() - started
    print(f"classified:      {len(items)} entries ({atmp} ATMP) in {elapsed:.2f} s")
    print(f"throughput:      {len(items) / elapsed:8.0f} entries/s on one core "
          f"({elapsed / len(items) * 1e6:.0f} µs per entry)")


if __name__ == "__main__":
    main()
