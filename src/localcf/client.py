"""The client of localcf's API: what the `localcf` command and the kit use to talk to the daemon."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import requests

from . import daemon
from .jsondoc import JsonObject
from .paths import StateDir


class ClientError(Exception):
    """An API error, carrying CAPI's error title and detail as the cf CLI prints them."""

    def __init__(self, status: int, title: str, detail: str, code: int = 0):
        super().__init__(detail)
        self.status, self.title, self.detail, self.code = status, title, detail, code


class Client:
    """Talks to the daemon of one state dir, starting it when `autostart` (the default)."""

    def __init__(self, state: StateDir | None = None, autostart: bool = True):
        self.state = state or StateDir()
        self.autostart = autostart
        self._session = requests.Session()
        self._endpoint: JsonObject | None = None

    @property
    def endpoint(self) -> JsonObject:
        if self._endpoint is None:
            if self.autostart:
                self._endpoint = daemon.start(self.state)
            else:
                ep = daemon.is_running(self.state)
                if not ep:
                    raise ClientError(0, "NotRunning", "localcf is not running: run `localcf start`")
                self._endpoint = ep
            self._session.headers["Authorization"] = f"bearer {self.state.token()}"
        return self._endpoint

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.endpoint['api_port']}"

    @property
    def router_port(self) -> int | None:
        return self.endpoint.get("router_port")

    def request(self, method: str, path: str, *, json_body: Any = None, data: bytes | str | None = None,
                params: JsonObject | None = None, headers: dict[str, str] | None = None,
                raw: bool = False, timeout: float = 60) -> Any:
        url = self.base_url + path
        try:
            r = self._session.request(method, url, json=json_body, data=data, params=params,
                                      headers=headers, timeout=timeout)
        except requests.ConnectionError:
            # the daemon died (or was restarted) since we looked: find or start it once more
            self._endpoint = None
            r = self._session.request(method, self.base_url + path, json=json_body, data=data,
                                      params=params, headers=headers, timeout=timeout)
        if r.status_code >= 400:
            try:
                err = r.json()["errors"][0]
                raise ClientError(r.status_code, err.get("title", ""), err.get("detail", ""), err.get("code", 0))
            except (ValueError, KeyError, IndexError):
                raise ClientError(r.status_code, "HTTPError", r.text.strip() or r.reason) from None
        if raw:
            return r.content
        return r.json() if r.content else {}

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json_body=body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("PATCH", path, json_body=body, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    # ------------------------------------------------------------------------------ lookups

    def app(self, name: str) -> JsonObject | None:
        found = self.get("/v3/apps", params={"names": name})["resources"]
        return found[0] if found else None

    def require_app(self, name: str) -> JsonObject:
        app = self.app(name)
        if not app:
            raise ClientError(404, "CF-ResourceNotFound", f"App '{name}' not found.")
        return app

    def buildpack(self, name: str) -> JsonObject | None:
        found = self.get("/v3/buildpacks", params={"names": name})["resources"]
        return found[0] if found else None

    def recent_logs(self, app_guid: str) -> list[JsonObject]:
        return self.get(f"/localcf/v1/apps/{app_guid}/logs")["envelopes"]

    def stream_lines(self, path: str, timeout: float = 30) -> Iterator[JsonObject]:
        """The JSON lines of a streamed answer (heartbeat blank lines skipped)."""
        r = self._session.get(f"{self.base_url}{path}", stream=True, timeout=timeout)
        if r.status_code >= 400:
            raise ClientError(r.status_code, "HTTPError", r.text)
        try:
            for line in r.iter_lines(chunk_size=None):
                if line.strip():
                    yield json.loads(line)
        finally:
            r.close()

    def stream_logs(self, app_guid: str, timeout: float | None = None) -> Iterator[JsonObject | None]:
        """Live envelopes of an app; yields None on heartbeats (about once a second)."""
        r = self._session.get(f"{self.base_url}/localcf/v1/apps/{app_guid}/logs/stream", stream=True,
                              timeout=timeout or 30)
        if r.status_code >= 400:
            raise ClientError(r.status_code, "HTTPError", r.text)
        try:
            for line in r.iter_lines(chunk_size=1):
                yield json.loads(line) if line.strip() else None
        finally:
            r.close()
