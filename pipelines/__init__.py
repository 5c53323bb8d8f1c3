"""Installed as daic.pipelines."""
