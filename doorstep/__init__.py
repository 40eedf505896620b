"""Doorstep: the command line and the wiring of the stages. Errors live in doorstep.core.errors."""

__version__ = "0.1.0"
