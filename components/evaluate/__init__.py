"""evaluate: challenger vs champion on held-out operational inputs and clean test data (see README.md)."""
