"""The packager of Part 4 (`sidecarlab buildpack package`), run as the real command: zip names, file
lists, zipped manifests and success lines for cached/uncached and --stack/--any-stack, every packager
error with buildpack-packager's text, the upload step that records uri and sha256 in a work copy, and
the Go tests of bin/supply. The dependency is served by a local HTTP server that counts its requests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ROOT
from test_blobstore import wait_until_gone

from sidecarlab import blobstore, packager, sidecar

VERSION = "0.0.1"


@dataclass
class DependencyServer:
    """An HTTP server on 127.0.0.1 serving files from a directory; `requests` lists the paths asked for."""

    directory: Path
    httpd: ThreadingHTTPServer | None = None
    requests: list[str] = field(default_factory=list)

    def url(self, name: str) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def start(self) -> DependencyServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                path = server.directory / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sidecar.build(out=tmp_path_factory.mktemp("sidecar") / "config-server")


@pytest.fixture(scope="module")
def archive_name() -> str:
    return f"config-server-v{VERSION}-linux-{sidecar.host_goarch()}.tgz"


@pytest.fixture(scope="module")
def dep_server(tmp_path_factory: pytest.TempPathFactory, binary: Path, archive_name: str) -> Iterator[DependencyServer]:
    directory = tmp_path_factory.mktemp("served")
    packager.dependency_archive(binary, directory / archive_name)
    # The same archive as the older stack's build, under another path (so stack filtering shows).
    packager.dependency_archive(binary, directory / "cflinuxfs3" / archive_name)
    server = DependencyServer(directory).start()
    yield server
    server.stop()


def make_work_copy(dest: Path, server: DependencyServer, archive_name: str) -> Path:
    """A work copy of buildpack/ whose dependency is the served archive (cflinuxfs4), plus a cflinuxfs3 entry."""
    work = packager.copy_buildpack(dest)
    sha = blobstore.sha256_of(server.directory / archive_name)
    packager.record_upload(work, server.url(archive_name), sha, VERSION, log=None)
    manifest = yaml.safe_load((work / "manifest.yml").read_text())
    manifest["dependencies"].append(dict(manifest["dependencies"][0], uri=server.url(f"cflinuxfs3/{archive_name}"),
                                         cf_stacks=["cflinuxfs3"]))
    (work / "manifest.yml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return work


@pytest.fixture
def work(tmp_path: Path, dep_server: DependencyServer, archive_name: str) -> Path:
    return make_work_copy(tmp_path / "buildpack", dep_server, archive_name)


def sidecarlab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "sidecarlab"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)


def zipped_manifest(zip_path: Path) -> dict:
    with zipfile.ZipFile(zip_path) as zf:
        return yaml.safe_load(zf.read("manifest.yml"))


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


# ------------------------------------------------------------------------------ the four zips

@pytest.mark.parametrize("cached", [False, True], ids=["uncached", "cached"])
@pytest.mark.parametrize("stack", ["cflinuxfs4", None], ids=["stack", "any-stack"])
def test_package_names_lays_out_and_reports_the_zip(work: Path, tmp_path: Path, dep_server: DependencyServer,
                                                    archive_name: str, cached: bool, stack: str | None) -> None:
    out = tmp_path / "out"
    args = ["buildpack", "package", "--cachedir", str(tmp_path / "cache"), "-o", str(out)]
    args += ["--cached"] if cached else []
    args += ["--stack", stack] if stack else ["--any-stack"]
    before = len(dep_server.requests)
    proc = sidecarlab(*args, cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    name = f"config-server_buildpack{'-cached' if cached else ''}{'-' + stack if stack else ''}-v{VERSION}.zip"
    zip_path = out / name
    assert sorted(p.name for p in out.iterdir()) == [name]
    size_mb = zip_path.stat().st_size // 1024 // 1024
    assert proc.stdout.splitlines()[-1] == (f"{'cached' if cached else 'uncached'} buildpack created and saved as "
                                            f"{zip_path} with a size of {size_mb}MB")

    uris = [dep_server.url(archive_name)] + ([] if stack else [dep_server.url(f"cflinuxfs3/{archive_name}")])
    deps = [f"dependencies/{md5(uri)}/{archive_name}" for uri in uris] if cached else []
    with zipfile.ZipFile(zip_path) as zf:
        assert sorted(zf.namelist()) == sorted(["README.md", "VERSION", "bin/detect", "bin/supply", "manifest.yml",
                                                *deps])
        supply = zf.getinfo("bin/supply")
        assert (supply.external_attr >> 16) & 0o111 == 0o111
        assert zf.read("bin/supply")[:4] == b"\x7fELF"  # compiled at packaging time, not the source's script
        assert zf.read("VERSION").decode() == VERSION
        for dep in deps:
            assert hashlib.sha256(zf.read(dep)).hexdigest() == blobstore.sha256_of(dep_server.directory / archive_name)

    manifest = zipped_manifest(zip_path)
    assert [d["uri"] for d in manifest["dependencies"]] == uris
    assert [d.get("file") for d in manifest["dependencies"]] == (deps if cached else [None] * len(uris))
    assert manifest.get("stack") == stack
    # Only a cached package downloads, once per kept dependency; the uncached one never touches the URL.
    assert len(dep_server.requests) - before == (len(uris) if cached else 0)


def test_package_version_flag_overrides_the_version_file(work: Path, tmp_path: Path) -> None:
    proc = sidecarlab("buildpack", "package", "--any-stack", "--version", "9.9.9", "-o", str(tmp_path), cwd=work)
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(tmp_path / "config-server_buildpack-v9.9.9.zip") as zf:
        assert zf.read("VERSION") == b"9.9.9"


def test_cached_package_uses_its_download_cache(work: Path, tmp_path: Path, dep_server: DependencyServer) -> None:
    args = ["buildpack", "package", "--cached", "--stack", "cflinuxfs4", "--cachedir", str(tmp_path / "cache"),
            "-o", str(tmp_path / "out")]
    before = len(dep_server.requests)
    assert sidecarlab(*args, cwd=work).returncode == 0
    assert sidecarlab(*args, cwd=work).returncode == 0
    assert len(dep_server.requests) - before == 1


# ------------------------------------------------------------------------------------ errors

def assert_fails(proc: subprocess.CompletedProcess[str], text: str, out: Path | None = None) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == text
    if out is not None:
        assert not out.exists() or not any(out.iterdir()), "a failed packaging left a file behind"


def test_stack_flags_are_required_and_exclusive(work: Path) -> None:
    assert_fails(sidecarlab("buildpack", "package", cwd=work), "error: must either specify a stack or pass -any-stack")
    assert_fails(sidecarlab("buildpack", "package", "--stack", "cflinuxfs4", "--any-stack", cwd=work),
                 "error: cannot specify a stack AND pass -any-stack")


def test_unknown_stack(work: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_fails(sidecarlab("buildpack", "package", "--stack", "windows", "-o", str(out), cwd=work),
                 "error while creating zipfile: Stack `windows` not found in manifest", out)


def test_no_matching_default_dependency(work: Path, tmp_path: Path) -> None:
    manifest = yaml.safe_load((work / "manifest.yml").read_text())
    manifest["dependencies"][1]["version"] = "0.0.2"  # 0.0.2 exists for cflinuxfs3 only
    manifest["default_versions"] = [{"name": "config-server", "version": "0.0.2"}]
    (work / "manifest.yml").write_text(yaml.safe_dump(manifest))
    out = tmp_path / "out"
    assert_fails(sidecarlab("buildpack", "package", "--stack", "cflinuxfs4", "-o", str(out), cwd=work),
                 "error while creating zipfile: No matching default dependency `config-server` for stack `cflinuxfs4`",
                 out)
    assert sidecarlab("buildpack", "package", "--stack", "cflinuxfs3", "-o", str(out), cwd=work).returncode == 0


def test_failed_download(work: Path, tmp_path: Path, dep_server: DependencyServer) -> None:
    missing = dep_server.url("config-server-v9.9.9.tgz")
    manifest = yaml.safe_load((work / "manifest.yml").read_text())
    manifest["dependencies"][0]["uri"] = missing
    (work / "manifest.yml").write_text(yaml.safe_dump(manifest))
    out = tmp_path / "out"
    assert_fails(sidecarlab("buildpack", "package", "--cached", "--stack", "cflinuxfs4", "--cachedir",
                            str(tmp_path / "cache"), "-o", str(out), cwd=work),
                 f"error while creating zipfile: could not download {missing}: 404", out)
    assert not list((tmp_path / "cache").rglob("*.tgz")), "a failed download left a file in the cache"


def test_checksum_mismatch(work: Path, tmp_path: Path, dep_server: DependencyServer, archive_name: str) -> None:
    wrong = "ab" * 32
    manifest = yaml.safe_load((work / "manifest.yml").read_text())
    manifest["dependencies"][0]["sha256"] = wrong
    (work / "manifest.yml").write_text(yaml.safe_dump(manifest))
    uri = dep_server.url(archive_name)
    actual = blobstore.sha256_of(dep_server.directory / archive_name)
    out = tmp_path / "out"
    assert_fails(sidecarlab("buildpack", "package", "--cached", "--stack", "cflinuxfs4", "--cachedir",
                            str(tmp_path / "cache"), "-o", str(out), cwd=work),
                 f"error while creating zipfile: {uri} (config-server {VERSION}): dependency sha256 mismatch: "
                 f"expected sha256 {wrong}, actual sha256 {actual}", out)
    assert not list((tmp_path / "cache").rglob("*.tgz")), "the bad file was kept in the cache"


def test_include_files_must_exist(work: Path, tmp_path: Path) -> None:
    (work / "README.md").unlink()
    proc = sidecarlab("buildpack", "package", "--any-stack", "-o", str(tmp_path / "out"), cwd=work)
    assert proc.returncode == 1 and "include_files names README.md, which is not a file" in proc.stderr


def test_committed_manifest_is_valid_and_has_placeholders(tmp_path: Path) -> None:
    manifest = packager.load_manifest(ROOT / "buildpack")
    (dep,) = manifest["dependencies"]
    assert manifest["language"] == "config-server" and dep["cf_stacks"] == ["cflinuxfs4"]
    assert dep["sha256"] == packager.PLACEHOLDER_SHA256 and dep["uri"].endswith(".tgz")
    assert manifest["default_versions"] == [{"name": "config-server", "version": (ROOT / "buildpack" / "VERSION")
                                             .read_text().strip()}]
    proc = sidecarlab("buildpack", "package", "--any-stack", "-o", str(tmp_path), cwd=ROOT / "buildpack")
    assert proc.returncode == 0 and "still has the placeholder uri/sha256" in proc.stdout


# --------------------------------------------------------------------------- the upload step

def test_dependency_archive_holds_bin_config_server(binary: Path, tmp_path: Path) -> None:
    first = packager.dependency_archive(binary, tmp_path / "a.tgz")
    again = packager.dependency_archive(binary, tmp_path / "b.tgz")
    assert first.read_bytes() == again.read_bytes(), "the same binary must give the same sha256"
    with tarfile.open(first) as tar:
        member = tar.getmember("bin/config-server")
        assert member.mode == 0o755
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == binary.read_bytes()
    assert packager.elf_goarch(binary) == sidecar.host_goarch()


def test_upload_records_uri_and_sha256_in_the_work_copy_only(binary: Path, tmp_path: Path,
                                                             archive_name: str) -> None:
    state = tmp_path / "blobstore"
    blobstore.start(state)
    committed = (ROOT / "buildpack" / "manifest.yml").read_bytes()
    try:
        work = packager.copy_buildpack(tmp_path / "work")
        proc = sidecarlab("sidecar", "upload", "--version", VERSION, "--binary", str(binary), "--buildpack",
                          str(work), "--state-dir", str(state), cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        url = proc.stdout.strip().splitlines()[-1]
        assert url.endswith(f"/config-server-sidecar/{archive_name}")
        (dep,) = packager.load_manifest(work)["dependencies"]
        assert dep["uri"] == url and dep["version"] == VERSION
        # What the store serves is what the manifest promises.
        import urllib.request
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url) as response:
            assert hashlib.sha256(response.read()).hexdigest() == dep["sha256"]
        assert not (work / ".downloadurl").exists()

        refused = sidecarlab("sidecar", "upload", "--version", VERSION, "--binary", str(binary), "--buildpack",
                             str(ROOT / "buildpack"), "--state-dir", str(state), cwd=tmp_path)
        assert refused.returncode == 1 and "is the repository's committed buildpack" in refused.stderr
        assert (ROOT / "buildpack" / "manifest.yml").read_bytes() == committed
    finally:
        blobstore.stop(state)
        assert wait_until_gone(state) == []


def test_summary_lists_dependencies(work: Path) -> None:
    proc = sidecarlab("buildpack", "summary", cwd=work)
    assert proc.returncode == 0
    assert f"| config-server | {VERSION} | cflinuxfs4 |" in proc.stdout
    assert f"| config-server | {VERSION} | cflinuxfs3 |" in proc.stdout
    assert f"| config-server | {VERSION} |\n" in proc.stdout


def test_supply_program_go_tests() -> None:
    result = sidecar.go_test(ROOT / "buildpack" / "src" / "supply")
    assert result.returncode == 0, result.stdout
    assert "ok" in result.stdout


def test_record_upload_refuses_a_manifest_without_the_dependency(work: Path) -> None:
    manifest = yaml.safe_load((work / "manifest.yml").read_text())
    manifest["dependencies"] = []
    (work / "manifest.yml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(packager.PackagerError, match="has no dependency named config-server"):
        packager.record_upload(work, "http://x/y.tgz", "a" * 64, VERSION, log=None)


def test_record_upload_updates_the_default_entry_and_keeps_the_others(work: Path) -> None:
    before = packager.load_manifest(work)["dependencies"]
    packager.record_upload(work, "http://store.example/config-server-v0.0.2.tgz", "c" * 64, "0.0.2", log=None)
    manifest = packager.load_manifest(work)
    assert manifest["default_versions"] == [{"name": "config-server", "version": "0.0.2"}]
    first, second = manifest["dependencies"]
    assert (first["version"], first["uri"], first["sha256"]) == ("0.0.2", "http://store.example/config-server-v0.0.2.tgz",
                                                                 "c" * 64)
    assert first["cf_stacks"] == ["cflinuxfs4"] and second == before[1]


def test_copy_command_makes_a_work_copy_without_zips(tmp_path: Path) -> None:
    dest = tmp_path / "work" / "buildpack"
    proc = sidecarlab("buildpack", "copy", str(dest), cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"copied the buildpack to {dest}"
    assert (dest / "manifest.yml").read_bytes() == (ROOT / "buildpack" / "manifest.yml").read_bytes()
    assert os.access(dest / "bin" / "detect", os.X_OK) and not list(dest.glob("*.zip"))
    refused = sidecarlab("buildpack", "copy", str(ROOT / "buildpack"), cwd=tmp_path)
    assert refused.returncode == 1 and "is the buildpack itself" in refused.stderr
    assert (ROOT / "buildpack" / "manifest.yml").is_file()
