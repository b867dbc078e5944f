"""The API's HTTP layer and field validation against a real daemon: raw sockets for what a client
library would never send, the real `localcf` command for what a learner types."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import stat
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import LocalCF

WAIT = 20.0  # a bound on waiting for an answer, never a timing claim


def endpoint(cf: LocalCF) -> tuple[int, str, int]:
    """(API port, token, daemon pid) of a running daemon."""
    ep = json.loads((cf.home / "daemon.json").read_text())
    return ep["api_port"], (cf.home / "token").read_text().strip(), ep["pid"]


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT)


def raw_request(port: int, head: str, body: bytes = b"", close_wait: float = 2.0
                ) -> tuple[int, dict[str, str], bytes, bool]:
    with connect(port) as s:
        s.sendall(head.encode("latin-1") + body)
        s.settimeout(WAIT)
        return _read_then_probe(s, close_wait)


def _read_then_probe(s: socket.socket, close_wait: float) -> tuple[int, dict[str, str], bytes, bool]:
    s.settimeout(WAIT)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a full answer head: {data!r}")
        data += chunk
    s.settimeout(close_wait)
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    s.settimeout(WAIT)
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    s.settimeout(close_wait)
    try:
        closed = s.recv(1) == b""
    except TimeoutError:
        closed = False
    return status, headers, rest[:length], closed


def error_of(body: bytes) -> dict:
    return json.loads(body)["errors"][0]


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def wait_threads_at_most(pid: int, limit: int) -> int:
    deadline = time.monotonic() + WAIT
    n = threads(pid)
    while n > limit and time.monotonic() < deadline:
        time.sleep(0.1)
        n = threads(pid)
    return n


@pytest.fixture(scope="module")
def short_timeout_cf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCF]:
    """A daemon of its own whose API waits only 2 s on a silent connection."""
    cf = LocalCF(tmp_path_factory.mktemp("localcf-short-timeout"))
    cf.env["LOCALCF_API_READ_TIMEOUT"] = "2"
    cf("start")
    yield cf
    cf("stop", check=False)


def api(cf: LocalCF, method: str, path: str, **kw) -> requests.Response:
    port, token, _ = endpoint(cf)
    headers = {"Authorization": f"bearer {token}", **kw.pop("headers", {})}
    return requests.request(method, f"http://127.0.0.1:{port}{path}", headers=headers, timeout=WAIT, **kw)


def app_names(cf: LocalCF) -> list[str]:
    return [a["name"] for a in api(cf, "GET", "/v3/apps").json()["resources"]]


# ------------------------------------------------------------------------- token before body

def test_unauthenticated_big_body_gets_401_before_the_body_is_read(localcf: LocalCF) -> None:
    # the session daemon waits 30 s on silent connections: an answer without our sending the body
    # means the token was checked first
    port, _, _ = endpoint(localcf)
    socks = []
    try:
        for _ in range(50):
            s = connect(port)
            s.sendall(b"POST /v3/apps HTTP/1.1\r\nHost: localcf\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 50000000\r\n\r\n")
            socks.append(s)
        for s in socks:
            status, headers, body, closed = _read_then_probe(s, close_wait=WAIT)
            assert status == 401
            assert error_of(body) == {"code": 10002, "title": "CF-NotAuthenticated", "detail": "Authentication error"}
            assert headers.get("connection") == "close"
            assert closed, "the server must close a connection whose body it did not read"
    finally:
        for s in socks:
            s.close()


def test_wrong_token_gets_401_before_the_body_is_read(localcf: LocalCF) -> None:
    port, _, _ = endpoint(localcf)
    status, headers, body, closed = raw_request(
        port, "POST /v3/packages/x/upload HTTP/1.1\r\nHost: localcf\r\nAuthorization: bearer nope\r\n"
              "Content-Length: 200000000\r\n\r\n", close_wait=WAIT)
    assert status == 401 and error_of(body)["title"] == "CF-InvalidAuthToken"
    assert headers.get("connection") == "close" and closed


def test_silent_connections_do_not_hold_threads_past_the_read_timeout(short_timeout_cf: LocalCF) -> None:
    port, token, pid = endpoint(short_timeout_cf)
    baseline = threads(pid)
    socks = []
    try:
        for _ in range(40):
            s = connect(port)
            # authenticated, announces 50 MB, sends 10 bytes, then goes silent
            s.sendall(f"POST /v3/apps HTTP/1.1\r\nHost: localcf\r\nAuthorization: bearer {token}\r\n"
                      f"Content-Length: 500000\r\n\r\n0123456789".encode())
            socks.append(s)
        for s in socks:
            status, headers, body, closed = _read_then_probe(s, close_wait=WAIT)
            assert status == 408, body
            assert error_of(body)["detail"] == "The request body stopped arriving: nothing for 2s"
            assert headers.get("connection") == "close" and closed
    finally:
        for s in socks:
            s.close()
    assert wait_threads_at_most(pid, baseline + 2) <= baseline + 2
    assert api(short_timeout_cf, "GET", "/v3/info").status_code == 200


def test_a_trickling_body_is_cut_off(short_timeout_cf: LocalCF) -> None:
    # a byte every 0.3 s never trips the 2 s read timeout, but is far below the minimum pace
    port, token, _ = endpoint(short_timeout_cf)
    stop = threading.Event()
    with connect(port) as s:
        s.sendall(f"POST /v3/apps HTTP/1.1\r\nHost: localcf\r\nAuthorization: bearer {token}\r\n"
                  f"Content-Length: 1000\r\n\r\n".encode())

        def trickle() -> None:
            try:
                while not stop.wait(0.3):
                    s.sendall(b" ")
            except OSError:
                pass
        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        try:
            status, headers, body, closed = _read_then_probe(s, close_wait=WAIT)
        finally:
            stop.set()
            sender.join()
    assert status == 408
    assert re.fullmatch(r"The request body arrived too slowly: \d+ bytes in \d+s \(at least 64 KiB a second "
                        r"is expected\)", error_of(body)["detail"]), body
    assert headers.get("connection") == "close" and closed


def test_a_trickling_head_is_cut_off(short_timeout_cf: LocalCF) -> None:
    # header bytes every 0.3 s never trip the 2 s read timeout; the head's deadline does
    port, token, _ = endpoint(short_timeout_cf)
    stop = threading.Event()
    with connect(port) as s:
        s.sendall(f"GET /v3/info HTTP/1.1\r\nHost: localcf\r\nAuthorization: bearer {token}\r\nX-Slow: ".encode())

        def trickle() -> None:
            try:
                while not stop.wait(0.3):
                    s.sendall(b"a")
            except OSError:
                pass
        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        try:
            s.settimeout(WAIT)
            try:
                got = s.recv(65536)
            except ConnectionResetError:
                got = b""
        finally:
            stop.set()
            sender.join()
    assert got == b"", f"expected the connection cut without an answer, got {got!r}"
    assert api(short_timeout_cf, "GET", "/v3/info").status_code == 200


def test_an_idle_keep_alive_connection_is_closed_after_the_read_timeout(short_timeout_cf: LocalCF) -> None:
    port, token, _ = endpoint(short_timeout_cf)
    with connect(port) as s:
        s.sendall(f"GET /v3/info HTTP/1.1\r\nHost: localcf\r\nAuthorization: bearer {token}\r\n\r\n".encode())
        status, _, _, closed = _read_then_probe(s, close_wait=0.2)
        assert status == 200 and not closed  # kept alive ...
        s.settimeout(WAIT)
        assert s.recv(1) == b""  # ... until it stays silent past the read timeout


# ----------------------------------------------------------------------------- body framing

@pytest.mark.parametrize("value", ["abc", "-1", "1e3", "12 34"])
def test_bad_content_length_is_400_and_the_daemon_keeps_serving(localcf: LocalCF, value: str) -> None:
    port, token, _ = endpoint(localcf)
    log_before = (localcf.home / "daemon.log").read_text()
    status, headers, body, closed = raw_request(
        port, f"POST /v3/apps HTTP/1.1\r\nHost: localcf\r\nAuthorization: bearer {token}\r\n"
              f"Content-Length: {value}\r\n\r\n", close_wait=WAIT)
    assert status == 400
    assert error_of(body) == {"code": 1001, "title": "CF-MessageParseError",
                              "detail": f"Request invalid: Content-Length {value!r} is not a non-negative "
                                        "integer of bytes"}
    assert headers.get("connection") == "close" and closed
    assert api(localcf, "GET", "/v3/info").status_code == 200
    assert "Traceback" not in (localcf.home / "daemon.log").read_text()[len(log_before):]


def test_content_length_and_transfer_encoding_together_are_refused(localcf: LocalCF) -> None:
    port, token, _ = endpoint(localcf)
    status, _, body, closed = raw_request(
        port, f"POST /v3/apps HTTP/1.1\r\nHost: localcf\r\nAuthorization: bearer {token}\r\n"
              "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", close_wait=WAIT)
    assert status == 400 and "both Content-Length and Transfer-Encoding" in error_of(body)["detail"]
    assert closed


def test_a_transfer_encoding_other_than_chunked_is_411(localcf: LocalCF) -> None:
    port, token, _ = endpoint(localcf)
    status, _, body, closed = raw_request(
        port, f"POST /v3/apps HTTP/1.1\r\nHost: localcf\r\nAuthorization: bearer {token}\r\n"
              "Transfer-Encoding: gzip, chunked\r\n\r\n", close_wait=WAIT)
    assert status == 411
    assert error_of(body)["detail"] == ("Transfer-Encoding gzip, chunked is not supported: send the body with a "
                                        "Content-Length or as Transfer-Encoding: chunked")
    assert closed


def make_zip(entries: dict[str, tuple[str, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, (content, mode) in entries.items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = mode << 16
            zf.writestr(info, content)
    return buf.getvalue()


FILE, EXEC, LINK = stat.S_IFREG | 0o644, stat.S_IFREG | 0o755, stat.S_IFLNK | 0o777


def test_a_chunked_package_upload_is_read_whole(localcf: LocalCF) -> None:
    app = api(localcf, "POST", "/v3/apps", json={"name": "chunked-upload"}).json()
    pkg = api(localcf, "POST", "/v3/packages",
              json={"type": "bits", "relationships": {"app": {"data": {"guid": app["guid"]}}}}).json()
    data = make_zip({"app.py": ("print('hi')\n" * 5000, FILE), "Procfile": ("web: python app.py\n", FILE)})

    def pieces() -> Iterator[bytes]:  # a generator body: requests sends it chunked
        for i in range(0, len(data), 1000):
            yield data[i:i + 1000]

    r = api(localcf, "POST", f"/v3/packages/{pkg['guid']}/upload", data=pieces(),
            headers={"Content-Type": "application/zip"})
    assert r.status_code == 200, r.text
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.json()["state"] == "READY"
    stored = localcf.home / "blobs" / "packages" / f"{app['guid']}-{pkg['guid']}.zip"
    assert stored.read_bytes() == data
    api(localcf, "DELETE", f"/v3/apps/{app['guid']}")


def test_a_chunked_json_body_is_read(localcf: LocalCF) -> None:
    port, token, _ = endpoint(localcf)
    body = json.dumps({"name": "chunked-json"}).encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 5]), body[i:i + 5]) for i in range(0, len(body), 5))
    status, _, answer, _ = raw_request(
        port, f"POST /v3/apps HTTP/1.1\r\nHost: localcf\r\nAuthorization: bearer {token}\r\n"
              "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n",
        chunked + b"0\r\n\r\n")
    assert status == 201, answer
    assert json.loads(answer)["name"] == "chunked-json"
    api(localcf, "DELETE", f"/v3/apps/{json.loads(answer)['guid']}")


def test_a_json_body_over_1_mib_is_413(localcf: LocalCF) -> None:
    r = api(localcf, "POST", "/v3/apps", data=b"{" + b" " * (1 << 20) + b"}",
            headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["errors"][0]["detail"] == ("The request body is too large: 1048578 bytes, but POST /v3/apps "
                                               "accepts at most 1 MiB")


def test_an_upload_announced_over_1_gib_is_413_before_it_is_sent(localcf: LocalCF) -> None:
    port, token, _ = endpoint(localcf)
    status, _, body, closed = raw_request(
        port, f"POST /v3/packages/any/upload HTTP/1.1\r\nHost: localcf\r\nAuthorization: bearer {token}\r\n"
              f"Content-Length: {(1 << 30) + 1}\r\n\r\n", close_wait=WAIT)
    assert status == 413
    assert error_of(body)["detail"] == (f"The request body is too large: {(1 << 30) + 1} bytes, but POST "
                                        "/v3/packages/any/upload accepts at most 1 GiB")
    assert closed


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("body, detail", [
    ({"name": 5}, "Name must be a string"),
    ({}, "Name must be a string"),
    ({"name": "n" * 256}, "Name is too long (maximum is 255 characters)"),
    ({"name": "ok-name", "environment_variables": "A=1"}, "Environment variables must be an object"),
    ({"name": "ok-name", "environment_variables": {"VCAP_X": "1"}}, "Environment variables cannot start with VCAP_"),
    ({"name": "ok-name", "environment_variables": {"N": 5}},
     "Non-string value in environment variable for key 'N', value '5'"),
    ({"name": 5, "environment_variables": []}, "Name must be a string, Environment variables must be an object"),
    ({"name": "ok-name", "lifecycle": {"type": "buildpack", "data": {"buildpacks": "python_buildpack"}}},
     "Lifecycle Buildpacks must be an array"),
])
def test_create_app_validation_texts_and_nothing_created(localcf: LocalCF, body: dict, detail: str) -> None:
    before = app_names(localcf)
    r = api(localcf, "POST", "/v3/apps", json=body)
    assert r.status_code == 422
    assert r.json() == {"errors": [{"code": 10008, "title": "CF-UnprocessableEntity", "detail": detail}]}
    assert app_names(localcf) == before


def test_update_validation_leaves_the_app_as_it_was(localcf: LocalCF) -> None:
    app = api(localcf, "POST", "/v3/apps", json={"name": "valid-update", "environment_variables": {"A": "1"}}).json()
    try:
        r = api(localcf, "PATCH", f"/v3/apps/{app['guid']}", json={"name": ["x"]})
        assert (r.status_code, r.json()["errors"][0]["detail"]) == (422, "Name must be a string")
        r = api(localcf, "PATCH", f"/v3/apps/{app['guid']}/environment_variables", json={"var": "A=2"})
        assert (r.status_code, r.json()["errors"][0]["detail"]) == (422, "Var must be an object")
        r = api(localcf, "PATCH", f"/v3/apps/{app['guid']}/environment_variables", json={"var": {"A": {"b": 1}}})
        assert r.status_code == 422
        assert r.json()["errors"][0]["detail"] == "Non-string value in environment variable for key 'A', value '{'b': 1}'"
        got = api(localcf, "GET", f"/v3/apps/{app['guid']}/environment_variables").json()["var"]
        assert got == {"A": "1"}
        assert api(localcf, "GET", f"/v3/apps/{app['guid']}").json()["name"] == "valid-update"
        web = api(localcf, "GET", f"/v3/apps/{app['guid']}/processes/web").json()
        r = api(localcf, "PATCH", f"/v3/processes/{web['guid']}", json={"health_check": {"type": "tcp"}})
        assert (r.status_code, r.json()["errors"][0]["detail"]) == (
            422, 'Health check type must be "port", "process", or "http"')
        r = api(localcf, "POST", f"/v3/apps/{app['guid']}/sidecars", json={"name": "s", "command": 7})
        assert (r.status_code, r.json()["errors"][0]["detail"]) == (
            422, "Command must be a string, Process types must have at least 1 process_type")
        assert api(localcf, "GET", f"/v3/apps/{app['guid']}/sidecars").json()["resources"] == []
    finally:
        api(localcf, "DELETE", f"/v3/apps/{app['guid']}")


def test_create_app_command_with_a_too_long_name(localcf: LocalCF) -> None:
    res = localcf("create-app", "a" * 300, check=False)
    assert res.code == 1
    assert "Name is too long (maximum is 255 characters)" in res.text
    assert "a" * 300 not in app_names(localcf)


def test_manifest_route_host_rules(localcf: LocalCF, tmp_path: Path) -> None:
    long_host = "h" * 64
    (tmp_path / "manifest.yml").write_text(
        f"applications:\n- name: host-rules\n  routes:\n  - route: {long_host}.apps.localhost\n")
    res = localcf("apply-manifest", "-f", str(tmp_path / "manifest.yml"), check=False)
    assert res.code == 1
    assert "Host is too long (maximum is 63 characters)" in res.text
    assert "host-rules" not in app_names(localcf)
    # what the cf CLI would send: YAML, straight to the API
    r = api(localcf, "POST", "/v3/spaces/5bace5ba-0000-4000-8000-00000000c0de/actions/apply_manifest",
            data=b"applications:\n- name: host-rules\n  routes:\n  - route: b@d.apps.localhost\n",
            headers={"Content-Type": "application/x-yaml"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["detail"] == ('Host must be either "*" or contain only alphanumeric characters, '
                                              '"_", or "-"')
    assert "host-rules" not in app_names(localcf)
    # no routes: the default route comes from the app name, and Cloud Controller says so
    (tmp_path / "manifest.yml").write_text(f"applications:\n- name: {long_host}\n")
    res = localcf("apply-manifest", "-f", str(tmp_path / "manifest.yml"), check=False)
    assert res.code == 1 and ("Failed to create default route from app name: Host cannot exceed 63 characters"
                              in res.text), res.text
    assert long_host not in app_names(localcf)


def test_buildpack_field_validation(localcf: LocalCF) -> None:
    r = api(localcf, "POST", "/v3/buildpacks", json={"name": "typed-bp", "position": "first", "enabled": "yes"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["detail"] == "Position must be an integer, Enabled must be a boolean"
    assert api(localcf, "GET", "/v3/buildpacks?names=typed-bp").json()["resources"] == []


# --------------------------------------------------------------------------- buildpack zips

ESCAPING = {
    "dot-dot": ({"bin/detect": ("#!/bin/sh\n", EXEC), "../escaped": ("x", FILE)},
                "entry '../escaped' climbs out of the buildpack with '..'"),
    "absolute": ({"bin/detect": ("#!/bin/sh\n", EXEC), "/tmp/escaped": ("x", FILE)},
                 "entry '/tmp/escaped' has an absolute path"),
    "symlink": ({"bin/detect": ("#!/bin/sh\n", EXEC), "bin/out": ("../../../etc", LINK)},
                "entry 'bin/out' is a symlink to '../../../etc', outside the buildpack"),
    "no-bin": ({"README": ("hello", FILE)}, "malformed buildpack does not contain a /bin dir"),
}


@pytest.mark.parametrize("case", sorted(ESCAPING))
def test_create_buildpack_refuses_an_escaping_zip_and_stores_nothing(localcf: LocalCF, tmp_path: Path,
                                                                      case: str) -> None:
    entries, why = ESCAPING[case]
    z = tmp_path / f"{case}.zip"
    z.write_bytes(make_zip(entries))
    name = f"escape_{case.replace('-', '_')}"
    blobs_before = sorted(p.name for p in (localcf.home / "blobs" / "buildpacks").iterdir())
    res = localcf("create-buildpack", name, str(z), "1", check=False)
    try:
        assert res.code == 1, res.text
        assert "The buildpack upload is invalid:" in res.err and why in res.err
        assert api(localcf, "GET", f"/v3/buildpacks?names={name}").json()["resources"] == []
        assert sorted(p.name for p in (localcf.home / "blobs" / "buildpacks").iterdir()) == blobs_before
    finally:
        localcf("delete-buildpack", name, "-f", check=False)


@pytest.mark.parametrize("case", sorted(ESCAPING))
def test_the_upload_endpoint_refuses_an_escaping_zip(localcf: LocalCF, case: str) -> None:
    entries, why = ESCAPING[case]
    bp = api(localcf, "POST", "/v3/buildpacks", json={"name": f"raw_{case.replace('-', '_')}"}).json()
    try:
        r = api(localcf, "POST", f"/v3/buildpacks/{bp['guid']}/upload", data=make_zip(entries),
                headers={"Content-Type": "application/zip", "X-Filename": "bad.zip"})
        assert r.status_code == 422
        detail = r.json()["errors"][0]["detail"]
        assert detail.startswith("The buildpack upload is invalid: ") and why in detail
        assert not (localcf.home / "blobs" / "buildpacks" / f"{bp['guid']}.zip").exists()
        got = api(localcf, "GET", f"/v3/buildpacks/{bp['guid']}").json()
        assert (got["state"], got["filename"]) == ("AWAITING_UPLOAD", None)
    finally:
        api(localcf, "DELETE", f"/v3/buildpacks/{bp['guid']}")


def test_update_buildpack_with_an_escaping_zip_keeps_the_old_bits(localcf: LocalCF, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.zip", tmp_path / "bad.zip"
    good.write_bytes(make_zip({"bin/detect": ("#!/bin/sh\nexit 1\n", EXEC)}))
    bad.write_bytes(make_zip(ESCAPING["dot-dot"][0]))
    try:
        localcf("create-buildpack", "kept_bits_bp", str(good), "9")
        bp = api(localcf, "GET", "/v3/buildpacks?names=kept_bits_bp").json()["resources"][0]
        res = localcf("update-buildpack", "kept_bits_bp", "-p", str(bad), check=False)
        assert res.code == 1 and "climbs out of the buildpack with '..'" in res.err
        after = api(localcf, "GET", "/v3/buildpacks?names=kept_bits_bp").json()["resources"][0]
        assert (after["state"], after["filename"]) == ("READY", "good.zip")
        assert (localcf.home / "blobs" / "buildpacks" / f"{bp['guid']}.zip").read_bytes() == good.read_bytes()
    finally:
        localcf("delete-buildpack", "kept_bits_bp", "-f", check=False)


def test_a_good_buildpack_zip_is_accepted(localcf: LocalCF, tmp_path: Path) -> None:
    z = tmp_path / "good.zip"
    z.write_bytes(make_zip({"bin/detect": ("#!/bin/sh\nexit 1\n", EXEC), "bin/compile": ("#!/bin/sh\n", EXEC),
                            "bin/release": ("#!/bin/sh\n", EXEC), "lib/link": ("../bin/detect", LINK)}))
    try:
        localcf("create-buildpack", "good_zip_bp", str(z), "9")
        bp = api(localcf, "GET", "/v3/buildpacks?names=good_zip_bp").json()["resources"][0]
        assert bp["state"] == "READY" and bp["filename"] == "good.zip"
    finally:
        localcf("delete-buildpack", "good_zip_bp", "-f", check=False)
