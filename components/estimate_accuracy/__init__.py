"""estimate-accuracy: the offline estimate and interval for the sample's design (see README.md)."""
