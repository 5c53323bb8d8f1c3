"""Datasets read offline (MNIST, Fashion-MNIST), MNIST-C-style corruptions and operational scenarios.

Modules: :mod:`daic.data.mnist` (``load_split``), :mod:`daic.data.corruptions` (``corrupt``,
``CORRUPTIONS``), :mod:`daic.data.scenarios` (``build_scenario``, ``materialise``) and
:mod:`daic.data.preview` (ASCII art and PNG grids). Import them directly: this package imports
nothing itself so that ``import daic.data.mnist`` does not pull in scipy.
"""
