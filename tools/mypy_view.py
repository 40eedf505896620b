"""Lay out .mypy-view/doorstep/ as the wheel installs it, with symlinks to the repository's
folders (setup.cfg's package_dir), so mypy checks `doorstep.agent` and the rest under their
one installed name. mypy cannot follow setuptools' editable-install finder, and the folders
(agent/, capture/, ...) are not under doorstep/ in the repository. Run by `make lint`."""

from __future__ import annotations

import configparser
import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIEW = REPO / ".mypy-view"


def main() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    mapping = dict(
        (part.strip() for part in line.partition("=")[::2])
        for line in cfg["options"]["package_dir"].strip().splitlines())
    root = VIEW / "doorstep"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for path in (REPO / mapping["doorstep"]).iterdir():       # the root package's own files
        if path.suffix == ".py":
            os.symlink(path, root / path.name)
    for package, folder in mapping.items():
        if package.count(".") == 1:
            os.symlink(REPO / folder, root / package.split(".", 1)[1])
        elif package != "doorstep":    # a subpackage sits in its parent's folder, as installed
            parent, _, leaf = package.rpartition(".")
            assert Path(mapping[parent]) / leaf == Path(folder), (package, folder)


if __name__ == "__main__":
    main()
