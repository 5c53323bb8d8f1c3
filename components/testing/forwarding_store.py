"""``ForwardingStore``: an ObjectStore that hands every operation to ``inner``, the base of the
tests' fault-injecting and gating stores (each overrides only the operations it intercepts)."""
from __future__ import annotations

from daic.storage import ObjectStore


class ForwardingStore(ObjectStore):
    def __init__(self, inner: ObjectStore) -> None:
        self.inner, self.url = inner, inner.url

    def put_bytes(self, key, data, *, if_none_match=False, if_match=None):
        return self.inner.put_bytes(key, data, if_none_match=if_none_match, if_match=if_match)

    def get_bytes(self, key):
        return self.inner.get_bytes(key)

    def get_with_etag(self, key):
        return self.inner.get_with_etag(key)

    def exists(self, key):
        return self.inner.exists(key)

    def list(self, prefix=""):
        return self.inner.list(prefix)

    def delete(self, key):
        return self.inner.delete(key)
