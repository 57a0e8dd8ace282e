"""``torchrun`` for the tools, with one line instead of torchrun's traceback when a process fails.

``tools/dist_train.sh`` and ``tools/dist_test.sh`` run ``python -m weclip.utils.launch [torchrun options]
TOOL.py ARGS``. It takes torchrun's own command line (``torch.distributed.run``) and runs it. A process that
meets a user error leaves its ``error:`` line in a folder this launcher hands out (``WECLIP_ERROR_DIR``,
``weclip.utils.cli.run_main``), so the line is printed exactly once even when torchrun stops the other ranks
before they could say anything; then, instead of torchrun's ``ChildFailedError`` report, one summary line,
and the exit code of the failed process (2 for a user error). ``WECLIP_DEBUG=1`` keeps torchrun's report.
"""

import logging
import os
import sys
import tempfile
from typing import List, Optional

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser, run

from weclip.utils.cli import ERROR_DIR_VAR

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    """Run torchrun with ``argv``; return the exit code (0, or the first failed process's)."""
    args = get_args_parser().parse_args(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("WECLIP_DEBUG", "") not in ("", "0")
    if not debug:  # torchrun's agent logs every failure and teardown at WARNING/ERROR
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="weclip_errors_") as folder:
        os.environ[ERROR_DIR_VAR] = folder
        try:
            run(args)
        except ChildFailedError as err:
            if debug:
                raise
            return _report(args, err, folder)
        finally:
            os.environ.pop(ERROR_DIR_VAR, None)
    return 0


def _report(args, err: ChildFailedError, folder: str) -> int:
    """Print the user error (once, the lowest rank's) and one summary line; return the exit code."""
    lines = {}
    for name in os.listdir(folder):
        with open(os.path.join(folder, name)) as f:
            lines[int(name[len("rank") : -len(".txt")])] = f.read().strip()
    tool = os.path.basename(args.training_script)
    if lines:
        print(lines[min(lines)], file=sys.stderr)
        print(
            f"{tool}: stopped on a user error ({len(err.failures)} process(es) ended)",
            file=sys.stderr,
        )
        return 2
    rank, failure = err.get_first_failure()
    code = failure.exitcode if failure.exitcode > 0 else 1
    print(
        f"{tool}: rank {rank} failed with exit code {failure.exitcode} (its output is above); "
        f"{len(err.failures)} process(es) ended",
        file=sys.stderr,
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
