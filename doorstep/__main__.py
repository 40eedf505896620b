"""`python3 -m doorstep`: the same command line as `doorstep`. With the wheel on PYTHONPATH it
runs before any venv exists: `sudo PYTHONPATH=doorstep-<version>-py3-none-any.whl python3 -m
doorstep install` builds the venv from that very wheel (docs/installer.md)."""

import sys

from doorstep.cli import main

sys.exit(main())
