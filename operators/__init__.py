"""Installed as daic.operators."""
