"""bench/: the performance table (`doorstep bench`)."""
