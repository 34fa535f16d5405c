"""``lavida-tables RUN_DIR [RUN_DIR ...] [--out DIR]``: the paper's Tab. 1 / Tab. 2 from evaluation runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lavida.atomic import write_text
from lavida.eval.tables import build_tables, read_run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="lavida-eval output directories")
    parser.add_argument("--out", type=Path, default=None, help="write tables.md and tables.csv here")
    parser.add_argument("--label", default="ours", help="row label for these runs")
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="include runs of another split or with test videos left out, marked †",
    )
    parser.add_argument(
        "--allow-mixed",
        action="store_true",
        help="put runs of different checkpoints, modes or categories in one row (sources listed below)",
    )
    args = parser.parse_args(argv)
    try:
        runs = [read_run(path) for path in args.runs]
        markdown, table_csv = build_tables(
            runs, label=args.label, allow_partial=args.allow_partial, allow_mixed=args.allow_mixed
        )
    except (OSError, ValueError) as error:
        # The refusals (runs that cannot share a row, a folder that is no finished run) say what to do;
        # a traceback would bury that.
        print(f"lavida-tables: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    print(markdown)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_text(args.out / "tables.md", markdown)
        write_text(args.out / "tables.csv", table_csv)


if __name__ == "__main__":
    main()
