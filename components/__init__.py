"""Installed as daic.components."""
