"""kolbo-async's scoreboard: every scenario against a baseline in the same run.

    python benchmarks/run.py            # full: more rounds, a few minutes
    python benchmarks/run.py --smoke    # seconds; what CI runs so the benchmarks never rot
    python benchmarks/run.py --only status
    python benchmarks/run.py --plot DIR   # the same, and PNG charts in DIR (benchmarks/plot.py)

Figures are medians of alternating rounds after warm-up, from one machine: the ratios matter,
not the absolute numbers. A row is flagged NOISY when its rounds spread by more than 25 %.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import Row, Series, record_series, render
from scenarios import SCENARIOS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--only", action="append", default=[], help="scenario name filter")
    parser.add_argument("--plot", metavar="DIR", type=Path,
                        help="also draw PNG charts into DIR (needs matplotlib: the bench extra)")
    args = parser.parse_args(argv)
    if args.plot is not None:
        try:
            import plot  # noqa: F401  (matplotlib is there before minutes of measuring)
        except ImportError as exc:
            parser.error(f"--plot needs matplotlib ({exc}): pip install -e '.[bench]'")
    rows: list[Row] = []
    failed = False
    selected: list[tuple[str, Callable[[bool], list[Row]]]] = [
        (name, fn)
        for name, fn in SCENARIOS
        if not args.only or any(part in name for part in args.only)
    ]
    # Scale runs record their time series only inside record_series(), i.e. for --plot.
    recorder = record_series() if args.plot is not None else nullcontext(list[Series]())
    with recorder as series:
        for name, scenario in selected:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            try:
                rows.extend(scenario(args.smoke))
            except Exception as exc:  # a broken scenario must fail the run, loudly
                failed = True
                print(f"  {name} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(render(rows))
    if args.plot is not None:
        from plot import draw

        for path in draw(rows, series, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
