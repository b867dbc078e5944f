"""The embedded S3 server (start/stop/status, owner watch, no process left behind), the upload of the
sidecar to it or to any S3-compatible endpoint, and the validation of the object-store parameters.

Real processes throughout: moto's server started by the kit, boto3 uploads, curl downloads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import psutil
import pytest
from conftest import free_port

from sidecarlab import blobstore

SIDECARLAB = Path(sys.executable).parent / "sidecarlab"
# A guard against hanging, not a performance claim.
GONE_DEADLINE = 30.0


def blobstore_processes(state_dir: Path) -> list[int]:
    """PIDs of embedded S3 servers of `state_dir`, found by scanning every process's command line
    (independently of the kit's pid file; zombies, which no longer run, are not counted)."""
    found = []
    needle = str(Path(state_dir).resolve())
    for proc in psutil.process_iter(["cmdline", "status"]):
        args = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if "sidecarlab.blobstore" in args and any(needle in a for a in args):
            found.append(proc.pid)
    return sorted(found)


def wait_until_gone(state_dir: Path, deadline: float = GONE_DEADLINE) -> list[int]:
    """Poll until no server of `state_dir` is left (or `deadline` passes); the PIDs still there."""
    end = time.monotonic() + deadline
    while True:
        left = blobstore_processes(state_dir)
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.1)




