"""S3 settings, their validation, and the upload of the sidecar binary (to the embedded server or any
S3-compatible endpoint). Credentials for a real endpoint come ONLY from the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optionally ``AWS_SESSION_TOKEN``)."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from .errors import BlobStoreError
from .server import require_moto, status

__all__ = [
    "AWS",
    "DEFAULT_BUCKET",
    "DEFAULT_REGION",
    "EMBEDDED",
    "KEY_PREFIX",
    "S3Settings",
    "Upload",
    "aws_cp_command",
    "public_url",
    "sha256_of",
    "sidecar_key",
    "upload_sidecar",
    "validate",
    "write_downloadurl",
]

EMBEDDED = "embedded"
AWS = "aws"
DEFAULT_BUCKET = "sidecar-buildpack"
DEFAULT_REGION = "us-east-1"
KEY_PREFIX = "config-server-sidecar"

# moto accepts any credentials; these are the dummy ones its documentation uses. They are only ever
# sent to the embedded server.
_EMBEDDED_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")

# A guard against hanging, not a performance claim.
_CONNECT_TIMEOUT = 5.0

# S3's bucket naming rules (the common subset every S3-compatible store accepts).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]*$")


# ----------------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class S3Settings:
    """Where the sidecar binary goes: `endpoint` is "embedded", "aws" or an http(s) URL."""

    endpoint: str = EMBEDDED
    bucket: str = DEFAULT_BUCKET
    region: str = DEFAULT_REGION
    #: A learner's own folder under KEY_PREFIX on a shared store (`sidecarlab.learner.scoped_s3`); empty: none.
    learner: str = ""

    @property
    def embedded(self) -> bool:
        """True for the embedded S3 server this kit starts."""
        return self.endpoint == EMBEDDED

    def describe(self) -> str:
        """One line naming the store and the bucket."""
        where = {EMBEDDED: "the embedded S3 server (moto)", AWS: f"AWS S3 ({self.region})"}.get(
            self.endpoint, self.endpoint)
        mine = f", keys under {KEY_PREFIX}/{self.learner}/" if self.learner else ""
        return f"bucket {self.bucket!r} on {where}{mine}"


def validate(endpoint: str = EMBEDDED, bucket: str = DEFAULT_BUCKET, region: str = DEFAULT_REGION, *,
             target: str = "local", check_remote: bool = True) -> S3Settings:
    """Check the object-store parameters before anything is built or pushed; return them as settings.

    Raises BlobStoreError naming the parameter that is wrong and what to do: an endpoint that is
    neither "embedded", "aws" nor an http(s) URL, or that does not resolve or answer; a missing or
    invalid bucket name, or (for a real endpoint) a bucket that does not exist; missing credentials
    for a real endpoint; the embedded store with a real Cloud Foundry, whose staging containers
    cannot reach this machine's 127.0.0.1.
    """
    endpoint = (endpoint or "").strip()
    bucket = (bucket or "").strip()
    region = (region or "").strip() or DEFAULT_REGION
    if endpoint.lower() in (EMBEDDED, AWS):
        endpoint = endpoint.lower()
    elif not endpoint:
        raise BlobStoreError(
            "s3_endpoint is empty: set it to 'embedded' (the kit's own S3 server, the default), 'aws' "
            "(Amazon S3 in s3_region), or the URL of an S3-compatible endpoint such as "
            "'http://minio.example.com:9000'.")
    else:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BlobStoreError(
                f"s3_endpoint {endpoint!r} is not a known endpoint: use 'embedded', 'aws', or an "
                "http(s) URL with a host, e.g. 'https://s3.eu-west-1.amazonaws.com' or "
                "'http://minio.example.com:9000'.")
        endpoint = endpoint.rstrip("/")
    if not bucket:
        raise BlobStoreError(
            "s3_bucket is missing: set it to the bucket that holds the sidecar binary, e.g. "
            f"{DEFAULT_BUCKET!r} (the embedded store creates it; on a real endpoint it must exist).")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise BlobStoreError(
            f"s3_bucket {bucket!r} is not a valid bucket name: use 3 to 63 lowercase letters, digits, "
            "dots or hyphens, starting and ending with a letter or digit.")
    settings = S3Settings(endpoint, bucket, region)
    if settings.embedded:
        if target == "cf":
            raise BlobStoreError(
                "s3_endpoint 'embedded' cannot serve a real Cloud Foundry: the embedded S3 server listens "
                "on 127.0.0.1 of this machine, which the foundation's staging containers cannot reach. "
                "Set s3_endpoint to 'aws' or to the URL of an S3-compatible store they can reach, and "
                "s3_bucket to an existing bucket (credentials in AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY).")
        require_moto()
        return settings
    host = urlsplit(settings.endpoint).hostname or ""
    if target == "cf" and (host == "localhost" or host.startswith("127.") or host == "::1"):
        raise BlobStoreError(
            f"s3_endpoint {settings.endpoint!r} is on this machine's loopback address, which a real Cloud "
            "Foundry's staging containers cannot reach: use an endpoint they can reach (or 'aws').")
    _credentials()  # fails first: nothing else about a real endpoint can be checked without them
    if check_remote:
        _check_reachable(settings)
        _check_bucket(settings)
    return settings


def _credentials() -> dict[str, str]:
    missing = [name for name in _CREDENTIAL_VARIABLES if not os.environ.get(name)]
    if missing:
        raise BlobStoreError(
            f"A real S3 endpoint needs credentials in the environment variable(s) {', '.join(missing)} "
            "(never in notebook parameters). Export them before starting Jupyter or `sidecarlab`, e.g. "
            "`export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...`, or use s3_endpoint 'embedded'.")
    found = {"aws_access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
             "aws_secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"]}
    if os.environ.get("AWS_SESSION_TOKEN"):
        found["aws_session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return found


def _endpoint_url(settings: S3Settings, state_dir: Path | None = None) -> str | None:
    """The URL boto3 talks to (None: boto3's own AWS endpoint for the region)."""
    if settings.embedded:
        running = status(state_dir)
        if running is None:
            raise BlobStoreError(
                "The embedded S3 server is not running: start it with `blobstore.start()` in a "
                "notebook or `sidecarlab blobstore start` in a terminal, then try again.")
        return running.endpoint_url
    if settings.endpoint == AWS:
        return None
    return settings.endpoint


def _check_reachable(settings: S3Settings) -> None:
    if settings.endpoint == AWS:
        host, port, shown = f"s3.{settings.region}.amazonaws.com", 443, f"AWS S3 in region {settings.region!r}"
    else:
        parts = urlsplit(settings.endpoint)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        shown = settings.endpoint
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BlobStoreError(
            f"s3_endpoint {shown}: the host {host!r} is unknown ({exc.strerror}). Check the spelling of "
            "s3_endpoint (or s3_region for 'aws') and your network.") from None
    try:
        with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise BlobStoreError(
            f"s3_endpoint {shown}: nothing answers at {host}:{port} ({why}). Is the S3 server running, "
            "and is the port right?") from None


def _check_bucket(settings: S3Settings) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    client = _client(settings, None)
    try:
        client.head_bucket(Bucket=settings.bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status_code = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchBucket", "NotFound") or status_code == 404:
            raise BlobStoreError(
                f"s3_bucket {settings.bucket!r} does not exist at {settings.describe()}: create it first "
                f"(e.g. `aws s3 mb s3://{settings.bucket}`), or set s3_bucket to an existing bucket. "
                "Only the embedded store creates its bucket itself.") from None
        if code in ("403", "AccessDenied", "Forbidden") or status_code == 403:
            raise BlobStoreError(
                f"Access to s3_bucket {settings.bucket!r} was denied at {settings.describe()}: the "
                "credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are wrong or may not use this "
                "bucket.") from None
        raise BlobStoreError(f"Checking s3_bucket {settings.bucket!r} at {settings.describe()} failed: "
                             f"{exc}") from None
    except BotoCoreError as exc:
        raise BlobStoreError(f"Checking s3_bucket {settings.bucket!r} at {settings.describe()} failed: "
                             f"{exc}") from None


def _client(settings: S3Settings, state_dir: Path | None) -> Any:
    import boto3
    from botocore.config import Config

    credentials = _EMBEDDED_CREDENTIALS if settings.embedded else _credentials()
    # Path-style addressing works with every S3-compatible server (MinIO, moto) and with AWS.
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                    connect_timeout=_CONNECT_TIMEOUT, read_timeout=60)
    return boto3.session.Session().client(
        "s3", region_name=settings.region, endpoint_url=_endpoint_url(settings, state_dir),
        config=config, **credentials)


# ------------------------------------------------------------------------------- the upload

@dataclass(frozen=True)
class Upload:
    """A sidecar binary in the object store: where it is, and its SHA-256 to compare with the droplet's."""

    url: str
    bucket: str
    key: str
    sha256: str
    size: int
    endpoint: str


def sidecar_key(version: str, learner: str = "") -> str:
    """The object key of a config-server version: `config-server-sidecar/config-server-v<version>`
    (`config-server-sidecar/<learner>/config-server-v<version>` for a learner on a shared store)."""
    version = (version or "").strip().lstrip("v")
    if not _VERSION.match(version):
        raise BlobStoreError(f"sidecar version {version!r} is not a version: use e.g. '0.0.1' (letters, digits, "
                             "dots, hyphens).")
    folder = f"{KEY_PREFIX}/{learner}" if learner else KEY_PREFIX
    return f"{folder}/config-server-v{version}"


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def public_url(settings: S3Settings, key: str, state_dir: Path | None = None) -> str:
    """The anonymous download URL of `key` (what `.downloadurl` holds)."""
    quoted = quote(key)
    if settings.endpoint == AWS:
        if "." in settings.bucket:  # dots break the wildcard certificate of virtual-hosted URLs
            return f"https://s3.{settings.region}.amazonaws.com/{settings.bucket}/{quoted}"
        return f"https://{settings.bucket}.s3.{settings.region}.amazonaws.com/{quoted}"
    base = _endpoint_url(settings, state_dir)
    return f"{base}/{settings.bucket}/{quoted}"


def aws_cp_command(source: str, settings: S3Settings, key: str, state_dir: Path | None = None) -> str:
    """The aws CLI line that uploads `source` as `key`, readable by anyone (what a learner types on a
    real foundation): `aws s3 cp SOURCE s3://BUCKET/KEY --acl public-read`, plus `--region` for AWS
    and `--endpoint-url` for any other S3-compatible store."""
    where = (f" --region {settings.region}" if settings.endpoint == AWS
             else f" --endpoint-url {_endpoint_url(settings, state_dir)}")
    return f"aws s3 cp {source} s3://{settings.bucket}/{key} --acl public-read{where}"


def upload_sidecar(binary: Path, version: str, settings: S3Settings, *, buildpack_dir: Path | None = None,
                   state_dir: Path | None = None, check_public: bool = True,
                   log: Callable[[str], None] | None = print, show_command: bool = False) -> Upload:
    """Upload `binary` as `config-server-sidecar/config-server-v<version>`, readable by anyone, and
    write its URL to `buildpack_dir/.downloadurl`. The embedded store creates the bucket if missing.

    With `check_public`, an anonymous GET of the URL must answer 200, so a bucket that refuses public
    reads is reported here rather than as a failed staging later. With `show_command`, the `aws s3 cp`
    line that does the same upload is printed first (`$ aws s3 cp ...`), the binary named relative to
    the current directory.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    binary = Path(binary)
    if not binary.is_file():
        raise BlobStoreError(f"No sidecar binary at {binary}: build it first (sidecarlab.sidecar.build).")
    key = sidecar_key(version, settings.learner)
    client = _client(settings, state_dir)
    say = log or (lambda _line: None)
    if show_command:
        say("$ " + aws_cp_command(os.path.relpath(binary), settings, key, state_dir))
    try:
        if settings.embedded:
            _ensure_bucket(client, settings.bucket)
        with open(binary, "rb") as body:
            try:
                client.put_object(Bucket=settings.bucket, Key=key, Body=body, ACL="public-read",
                                  ContentType="application/octet-stream")
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "AccessControlListNotSupported":
                    raise
                # Buckets with "bucket owner enforced" ownership reject ACLs; their policy decides.
                say(f"note: bucket {settings.bucket} does not accept ACLs; its bucket policy must allow "
                    "public reads of the object")
                body.seek(0)
                client.put_object(Bucket=settings.bucket, Key=key, Body=body,
                                  ContentType="application/octet-stream")
    except ClientError as exc:
        raise BlobStoreError(f"Uploading {binary.name} to {settings.describe()} as {key} failed: "
                             f"{exc.response.get('Error', {}).get('Message') or exc}") from None
    except BotoCoreError as exc:
        raise BlobStoreError(f"Uploading {binary.name} to {settings.describe()} failed: {exc}") from None
    url = public_url(settings, key, state_dir)
    uploaded = Upload(url, settings.bucket, key, sha256_of(binary), binary.stat().st_size, settings.endpoint)
    if check_public:
        _check_public(uploaded)
    say(f"uploaded {binary.name} ({uploaded.size // 1024} KiB, sha256 {uploaded.sha256[:12]}...) to {url}")
    if buildpack_dir is not None:
        path = write_downloadurl(buildpack_dir, url)
        say(f"wrote {path}")
    return uploaded


def write_downloadurl(buildpack_dir: Path, url: str) -> Path:
    """Write `url` to the buildpack's `.downloadurl`, the file its bin/supply reads."""
    buildpack_dir = Path(buildpack_dir)
    if not buildpack_dir.is_dir():
        raise BlobStoreError(f"No buildpack directory at {buildpack_dir}: write the buildpack first.")
    path = buildpack_dir / ".downloadurl"
    path.write_text(url + "\n")
    return path


def _ensure_bucket(client: Any, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError:
        client.create_bucket(Bucket=bucket)


def _check_public(uploaded: Upload) -> None:
    with requests.Session() as session:
        # The embedded server is on this machine: never send that request through a proxy.
        session.trust_env = uploaded.endpoint != EMBEDDED
        try:
            response = session.head(uploaded.url, timeout=10, allow_redirects=True)
        except requests.RequestException as exc:
            raise BlobStoreError(f"The uploaded sidecar is not reachable at {uploaded.url}: {exc}") from None
    if response.status_code != 200:
        raise BlobStoreError(
            f"An anonymous download of {uploaded.url} answers HTTP {response.status_code}, so staging "
            f"would fail the same way: allow public reads of {uploaded.key} in bucket {uploaded.bucket} "
            "(public-read ACL or a bucket policy).")
