"""daic.sidecar.versions.RegistryVersions: which model versions the sidecar scores.

The registry is listed at most every ``refresh_s``; a version the champion pointer names is known at
once (a champion registered just after a listing had its first predictions refused).
"""
from __future__ import annotations

from daic.sidecar.versions import RegistryVersions
from daic.storage import open_store


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_version_named_by_the_champion_pointer_is_known_before_the_next_listing(tmp_path):
    clock = Clock()
    versions = RegistryVersions(open_store(f"file://{tmp_path}"), "mnist", refresh_s=5.0, clock=clock)
    assert not versions.known("v0002")  # an empty registry, listed now
    clock.t += 1.0
    assert not versions.known("v0002")  # not listed again within refresh_s
    versions.add("v0002")
    assert versions.known("v0002")
    assert not versions.known("v0003")


def test_an_unknown_version_stays_refused_after_a_listing(tmp_path):
    clock = Clock()
    versions = RegistryVersions(open_store(f"file://{tmp_path}"), "mnist", refresh_s=5.0, clock=clock)
    assert not versions.known("forged")
    clock.t += 10.0  # listed again: still not in the registry
    assert not versions.known("forged")
