"""The state dir: where localcf keeps its records, blobs, token and daemon files."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path


def state_dir() -> Path:
    """`$LOCALCF_HOME`, else `$XDG_DATA_HOME/localcf`, else `~/.local/share/localcf`."""
    env = os.environ.get("LOCALCF_HOME")
    if env:
        return Path(env).expanduser().resolve()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return (Path(data) / "localcf").resolve()


class StateDir:
    """Named files and folders inside one state dir."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else state_dir()

    def ensure(self) -> StateDir:
        for d in (self.root, self.blobs, self.packages, self.droplets, self.buildpacks,
                  self.caches, self.staging, self.containers, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        return self

    @property
    def db(self) -> Path:
        return self.root / "localcf.db"

    @property
    def token_file(self) -> Path:
        return self.root / "token"

    @property
    def pid_file(self) -> Path:
        return self.root / "daemon.pid"

    @property
    def endpoint_file(self) -> Path:
        """JSON with the API and router ports of the running daemon."""
        return self.root / "daemon.json"

    @property
    def lock_file(self) -> Path:
        """Held (flock) by the running daemon for its whole life: one daemon per state dir."""
        return self.root / "daemon.lock"

    @property
    def start_lock(self) -> Path:
        """Held (flock) by a starter while it starts the daemon: starters take turns."""
        return self.root / "start.lock"

    @property
    def daemon_log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def packages(self) -> Path:
        return self.blobs / "packages"

    @property
    def droplets(self) -> Path:
        return self.blobs / "droplets"

    @property
    def buildpacks(self) -> Path:
        return self.blobs / "buildpacks"

    @property
    def caches(self) -> Path:
        """Build artifacts caches, one folder per app, kept between stagings."""
        return self.blobs / "caches"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def containers(self) -> Path:
        return self.root / "containers"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def token(self) -> str:
        """The API's bearer token, created on first use with mode 0600.

        Safe when many processes ask at once: the token is written whole to a private file, then
        linked into place; whoever links first wins and everybody reads that one."""
        self.ensure()
        path = self.token_file
        if not path.exists():
            fd, tmp = tempfile.mkstemp(prefix=".token-", dir=self.root)
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_urlsafe(32))
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    pass
            finally:
                os.unlink(tmp)
        os.chmod(path, 0o600)
        token = path.read_text().strip()
        if not token:
            raise OSError(f"the token file {path} is empty: remove it, and localcf makes a new one")
        return token
