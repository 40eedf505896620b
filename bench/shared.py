"""Where the project's shared data is: the folder `shared/data` beside the repository checkout,
or the folder that DOORSTEP_SHARED_DATA names. The bench's inputs and the tests' `shared_data`
fixture both ask here, and nothing else looks for it. The data is optional: without it, the
tests that need it skip, and the bench falls back to the bundled clip or reports the row as not
measured. Either way the reason names the folder that was looked at."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV = "DOORSTEP_SHARED_DATA"
# This file sits in <repo>/bench/ in a checkout (editable install). An installed wheel has no
# repository around it, and then only the environment variable can say where the data is.
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Found:
    """A file or folder in the shared data, or why it is not there."""

    path: Path | None
    why: str = ""  # empty when found


def shared_data(environ: Mapping[str, str] | None = None) -> Found:
    """The shared data folder: $DOORSTEP_SHARED_DATA when set, else <repo>/../shared/data."""
    env = os.environ if environ is None else environ
    given = env.get(ENV, "")
    if given:
        folder = Path(given).expanduser().resolve()
        if folder.is_dir():
            return Found(folder)
        return Found(None, f"{ENV}={given} is not a folder")
    if not (REPO / "setup.cfg").is_file():
        return Found(None, f"no shared data: not run from a repository checkout, and {ENV} "
                     "is not set")
    folder = REPO.parent / "shared" / "data"
    if folder.is_dir():
        return Found(folder)
    return Found(None, f"no shared data folder at {folder} (put shared/data beside the "
                 f"repository, or set {ENV})")


def find(*parts: str, environ: Mapping[str, str] | None = None) -> Found:
    """``parts`` inside the shared data folder, e.g. ``find("motion")``, or why not."""
    data = shared_data(environ)
    if data.path is None:
        return data
    path = data.path.joinpath(*parts)
    if path.exists():
        return Found(path)
    return Found(None, f"{'/'.join(parts)} is not in the shared data folder {data.path}")
