"""Errors raised by every object-store backend, each naming the store's URL."""


class StorageError(Exception):
    """A store operation failed; the message names the store URL and the key."""


class KeyNotFound(StorageError, KeyError):
    """The key does not exist in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ObjectTooLarge(StorageError):
    """An object is larger than the store's read bound (``ObjectStore.max_object_bytes``): not read,
    so a faulty or hostile store cannot fill the reader's memory."""


class PreconditionFailed(StorageError):
    """A conditional write was refused: the object exists (``if_none_match``) or is not the
    version the caller read (``if_match``); nothing was written."""
