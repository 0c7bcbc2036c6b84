"""The web process: receive, check on the raw bytes, store, answer."""
