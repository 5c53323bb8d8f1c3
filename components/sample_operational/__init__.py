"""sample-operational: choose operational inputs to label (see README.md)."""
