"""collect-labels: hand the sample to a labeling backend and wait for labels (see README.md)."""
