"""``python -m lib.data fetch NAME [--root DIR] [--sha256 HEX]`` and ``python -m lib.data list [--root DIR]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .fetch import DATASETS, FetchError, converted_root, default_datasets_dir, fetch, pinned_hash
from .loader import DatasetError


def _status(name: str, root) -> str:
    """'converted', 'archive present', or 'not fetched' for one dataset under ``root``."""
    if converted_root(name, root) is not None:
        return f"ready: {converted_root(name, root)}"
    home = (root if root is not None else default_datasets_dir()) / name
    return "archive present" if (home / "downloads" / DATASETS[name].archive.filename).is_file() else "not fetched"


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (errors are printed as one message, without a traceback)."""
    parser = argparse.ArgumentParser(prog="python -m lib.data", description="Fetch and convert the real datasets.")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="download (or take a dropped archive), verify, extract and convert a dataset")
    f.add_argument("name", choices=sorted(DATASETS))
    f.add_argument("--root", default=None, help=f"datasets folder (default {default_datasets_dir()})")
    f.add_argument("--sha256", default=None, help="pin the archive's sha256 (overrides the registry and lock file)")
    f.add_argument("--no-convert", action="store_true", help="stop after extraction")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    ls = sub.add_parser("list", help="the registered datasets, their licences, hashes and status")
    ls.add_argument("--root", default=None)
    a = parser.parse_args(argv)
    root = Path(a.root) if a.root else None
    if a.command == "list":
        for name, info in DATASETS.items():
            h = info.archive.sha256 or pinned_hash(name, root)
            print(f"{name:10s} {info.title}\n           licence: {info.licence}\n"
                  f"           archive: {info.archive.filename} ({info.archive.size_text}); sha256: "
                  f"{h or 'not published'}{'' if info.archive.sha256 or not h else ' (pinned locally)'}\n"
                  f"           status:  {_status(name, root)}")
        return 0
    try:
        out = fetch(a.name, root, sha256=a.sha256, convert_to_mvtec=not a.no_convert, progress=not a.no_progress)
    except (FetchError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
