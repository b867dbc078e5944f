"""Part 4: packaging the sidecar buildpack cached vs uncached, and staging the sample app air-gapped with
the cached zip vs online with the uncached one (`localcf push --no-start`: upload, stage, droplet).

The config-server dependency is served by an HTTP server on 127.0.0.1; the Go build of the sidecar is
done once beforehand and is not part of any figure (the Go build of bin/supply is part of packaging).
Median of 3 runs each. Run: .venv/bin/python benchmarks/packaging.py
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml
from common import Platform, median, record

from sidecarlab import packager, sidecar, tutorial

RUNS = 3
STACK = "cflinuxfs4"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-packaging-"))
    served = tmp / "served"
    binary = sidecar.build(out=tmp / "config-server")
    archive = packager.dependency_archive(binary, served / f"config-server-v0.0.1-linux-{sidecar.host_goarch()}.tgz")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    work = packager.copy_buildpack(tmp / "buildpack")
    packager.record_upload(work, f"http://127.0.0.1:{httpd.server_address[1]}/{archive.name}",
                           hashlib.sha256(archive.read_bytes()).hexdigest(), "0.0.1", log=None)
    try:
        def package(cached: bool, cache: Path) -> Path:
            return packager.package(work, cached=cached, stack=STACK, cache_dir=cache, out_dir=tmp / "zips",
                                    log=None).path

        package(False, tmp / "warm")  # warm-up: Go's build cache for bin/supply
        uncached = [timed(lambda: package(False, tmp / "unused")) for _ in range(RUNS)]
        cached_cold = [timed(lambda i=i: package(True, tmp / f"cold-{i}")) for i in range(RUNS)]
        cached_warm = [timed(lambda: package(True, tmp / "warm")) for _ in range(RUNS)]
        uncached_zip, cached_zip = package(False, tmp / "warm"), package(True, tmp / "warm")
        sizes = {"uncached": uncached_zip.stat().st_size, "cached": cached_zip.stat().st_size}

        app = tmp / "app"
        manifest_path = tutorial.copy_fixture_app(app, "bench-p4")

        def stage(cf: Platform, zip_path: Path) -> list[float]:
            cf("create-buildpack", "config-server-buildpack", str(zip_path), "1")
            manifest = yaml.safe_load(manifest_path.read_text())
            manifest["applications"][0]["buildpacks"] = ["config-server-buildpack", "python_buildpack"]
            manifest["applications"][0].pop("sidecars", None)
            manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
            cf("push", "--no-start", "-f", str(manifest_path), "-p", str(app))  # warm-up
            return [cf.timed("push", "--no-start", "-f", str(manifest_path), "-p", str(app)) for _ in range(RUNS)]

        with Platform() as cf:
            cf("start")
            cf("unbind-staging-security-group", "public_networks")  # air-gapped, as an operator does it
            air_gapped = stage(cf, cached_zip)
        with Platform() as cf:
            cf("start")
            online = stage(cf, uncached_zip)
    finally:
        httpd.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    def figure(values: list[float]) -> dict:
        return {"median": median(values), "all": [round(v, 3) for v in values]}

    record("packaging", {
        "runs": RUNS,
        "zip_bytes": sizes,
        "package_uncached_s": figure(uncached),
        "package_cached_download_s": figure(cached_cold),
        "package_cached_from_cache_s": figure(cached_warm),
        "stage_cached_air_gapped_s": figure(air_gapped),
        "stage_uncached_online_s": figure(online),
    })


if __name__ == "__main__":
    main()
