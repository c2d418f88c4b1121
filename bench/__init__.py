"""``make bench``: esproxy measured side by side with direct access, on this machine (see README)."""
