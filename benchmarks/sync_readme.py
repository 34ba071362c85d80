"""Copy the generated result tables into ``benchmarks/README.md``.

The README marks each generated table with a pair of comments::

    <!-- include results/rl_CartPole-v1.md -->
    ...the file's text, copied here...
    <!-- end include -->

``python benchmarks/sync_readme.py`` rewrites every such block from its file; ``--check`` only reports (exit 1)
the blocks that differ, which ``tests/test_benchmarks_quick.py`` runs so a committed table can never go stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BLOCK = re.compile(r"(<!-- include (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- end include -->)", re.DOTALL)


def sync(text: str, root: Path = HERE) -> tuple[str, list[str]]:
    """``text`` with every include block refreshed from its file (relative to ``root``), and the stale paths."""
    stale: list[str] = []

    def refresh(match: re.Match[str]) -> str:
        path = root / match["path"]
        if not path.is_file():
            raise FileNotFoundError(f"an include block names {match['path']}, which does not exist")
        body = path.read_text().strip() + "\n"
        if body != match["body"]:
            stale.append(match["path"])
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(refresh, text), stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    parser.add_argument("--check", action="store_true", help="report stale blocks and exit 1 instead of rewriting")
    args = parser.parse_args(argv)
    if not args.readme.is_file():
        parser.error(f"no README at {args.readme}; give --readme PATH")
    try:
        text, stale = sync(args.readme.read_text(), args.readme.parent)
    except FileNotFoundError as error:
        parser.error(f"{args.readme}: {error}; run the benchmark that writes it, or remove the block")
    if args.check:
        for path in stale:
            print(f"{args.readme}: the table from {path} is stale; run python benchmarks/sync_readme.py")
        return 1 if stale else 0
    args.readme.write_text(text)
    print(f"{args.readme}: refreshed {len(stale)} table(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
