"""``lavida-tables RUN_DIR [RUN_DIR ...] [--out DIR]``: the paper's Tab. 1 / Tab. 2 from evaluation runs."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lavida.atomic import write_text
from lavida.eval.tables import OverridableRefusal, build_tables, read_runs

# build_tables' options as this command spells them, for its refusals' messages.
FLAGS = {"allow_partial": "--allow-partial", "allow_mixed": "--allow-mixed", "label": "--label"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="lavida-eval output directories")
    parser.add_argument("--out", type=Path, default=None, help="write tables.md and tables.csv here")
    parser.add_argument("--label", default="ours", help="row label for these runs")
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="include runs of another split, with test videos left out, or of another number of videos "
        "than the official test split, marked †",
    )
    parser.add_argument(
        "--allow-mixed",
        action="store_true",
        help="put runs of different checkpoints, modes or categories in one row (sources listed below)",
    )
    args = parser.parse_args(argv)
    # The library's warnings (a folder with no results skipped, a run without a recorded source) go to
    # stderr as the refusals do; a no-op where logging is already configured.
    logging.basicConfig(level=logging.WARNING, format="lavida-tables: %(message)s")
    try:
        runs = read_runs(args.runs)
        markdown, table_csv = build_tables(
            runs, label=args.label, allow_partial=args.allow_partial, allow_mixed=args.allow_mixed
        )
    except OverridableRefusal as error:
        # Named as this command's flags, not build_tables' keywords.
        print(f"lavida-tables: {error.message(FLAGS)}", file=sys.stderr)
        raise SystemExit(2) from error
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
