"""Object storage for the sidecar binary (Part 3): an embedded S3 server, or any S3-compatible endpoint.

The buildpack of Part 3 downloads the config-server at staging time from a URL, so the binary must
live somewhere the platform's staging containers can reach. By default that is an embedded S3 server
(moto's, on 127.0.0.1 with a free port) that this module starts as a detached process with a pid file
and a port file in a state dir (``$SIDECARLAB_HOME/blobstore``, else ``build/blobstore`` of the
checkout). Any S3-compatible endpoint (AWS, MinIO, ...) works by parameters instead; its credentials
come ONLY from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optionally
``AWS_SESSION_TOKEN``), never from parameters or profile files.

The embedded server never outlives its owner: ``start()`` ties it to the calling process by default
(a notebook's kernel, a test worker), and the server exits on its own as soon as that process ends,
however it ends. ``stop()`` ends it at once.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from urllib.parse import quote, urlsplit

__all__ = [
    "BlobStoreError",
    "EMBEDDED",
    "AWS",
    "S3Settings",
    "ServerStatus",
    "Upload",
    "default_state_dir",
    "public_url",
    "sha256_of",
    "sidecar_key",
    "start",
    "status",
    "stop",
    "stop_if_mine",
    "upload_sidecar",
    "write_downloadurl",
    "validate",
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

_PID_FILE = "blobstore.pid"
_PORT_FILE = "blobstore.port"
_OWNER_FILE = "blobstore.owner"
_LOG_FILE = "blobstore.log"
_LOCK_FILE = "blobstore.lock"

# Guards against hanging, not performance claims.
_START_DEADLINE = 60.0
_STOP_DEADLINE = 10.0
_CONNECT_TIMEOUT = 5.0

# S3's bucket naming rules (the common subset every S3-compatible store accepts).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]*$")


class BlobStoreError(RuntimeError):
    """The object store could not be used as asked; the message says what was wrong and what to do."""


# ----------------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class S3Settings:
    """Where the sidecar binary goes: `endpoint` is "embedded", "aws" or an http(s) URL."""

    endpoint: str = EMBEDDED
    bucket: str = DEFAULT_BUCKET
    region: str = DEFAULT_REGION

    @property
    def embedded(self) -> bool:
        """True for the embedded S3 server this kit starts."""
        return self.endpoint == EMBEDDED

    def describe(self) -> str:
        """One line naming the store and the bucket."""
        where = {EMBEDDED: "the embedded S3 server (moto)", AWS: f"AWS S3 ({self.region})"}.get(
            self.endpoint, self.endpoint)
        return f"bucket {self.bucket!r} on {where}"


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
        _require_moto()
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


def _require_moto() -> None:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise BlobStoreError(
            f"The embedded S3 server needs moto's server, which is not installed in {sys.prefix}: "
            "install the kit with `pip install -e '.[kit]'` (or `pip install 'moto[server]'`).") from None


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


def _endpoint_url(settings: S3Settings, state_dir: Optional[Path] = None) -> Optional[str]:
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


def _client(settings: S3Settings, state_dir: Optional[Path]) -> Any:
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


def sidecar_key(version: str) -> str:
    """The object key of a config-server version: `config-server-sidecar/config-server-v<version>`."""
    version = (version or "").strip().lstrip("v")
    if not _VERSION.match(version):
        raise BlobStoreError(f"sidecar version {version!r} is not a version: use e.g. '0.0.1' (letters, digits, "
                             "dots, hyphens).")
    return f"{KEY_PREFIX}/config-server-v{version}"


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def public_url(settings: S3Settings, key: str, state_dir: Optional[Path] = None) -> str:
    """The anonymous download URL of `key` (what `.downloadurl` holds)."""
    quoted = quote(key)
    if settings.endpoint == AWS:
        if "." in settings.bucket:  # dots break the wildcard certificate of virtual-hosted URLs
            return f"https://s3.{settings.region}.amazonaws.com/{settings.bucket}/{quoted}"
        return f"https://{settings.bucket}.s3.{settings.region}.amazonaws.com/{quoted}"
    base = _endpoint_url(settings, state_dir)
    return f"{base}/{settings.bucket}/{quoted}"


def upload_sidecar(binary: Path, version: str, settings: S3Settings, *, buildpack_dir: Optional[Path] = None,
                   state_dir: Optional[Path] = None, check_public: bool = True,
                   log: Optional[Callable[[str], None]] = print) -> Upload:
    """Upload `binary` as `config-server-sidecar/config-server-v<version>`, readable by anyone, and
    write its URL to `buildpack_dir/.downloadurl`. The embedded store creates the bucket if missing.

    With `check_public`, an anonymous GET of the URL must answer 200, so a bucket that refuses public
    reads is reported here rather than as a failed staging later.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    binary = Path(binary)
    if not binary.is_file():
        raise BlobStoreError(f"No sidecar binary at {binary}: build it first (sidecarlab.sidecar.build).")
    key = sidecar_key(version)
    client = _client(settings, state_dir)
    say = log or (lambda _line: None)
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
    import requests

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


