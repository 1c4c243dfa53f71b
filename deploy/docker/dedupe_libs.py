"""Replace duplicate shared libraries under a folder with relative symbolic links.

Wheels cannot contain symbolic links, so a wheel that ships ``libfoo.so``, ``libfoo.so.1`` and
``libfoo.so.1.2.3`` installs three identical copies. For every group of such names in one folder
whose contents are byte-identical, this keeps the longest (most specific) name as the file and
makes the others links to it, as a system package would. Files that differ are left alone.

Usage: python dedupe_libs.py FOLDER [FOLDER ...]
"""

from __future__ import annotations

import filecmp
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

SONAME = re.compile(r"^(?P<stem>.+?\.so)(?:\.[0-9][0-9.]*)?$")


def dedupe_folder(folder: Path) -> int:
    """Link byte-identical ``libfoo.so*`` files in ``folder`` and return the bytes saved."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in folder.iterdir():
        match = SONAME.match(path.name)
        if match and path.is_file() and not path.is_symlink():
            groups[match.group("stem")].append(path)

    saved = 0
    for paths in groups.values():
        if len(paths) < 2:
            continue
        target = max(paths, key=lambda p: len(p.name))
        for path in paths:
            if path == target or not filecmp.cmp(path, target, shallow=False):
                continue
            saved += path.stat().st_size
            path.unlink()
            os.symlink(target.name, path)
            print(f"linked {path} -> {target.name}")
    return saved


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    saved = 0
    for name in argv:
        folder = Path(name)
        if not folder.is_dir():
            print(f"dedupe_libs: {folder} is not a folder", file=sys.stderr)
            return 2
        saved += dedupe_folder(folder)
    print(f"dedupe_libs: saved {saved / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
