"""Gather metrics.json files into paper-shaped markdown tables (the README's "Reproduction" section).

    python tools/report.py work_dirs                              # print the report
    python tools/report.py work_dirs --out work_dirs/report.md    # write it (atomically)
    python tools/report.py work_dirs --update-readme README.md    # regenerate the README section

Every ``metrics.json`` under the given folders (or given as files) written by ``tools/infer.py`` or
``tools/eval_pseudo.py`` is one measurement; see ``weclip.evaluation.report`` for the tables. A cell averages
every measurement with the same model, dataset, split and setting: several training runs (seeds) give
``mean ± std (n=N)`` (sample standard deviation); one run gives its value. Two files for the same checkpoint
and setting count once (the first path, in sorted order); the "Sources" list names every file used.
"""

import argparse
import logging
from typing import List, Optional

from weclip.errors import MissingFileError
from weclip.evaluation.report import SECTION, build_report, replace_section
from weclip.utils.cli import run_main
from weclip.utils.io import atomic_write_text

logger = logging.getLogger("weclip")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Markdown tables from metrics.json files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("work_dirs", nargs="*", help="folders searched for metrics.json, or files")
    parser.add_argument(
        "--out", default=None, help="write the report to this file (default: print)"
    )
    parser.add_argument(
        "--update-readme", default=None, metavar="README", help="replace the README's section"
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of user errors")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> str:
    args = parse_args(argv)
    report = build_report(args.work_dirs)
    if args.out:
        atomic_write_text(args.out, report)
        logger.info("report written to %s", args.out)
    if args.update_readme:
        try:
            with open(args.update_readme, encoding="utf-8") as f:
                text = f.read()
        except OSError as err:
            raise MissingFileError(
                f"--update-readme: cannot read {args.update_readme}: {err}"
            ) from None
        atomic_write_text(
            args.update_readme, replace_section(text, SECTION, report, args.update_readme)
        )
        logger.info("section '%s' of %s regenerated", SECTION, args.update_readme)
    if not args.out and not args.update_readme:
        print(report, end="")
    return report


if __name__ == "__main__":
    run_main(main)