# ----------------------------------------------------------------------- the embedded server

@dataclass(frozen=True)
class ServerStatus:
    """A running embedded S3 server: its pid, port and owner (the process it exits with)."""

    state_dir: Path
    pid: int
    port: int
    owner_pid: Optional[int]
    started: bool = False  # True when this very call started it

    @property
    def endpoint_url(self) -> str:
        """The URL S3 clients (and staging containers on this machine) use."""
        return f"http://127.0.0.1:{self.port}"

    def describe(self) -> str:
        """One line for people: where it listens and what ends it."""
        owner = f"exits with process {self.owner_pid}" if self.owner_pid else "runs until stopped"
        return f"embedded S3 server at {self.endpoint_url} (pid {self.pid}, {owner}; state in {self.state_dir})"


def default_state_dir() -> Path:
    """`$SIDECARLAB_HOME/blobstore`, else `build/blobstore` of the checkout, else a per-user temp dir."""
    home = os.environ.get("SIDECARLAB_HOME")
    if home:
        return Path(home).expanduser().resolve() / "blobstore"
    from .sidecar import project_root

    root = project_root()
    if root is not None:
        return root / "build" / "blobstore"
    return Path(tempfile.gettempdir()) / f"sidecarlab-{os.getuid()}" / "blobstore"


def _dir(state_dir: Optional[Path]) -> Path:
    return Path(state_dir).resolve() if state_dir else default_state_dir()


