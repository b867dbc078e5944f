"""Object storage for the sidecar binary (Part 3): an embedded S3 server, or any S3-compatible endpoint.

The buildpack of Part 3 downloads the config-server at staging time from a URL, so the binary must
live somewhere the platform's staging containers can reach. By default that is an embedded S3 server
(moto's, on 127.0.0.1 with a free port); any S3-compatible endpoint (AWS, MinIO, ...) works by
parameters instead. Two rooms: `s3` (the settings, their validation, the upload) and `server` (the
embedded server's supervision). `python -m sidecarlab.blobstore serve` is the server process itself.
"""

from __future__ import annotations

from .errors import BlobStoreError
from .s3 import (
    AWS,
    DEFAULT_BUCKET,
    DEFAULT_REGION,
    EMBEDDED,
    KEY_PREFIX,
    S3Settings,
    Upload,
    aws_cp_command,
    public_url,
    sha256_of,
    sidecar_key,
    upload_sidecar,
    validate,
    write_downloadurl,
)
from .server import ServerStatus, default_state_dir, start, status, stop, stop_if_mine

__all__ = [
    "AWS",
    "DEFAULT_BUCKET",
    "DEFAULT_REGION",
    "EMBEDDED",
    "KEY_PREFIX",
    "BlobStoreError",
    "S3Settings",
    "ServerStatus",
    "Upload",
    "aws_cp_command",
    "default_state_dir",
    "public_url",
    "sha256_of",
    "sidecar_key",
    "start",
    "status",
    "stop",
    "stop_if_mine",
    "upload_sidecar",
    "validate",
    "write_downloadurl",
]
