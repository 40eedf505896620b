"""owner/: what the homeowner runs: keys, inbox, open, share."""