def curl(url: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sSf", "-w", "%{http_code}", "-o", str(out), url],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "blobstore"
    try:
        yield directory
    finally:
        blobstore.stop(directory)
        assert wait_until_gone(directory) == []


@pytest.fixture(scope="module")
def remote_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Another moto server, used as "any S3-compatible endpoint" given by URL."""
    directory = tmp_path_factory.mktemp("remote-s3")
    try:
        yield blobstore.start(directory).endpoint_url
    finally:
        blobstore.stop(directory)
        assert wait_until_gone(directory) == []


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")


# ---------------------------------------------------------------------------- the server itself

def test_start_is_idempotent_serves_s3_and_stop_leaves_no_process(state_dir: Path, tmp_path: Path) -> None:
    first = blobstore.start(state_dir)
    assert first.started and first.owner_pid == os.getpid()
    again = blobstore.start(state_dir)
    assert (again.pid, again.port, again.started) == (first.pid, first.port, False)
    assert blobstore_processes(state_dir) == [first.pid]
    assert (state_dir / "blobstore.pid").read_text().strip() == str(first.pid)
    assert (state_dir / "blobstore.port").read_text().strip() == str(first.port)
    assert blobstore.status(state_dir) == again

    # It is an S3 server: boto3 can use it.
    s3 = boto3.client("s3", endpoint_url=first.endpoint_url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="probe")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["probe"]

    assert blobstore.stop(state_dir) is True
    assert blobstore_processes(state_dir) == []
    assert blobstore.status(state_dir) is None
    assert not (state_dir / "blobstore.pid").exists() and not (state_dir / "blobstore.port").exists()
    assert blobstore.stop(state_dir) is False


def test_server_exits_by_itself_when_its_owner_process_dies(state_dir: Path) -> None:
    # A stand-in for a notebook kernel: it starts the server (tied to itself) and is then killed.
    owner = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from sidecarlab import blobstore; "
         f"print(blobstore.start({str(state_dir)!r}).pid, flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        server_pid = int(owner.stdout.readline())
        assert blobstore_processes(state_dir) == [server_pid]
        assert blobstore.status(state_dir).owner_pid == owner.pid
    finally:
        owner.kill()
        owner.wait()
    assert wait_until_gone(state_dir) == [], "the server outlived its owner"
    assert blobstore.status(state_dir) is None


def test_stop_if_mine_leaves_a_server_started_elsewhere_alone(state_dir: Path) -> None:
    blobstore.start(state_dir, owner_pid=None)  # as `sidecarlab blobstore start` does
    assert blobstore.stop_if_mine(state_dir) is False
    assert blobstore.status(state_dir) is not None
    assert blobstore.stop(state_dir) is True


def test_cli_start_status_upload_stop(state_dir: Path, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(SIDECARLAB), *args, "--state-dir", str(state_dir)] if args[0] == "blobstore"
                              else [str(SIDECARLAB), *args], capture_output=True, text=True, timeout=120)

    assert cli("blobstore", "status").returncode == 1
    started = cli("blobstore", "start")
    assert started.returncode == 0 and "started embedded S3 server at http://127.0.0.1:" in started.stdout
    assert "runs until stopped" in started.stdout
    assert "already running" in cli("blobstore", "start").stdout
    assert cli("blobstore", "status").returncode == 0

    binary = tmp_path / "config-server"
    binary.write_bytes(os.urandom(4096))
    buildpack = tmp_path / "bp"
    buildpack.mkdir()
    upload = cli("sidecar", "upload", "--version", "1.2.3", "--binary", str(binary), "--buildpack", str(buildpack),
                 "--state-dir", str(state_dir))
    assert upload.returncode == 0, upload.stdout + upload.stderr
    url = upload.stdout.strip().splitlines()[-1]
    assert url.endswith("/sidecar-buildpack/config-server-sidecar/config-server-v1.2.3")
    assert (buildpack / ".downloadurl").read_text().strip() == url
    got = curl(url, tmp_path / "downloaded")
    assert got.stdout == "200" and (tmp_path / "downloaded").read_bytes() == binary.read_bytes()

    stopped = cli("blobstore", "stop")
    assert "stopped" in stopped.stdout and blobstore_processes(state_dir) == []
    assert "was not running" in cli("blobstore", "stop").stdout


def test_cli_upload_says_to_start_the_embedded_server_first(state_dir: Path, tmp_path: Path) -> None:
    binary = tmp_path / "config-server"
    binary.write_bytes(b"x")
    proc = subprocess.run([str(SIDECARLAB), "sidecar", "upload", "--version", "1", "--binary", str(binary),
                           "--state-dir", str(state_dir)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "not running" in proc.stderr and "sidecarlab blobstore start" in proc.stderr


def test_cli_upload_rejects_bad_parameters_before_building(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run([str(SIDECARLAB), "sidecar", "upload", "--version", "1", "--endpoint", "aws"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1
    assert "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in proc.stderr and "--endpoint" in proc.stderr
    assert "built" not in proc.stdout


# -------------------------------------------------------------------------------- uploading

def test_upload_to_the_embedded_server_creates_the_bucket_and_is_public(state_dir: Path, tmp_path: Path) -> None:
    server = blobstore.start(state_dir)
    binary = tmp_path / "config-server"
    binary.write_bytes(b"\x7fELF" + os.urandom(2048))
    buildpack = tmp_path / "bp"
    buildpack.mkdir()
    settings = blobstore.validate()
    lines: list[str] = []
    upload = blobstore.upload_sidecar(binary, "0.0.1", settings, buildpack_dir=buildpack, state_dir=state_dir,
                                      log=lines.append)
    assert upload.key == "config-server-sidecar/config-server-v0.0.1"
    assert upload.url == f"{server.endpoint_url}/sidecar-buildpack/config-server-sidecar/config-server-v0.0.1"
    assert upload.sha256 == blobstore.sha256_of(binary) and upload.size == binary.stat().st_size
    assert (buildpack / ".downloadurl").read_text() == upload.url + "\n"
    assert any(upload.url in line for line in lines)
    # Anonymous download, exactly as the buildpack does at staging time.
    got = curl(upload.url, tmp_path / "downloaded")
    assert got.returncode == 0 and got.stdout == "200"
    assert blobstore.sha256_of(tmp_path / "downloaded") == upload.sha256
    missing = curl(blobstore.public_url(settings, blobstore.sidecar_key("9.9.9"), state_dir), tmp_path / "none")
    assert missing.returncode == 22 and missing.stdout == "404" and "404" in missing.stderr


def test_upload_to_an_s3_compatible_endpoint_uses_credentials_from_the_environment(
        remote_s3: str, aws_env: None, tmp_path: Path) -> None:
    boto3.client("s3", endpoint_url=remote_s3, region_name="us-east-1", aws_access_key_id="x",
                 aws_secret_access_key="y").create_bucket(Bucket="team-bucket")
    settings = blobstore.validate(remote_s3, "team-bucket", "us-east-1")
    assert not settings.embedded
    binary = tmp_path / "config-server"
    binary.write_bytes(os.urandom(1024))
    upload = blobstore.upload_sidecar(binary, "2.0.0", settings, log=None)
    assert upload.url == f"{remote_s3}/team-bucket/config-server-sidecar/config-server-v2.0.0"
    assert curl(upload.url, tmp_path / "got").stdout == "200"


def test_the_upload_prints_the_aws_cli_line_that_does_the_same(remote_s3: str, aws_env: None, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    client = boto3.client("s3", endpoint_url=remote_s3, region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="y")
    client.create_bucket(Bucket="team-bucket")
    settings = blobstore.validate(remote_s3, "team-bucket", "us-east-1")
    (tmp_path / "out").mkdir()
    binary = tmp_path / "out" / "config-server"
    binary.write_bytes(os.urandom(1024))
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    upload = blobstore.upload_sidecar(binary, "2.0.1", settings, log=lines.append, show_command=True)
    assert lines[0] == (f"$ aws s3 cp out/config-server s3://team-bucket/{upload.key} --acl public-read "
                        f"--endpoint-url {remote_s3}")
    # The line names the object that was really written, in the bucket and under the key it names.
    bucket, key = lines[0].split()[5].removeprefix("s3://").split("/", 1)
    assert client.head_object(Bucket=bucket, Key=key)["ContentLength"] == 1024
    # Without show_command the log has no command line (Part 4 prints its own, for the archive).
    quiet: list[str] = []
    blobstore.upload_sidecar(binary, "2.0.2", settings, log=quiet.append)
    assert not any(line.startswith("$ ") for line in quiet)


def test_the_aws_cli_line_for_aws_names_the_region() -> None:
    settings = blobstore.S3Settings("aws", "my-bucket", "eu-west-1")
    assert blobstore.aws_cp_command("./config-server", settings, "config-server-sidecar/config-server-v0.0.1") == (
        "aws s3 cp ./config-server s3://my-bucket/config-server-sidecar/config-server-v0.0.1 --acl public-read "
        "--region eu-west-1")


def test_public_urls_for_aws() -> None:
    key = blobstore.sidecar_key("0.0.1")
    assert blobstore.public_url(blobstore.S3Settings("aws", "my-bucket", "eu-west-1"), key) == \
        "https://my-bucket.s3.eu-west-1.amazonaws.com/config-server-sidecar/config-server-v0.0.1"
    # Dotted bucket names break the wildcard certificate: path style instead.
    assert blobstore.public_url(blobstore.S3Settings("aws", "my.bucket", "us-east-1"), key) == \
        "https://s3.us-east-1.amazonaws.com/my.bucket/config-server-sidecar/config-server-v0.0.1"


def test_versions_make_keys_and_bad_versions_are_refused() -> None:
    assert blobstore.sidecar_key("v1.2.3") == "config-server-sidecar/config-server-v1.2.3"
    with pytest.raises(blobstore.BlobStoreError, match="is not a version"):
        blobstore.sidecar_key("1.0 beta/../x")


# ------------------------------------------------------------------------------- validation

def test_validate_accepts_the_defaults_on_the_local_target() -> None:
    settings = blobstore.validate()
    assert settings == blobstore.S3Settings("embedded", "sidecar-buildpack", "us-east-1") and settings.embedded


@pytest.mark.parametrize(("endpoint", "bucket", "message"), [
    ("s3.example.com", "b-1", "is not a known endpoint: use 'embedded', 'aws', or an http\\(s\\) URL"),
    ("", "b-1", "s3_endpoint is empty"),
    ("embedded", "", "s3_bucket is missing"),
    ("embedded", "Not_A_Bucket", "is not a valid bucket name"),
])
def test_validate_names_the_bad_parameter(endpoint: str, bucket: str, message: str) -> None:
    with pytest.raises(blobstore.BlobStoreError, match=message):
        blobstore.validate(endpoint, bucket)


def test_validate_refuses_the_embedded_store_for_a_real_foundation() -> None:
    with pytest.raises(blobstore.BlobStoreError, match="cannot serve a real Cloud Foundry") as info:
        blobstore.validate("embedded", "sidecar-buildpack", target="cf")
    assert "s3_endpoint to 'aws'" in str(info.value)
    with pytest.raises(blobstore.BlobStoreError, match="loopback address"):
        blobstore.validate("http://localhost:9000", "sidecar-buildpack", target="cf")


def test_validate_requires_credentials_for_a_real_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    with pytest.raises(blobstore.BlobStoreError) as info:
        blobstore.validate("aws", "my-bucket", "eu-west-1")
    assert "environment variable(s) AWS_ACCESS_KEY_ID " in str(info.value)
    assert "never in notebook parameters" in str(info.value)


def test_validate_reports_an_unknown_host_and_a_closed_port(aws_env: None) -> None:
    with pytest.raises(blobstore.BlobStoreError, match=r"the host 'no-such-host\.invalid' is unknown"):
        blobstore.validate("http://no-such-host.invalid:9000", "b-1")
    port = free_port()
    with pytest.raises(blobstore.BlobStoreError, match=f"nothing answers at 127.0.0.1:{port}"):
        blobstore.validate(f"http://127.0.0.1:{port}", "b-1")


def test_validate_reports_a_missing_bucket_on_a_real_endpoint(remote_s3: str, aws_env: None) -> None:
    with pytest.raises(blobstore.BlobStoreError) as info:
        blobstore.validate(remote_s3, "no-such-bucket")
    assert "s3_bucket 'no-such-bucket' does not exist" in str(info.value)
    assert "aws s3 mb s3://no-such-bucket" in str(info.value)
