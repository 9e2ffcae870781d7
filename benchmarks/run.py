"""kolbo-async's scoreboard: every scenario against a baseline in the same run.

    python benchmarks/run.py            # full: more rounds, a few minutes
    python benchmarks/run.py --smoke    # seconds; what CI runs so the benchmarks never rot
    python benchmarks/run.py --only status

Figures are medians of alternating rounds after warm-up, from one machine: the ratios matter,
not the absolute numbers. A row is flagged NOISY when its rounds spread by more than 25 %.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import Row, render
from scenarios import SCENARIOS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--only", action="append", default=[], help="scenario name filter")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    failed = False
    selected: list[tuple[str, Callable[[bool], list[Row]]]] = [
        (name, fn)
        for name, fn in SCENARIOS
        if not args.only or any(part in name for part in args.only)
    ]
    for name, scenario in selected:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            rows.extend(scenario(args.smoke))
        except Exception as exc:  # a broken scenario must fail the run, loudly
            failed = True
            print(f"  {name} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(render(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
