"""The ``prefopt`` command: :func:`main` parses the command line (:mod:`prefopt.cli.parser`), runs the command
(:mod:`prefopt.cli.commands`, :mod:`prefopt.cli.outputs`) and turns a user's error into one line.

Only the command that runs imports the stages (and with them torch, transformers, datasets, vLLM): ``--help``
and argument errors answer at once.
"""

from __future__ import annotations

import errno
import logging
import os
import sys

from prefopt.cli.commands import eval_command, eval_harness_command, plan_command, stage_command, sweep_command
from prefopt.cli.outputs import export_command, report_command, verify_command
from prefopt.cli.parser import _parser
from prefopt.errors import ConfigError, DataError


def quiet_progress_in_logs() -> None:
    """In a log file (stderr not a terminal): progress bars update at most every 30 s and the libraries' own bars
    (datasets, the Hub, transformers' weight loading) stay off. Environment defaults, so the ranks and workers
    prefopt starts inherit them; a variable already set wins."""
    if not sys.stderr.isatty():
        for name, value in (
            ("TQDM_MININTERVAL", "30"),
            ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"),
            ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ):
            os.environ.setdefault(name, value)


DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}  # no space, a file-size limit, a quota


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    quiet_progress_in_logs()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s prefopt %(levelname)s %(message)s", datefmt="%H:%M:%S")
    command = {
        "report": report_command,
        "sweep": sweep_command,
        "plan": plan_command,
        "verify": verify_command,
        "export": export_command,
        "eval": eval_command,
        "eval-harness": eval_harness_command,
        "doctor": lambda args: __import__("prefopt.doctor").doctor.doctor(args.recipe, args.set),  # imports torch
    }.get(args.command, stage_command)
    from prefopt.processes import ChildFailed, Terminated, exit_on_signals

    exit_on_signals()
    try:
        return command(args)
    except (ConfigError, DataError, FileNotFoundError) as err:  # the user's to fix: one line, no traceback
        if args.debug:
            raise
        print(f"prefopt: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except ChildFailed as err:  # the child's own output above says why
        if args.debug:
            raise
        print(f"prefopt: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        # nothing half-written is marked finished (prefopt.cache): once there is space, a rerun resumes
        where = f"writing {err.filename}: " if err.filename else ""
        print(
            f"prefopt: error: {where}{err.strerror} (disk full?); finished work is kept: free space and rerun",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:  # children were stopped on the way out; a rerun resumes
        print("prefopt: interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
        return 130
    except Terminated:
        print("prefopt: terminated; finished work is kept and a rerun resumes", file=sys.stderr)
        return 143
