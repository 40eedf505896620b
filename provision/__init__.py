"""Putting Doorstep on a Pi: `doorstep install` and first-boot provisioning."""
