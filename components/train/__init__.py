"""train: retrain with Ray from the champion plus the labeled batches (see README.md)."""
