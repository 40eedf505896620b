"""agent/: the doorbell on the Pi: recorder, GPIO, the run loop."""
