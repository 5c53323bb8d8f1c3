"""deploy: promote the challenger (canary, then full) or switch the local champion (see README.md)."""