def _read_int(path: Path) -> Optional[int]:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_our_server(pid: int, state_dir: Path) -> bool:
    """The pid is alive and is the embedded server of this state dir (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc (macOS): trust the pid file
    args = [a.decode(errors="replace") for a in cmdline]
    return "sidecarlab.blobstore" in args and str(state_dir) in args


def status(state_dir: Optional[Path] = None) -> Optional[ServerStatus]:
    """The running embedded server of `state_dir`, or None."""
    directory = _dir(state_dir)
    pid = _read_int(directory / _PID_FILE)
    port = _read_int(directory / _PORT_FILE)
    if pid is None or port is None or not _is_our_server(pid, directory):
        return None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    except OSError:
        return None
    owner = _read_int(directory / _OWNER_FILE)
    return ServerStatus(directory, pid, port, owner or None)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / _LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_CALLER = -1


def start(state_dir: Optional[Path] = None, owner_pid: Optional[int] = _CALLER) -> ServerStatus:
    """Start the embedded S3 server on 127.0.0.1 (a free port), or return the one already running.

    By default the server exits by itself when the calling process ends (a notebook's kernel, a test);
    `owner_pid=None` keeps it running until `stop()`, another pid ties it to that process.
    """
    _require_moto()
    directory = _dir(state_dir)
    owner = os.getpid() if owner_pid == _CALLER else owner_pid
    with _locked(directory):
        running = status(directory)
        if running is not None:
            return running
        for name in (_PID_FILE, _PORT_FILE, _OWNER_FILE):
            (directory / name).unlink(missing_ok=True)
        log_path = directory / _LOG_FILE
        argv = [sys.executable, "-m", "sidecarlab.blobstore", "serve", "--state-dir", str(directory),
                "--owner-pid", str(owner or 0), "--detach"]
        with open(log_path, "ab") as log:
            # The launcher forks the server and exits at once, so the server is nobody's child:
            # no zombie is left in the caller when it later stops.
            launcher = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True, close_fds=True, timeout=_START_DEADLINE)
        if launcher.returncode != 0:
            raise BlobStoreError(f"The embedded S3 server did not start (exit {launcher.returncode}):\n"
                                 f"{_tail(log_path)}")
        deadline = time.monotonic() + _START_DEADLINE
        while time.monotonic() < deadline:
            running = status(directory)
            if running is not None:
                return ServerStatus(running.state_dir, running.pid, running.port, running.owner_pid, started=True)
            pid = _read_int(directory / _PID_FILE)
            if pid is not None and not _is_our_server(pid, directory):
                break
            time.sleep(0.05)
        raise BlobStoreError(f"The embedded S3 server did not come up within {_START_DEADLINE:.0f}s. Its log "
                             f"({log_path}) ends with:\n{_tail(log_path)}")


def stop(state_dir: Optional[Path] = None) -> bool:
    """Stop the embedded server of `state_dir`; True if one was running. Idempotent."""
    directory = _dir(state_dir)
    if not directory.is_dir():
        return False
    with _locked(directory):
        pid = _read_int(directory / _PID_FILE)
        was_running = pid is not None and _is_our_server(pid, directory)
        if was_running:
            assert pid is not None
            _terminate(pid, directory)
        for name in (_PID_FILE, _PORT_FILE, _OWNER_FILE):
            (directory / name).unlink(missing_ok=True)
        return was_running


def stop_if_mine(state_dir: Optional[Path] = None) -> bool:
    """Stop the embedded server if it is tied to this process (`start()` from here); True if stopped.

    A notebook's clean-up calls this: it ends the server the notebook started, and leaves alone
    one started from a terminal with `sidecarlab blobstore start`.
    """
    running = status(state_dir)
    if running is None or running.owner_pid != os.getpid():
        return False
    return stop(state_dir)


def _terminate(pid: int, directory: Path) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_DEADLINE
    while time.monotonic() < deadline:
        if not _is_our_server(pid, directory):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while _is_our_server(pid, directory) and _alive(pid):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------- the server process itself

def _wait_for_exit(pid: int, stop_event: threading.Event) -> None:
    """Set `stop_event` when process `pid` ends (at once with a pidfd, else by polling)."""
    try:
        fd = os.pidfd_open(pid)  # type: ignore[attr-defined]
    except ProcessLookupError:
        stop_event.set()
        return
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            while not stop_event.is_set():
                if poller.poll(500):
                    break
        finally:
            os.close(fd)
        stop_event.set()
        return
    while not stop_event.is_set():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        except PermissionError:
            pass
        time.sleep(0.2)
    stop_event.set()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _serve(state_dir: Path, owner_pid: int) -> int:
    from moto.server import ThreadedMotoServer

    stop_event = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_event.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if owner_pid:
        threading.Thread(target=_wait_for_exit, args=(owner_pid, stop_event), daemon=True).start()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _host, port = server.get_host_and_port()
    me = os.getpid()
    _write_atomic(state_dir / _OWNER_FILE, str(owner_pid))
    _write_atomic(state_dir / _PID_FILE, str(me))
    _write_atomic(state_dir / _PORT_FILE, str(port))
    print(f"embedded S3 server pid {me} listening on 127.0.0.1:{port}"
          + (f", exits with process {owner_pid}" if owner_pid else ""), flush=True)
    while not stop_event.wait(0.5):
        pass
    # Only remove the files if they are still ours (a newer server may have replaced them).
    if _read_int(state_dir / _PID_FILE) == me:
        for name in (_PID_FILE, _PORT_FILE, _OWNER_FILE):
            (state_dir / name).unlink(missing_ok=True)
    print(f"embedded S3 server pid {me} stopping", flush=True)
    # Exit without waiting for in-flight requests: the data is in memory and goes with the process.
    os._exit(0)


def _main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecarlab.blobstore",
                                     description="The embedded S3 server (started by sidecarlab.blobstore.start).")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--state-dir", required=True, type=Path)
    serve.add_argument("--owner-pid", type=int, default=0)
    serve.add_argument("--detach", action="store_true")
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    if args.detach:
        # Double fork: the launcher exits now, the server is re-parented and never becomes a zombie
        # of the process that started it.
        if os.fork() > 0:
            return 0
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
    try:
        return _serve(state_dir, args.owner_pid)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"embedded S3 server: no free port on 127.0.0.1 ({exc})", file=sys.stderr)
        raise


if __name__ == "__main__":
    sys.exit(_main())
