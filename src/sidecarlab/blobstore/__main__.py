"""`python -m sidecarlab.blobstore serve ...`: the embedded S3 server process (started by `start()`)."""

from __future__ import annotations

import sys

from .server import _main

if __name__ == "__main__":
    sys.exit(_main())
