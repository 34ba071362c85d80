"""Copy the generated result tables into the documents that show them (``benchmarks/README.md``, ``docs/arsm.md``).

A document marks each generated table with a pair of comments (the path relative to the document)::

    <!-- include results/rl_CartPole-v1.md -->
    ...the file's text, copied here...
    <!-- end include -->

Every table of results in these documents is such a block: the learning-efficiency tables (``rl_<env>.md``) and
their cross-env summary (``summary.md``, from ``benchmarks/summary.py``), the toy, clone-cost and throughput
tables, and the gradient-quality tables (``gradient_quality_summary.md``). ``python benchmarks/sync_readme.py``
rewrites every such block from its file; ``--check`` only reports (exit 1) the blocks that differ.
``tests/test_benchmarks_quick.py`` checks that no block is stale, so a committed table can never go stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: The documents with include blocks.
DOCUMENTS = (HERE / "README.md", HERE.parent / "docs" / "arsm.md")
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
    parser.add_argument(
        "--readme", type=Path, action="append", help="a document to sync (repeatable; default: " + ", ".join(
            str(path.relative_to(HERE.parent)) for path in DOCUMENTS) + ")"
    )  # fmt: skip
    parser.add_argument("--check", action="store_true", help="report stale blocks and exit 1 instead of rewriting")
    args = parser.parse_args(argv)
    documents = args.readme or list(DOCUMENTS)
    for document in documents:
        if not document.is_file():
            parser.error(f"no README at {document}; give --readme PATH")
    refreshed = {}
    for document in documents:
        try:
            refreshed[document] = sync(document.read_text(), document.parent)
        except FileNotFoundError as error:
            parser.error(f"{document}: {error}; run the benchmark that writes it, or remove the block")
    if args.check:
        for document, (_, stale) in refreshed.items():
            for path in stale:
                print(f"{document}: the table from {path} is stale; run python benchmarks/sync_readme.py")
        return 1 if any(stale for _, stale in refreshed.values()) else 0
    for document, (text, stale) in refreshed.items():
        document.write_text(text)
        print(f"{document}: refreshed {len(stale)} table(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
