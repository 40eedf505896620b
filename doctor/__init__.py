"""doctor/: `doorstep doctor`, the installer's self-check at the door."""
