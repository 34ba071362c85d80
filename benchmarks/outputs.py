"""Where a benchmark writes: the ``--out`` options that the scripts share.

Without ``--out`` a benchmark writes into ``benchmarks/results`` (the committed results), except a ``--quick`` run:
a smoke run writes into a fresh temporary folder (printed), and refuses an ``--out`` inside ``benchmarks/results``, so
that it never replaces a committed file::

    parser.add_argument("--quick", action="store_true", help="smoke run: ...")
    add_output(parser, "--out", "headless.md", "file to write")   # "" instead of a file name: the folder itself
    args = parser.parse_args(argv)
    resolve_outputs(parser, args)                                   # args.out is now a Path
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
#: What a ``--quick`` run without ``--out`` prints, followed by its folder.
QUICK_FOLDER = "--quick without --out: writing to "


@dataclass(frozen=True)
class Unset:
    """The default of an output option: ``name`` (a file name, or "" for the folder itself) in the default folder."""

    name: str


def add_output(parser: argparse.ArgumentParser, option: str, name: str, what: str) -> None:
    """Add ``option`` (a path; default ``benchmarks/results/<name>``, or for ``--quick`` a fresh temporary folder)."""
    default, quick = ("benchmarks/results/" + name, name + " in a fresh temporary folder") if name else (
        "benchmarks/results", "a fresh temporary folder")  # fmt: skip
    parser.add_argument(
        option, type=Path, default=Unset(name),
        help=f"{what} (default {default}; with --quick, {quick}, printed: a smoke run never writes into benchmarks/results)",
    )  # fmt: skip


def resolve_outputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Replace every output option left unset (:func:`add_output`) by its path: in ``benchmarks/results``, or for
    ``args.quick`` in one fresh temporary folder (printed); exit with a usage error if a ``--quick`` run was given an
    output inside ``benchmarks/results``."""
    options = [action for action in parser._actions if isinstance(action.default, Unset)]
    unset = {action.dest: action.default for action in options if isinstance(getattr(args, action.dest), Unset)}
    for action in options:
        value = getattr(args, action.dest)
        if args.quick and action.dest not in unset and value.resolve().is_relative_to(RESULTS):
            parser.error(f"--quick never writes into benchmarks/results (it holds the committed results); drop "
                         f"{action.option_strings[0]} {value} or give a path elsewhere")  # fmt: skip
    if not unset:
        return
    folder = RESULTS
    if args.quick:
        folder = Path(tempfile.mkdtemp(prefix="arsm-quick-"))
        print(QUICK_FOLDER + str(folder), flush=True)
    for dest, value in unset.items():
        setattr(args, dest, folder / value.name if value.name else folder)
