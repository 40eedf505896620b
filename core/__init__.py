"""The foundation every stage stands on: errors, file-system helpers, the clock, the drop log.
It imports nothing else of Doorstep."""
