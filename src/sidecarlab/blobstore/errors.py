"""The object store's error: what was wrong and what to do."""

from __future__ import annotations

from ..errors import KitError

__all__ = ["BlobStoreError"]


class BlobStoreError(KitError):
    """The object store could not be used as asked; the message says what was wrong and what to do."""
