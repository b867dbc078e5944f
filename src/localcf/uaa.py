"""A small UAA: the login of Cloud Foundry's own `cf` CLI against localcf.

One user, `admin`, whose password is generated on first use into the state dir (`uaa-password`,
mode 0600; `localcf status` shows it). Tokens are JWTs signed with HS256 by a key kept beside it
(`uaa-signing-key`, mode 0600), with the claims the cf CLI reads (`user_name`, `user_id`, `exp`)
and the ones UAA puts beside them (`jti`, `sub`, `scope`, `client_id`, `cid`, `grant_type`,
`origin`, `iat`, `iss`, `zid`, `aud`, `rev_sig`).

- `POST /oauth/token`: `grant_type=password` (`username`, `password`) and
  `grant_type=refresh_token`, client `cf` with an empty secret in Basic auth, as the cf CLI sends
  them. Answers and errors are UAA's: `{"error": "unauthorized", "error_description": "Bad
  credentials"}` (401) for a wrong password, `invalid_token` (401) for a refresh token that expired
  or was revoked.
- `GET /oauth/authorize?response_type=code&client_id=ssh-proxy` with a bearer token: a one-time
  code in the `Location` of a 302, what `cf ssh-code` prints and `cf ssh` sends as its password.
- `check(handler)`: the API's authentication hook. Public documents pass; a JWT we signed that has
  not expired passes; any other bearer value is left to the API's own token check.

Lifetimes: access tokens 1200 s and refresh tokens 30 days, as cf-deployment configures the `cf`
client; `LOCALCF_UAA_ACCESS_TOKEN_SECONDS` and `LOCALCF_UAA_REFRESH_TOKEN_SECONDS` change them.
Changing the password (delete the file and restart) revokes every token: `rev_sig` is derived from it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import string
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt

from .controller import USER_GUID, USER_NAME, ApiError
from .paths import StateDir

CLIENT_ID = "cf"
SSH_CLIENT_ID = "ssh-proxy"
ZONE = "uaa"
SCOPES = ["openid", "routing.router_groups.write", "scim.read", "cloud_controller.admin", "uaa.user",
          "routing.router_groups.read", "cloud_controller.read", "password.write", "cloud_controller.write",
          "network.admin", "doppler.firehose", "scim.write"]
AUDIENCE = ["scim", "cloud_controller", "password", "cf", "uaa", "openid", "doppler", "routing.router_groups",
            "network"]
CODE_SECONDS = 300
PASSWORD_FILE = "uaa-password"
KEY_FILE = "uaa-signing-key"
# the paths a client reaches before it holds a token (CC's root and info, UAA's login documents)
PUBLIC_PATHS = frozenset({"/", "/v3", "/v3/info", "/login", "/info", "/oauth/token"})


class UaaError(Exception):
    """An OAuth error as UAA answers it: `{"error", "error_description"}` with an HTTP status."""

    def __init__(self, status: int, error: str, description: str):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def _secret_file(path: Path, make: Any) -> str:
    """Read a secret file, creating it with mode 0600 on first use."""
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(make())
    os.chmod(path, 0o600)
    return path.read_text().strip()


def password(state: StateDir) -> str:
    """The `admin` user's password (created on first use, mode 0600)."""
    state.ensure()
    # letters and digits only: a password starting with "-" would read as a flag to `cf auth`
    alphabet = string.ascii_letters + string.digits
    return _secret_file(state.root / PASSWORD_FILE, lambda: "".join(secrets.choice(alphabet) for _ in range(24)))


def password_file(state: StateDir) -> Path:
    return state.root / PASSWORD_FILE


def _seconds(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number of seconds, not {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1 second, not {value}")
    return value


class Uaa:
    """Users, tokens and one-time codes of one state dir."""

    def __init__(self, state: StateDir):
        self.state = state
        self.key = _secret_file(state.root / KEY_FILE, lambda: secrets.token_hex(32)).encode()
        self.access_seconds = _seconds("LOCALCF_UAA_ACCESS_TOKEN_SECONDS", 1200)
        self.refresh_seconds = _seconds("LOCALCF_UAA_REFRESH_TOKEN_SECONDS", 30 * 24 * 3600)
        self._codes: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------------- tokens

    def _rev_sig(self) -> str:
        return hashlib.sha256(b"rev:" + password(self.state).encode()).hexdigest()[:8]

    def _claims(self, issuer: str, grant_type: str, refresh: bool) -> dict[str, Any]:
        now = int(time.time())
        jti = uuid.uuid4().hex + ("-r" if refresh else "")
        return {
            "jti": jti, "sub": USER_GUID, "scope": SCOPES, "client_id": CLIENT_ID, "cid": CLIENT_ID,
            "azp": CLIENT_ID, "grant_type": grant_type, "user_id": USER_GUID, "origin": "uaa",
            "user_name": USER_NAME, "email": USER_NAME, "auth_time": now, "rev_sig": self._rev_sig(),
            "iat": now, "exp": now + (self.refresh_seconds if refresh else self.access_seconds),
            "iss": f"{issuer}/oauth/token", "zid": ZONE, "aud": AUDIENCE,
        }

    def _encode(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm="HS256", headers={"kid": "localcf", "typ": "JWT"})

    def grant(self, issuer: str, grant_type: str) -> dict[str, Any]:
        access = self._claims(issuer, grant_type, refresh=False)
        refresh = self._claims(issuer, grant_type, refresh=True)
        return {"access_token": self._encode(access), "token_type": "bearer",
                "id_token": self._encode({**access, "aud": [CLIENT_ID]}),
                "refresh_token": self._encode(refresh), "expires_in": self.access_seconds - 1,
                "scope": " ".join(SCOPES), "jti": access["jti"]}

    def decode(self, token: str, purpose: str = "access") -> dict[str, Any] | None:
        """The claims of a token we signed for `purpose` ("access" or "refresh") that has not
        expired and not been revoked, else None. An access token must name Cloud Controller in its
        audience (an id token does not); a refresh token is only good for the refresh grant."""
        try:
            claims = jwt.decode(token, self.key, algorithms=["HS256"], options={"verify_aud": False})
        except jwt.PyJWTError:
            return None
        if claims.get("rev_sig") != self._rev_sig() or claims.get("user_name") != USER_NAME:
            return None
        is_refresh = str(claims.get("jti", "")).endswith("-r")
        if purpose == "refresh":
            return claims if is_refresh else None
        if is_refresh or "cloud_controller" not in (claims.get("aud") or []):
            return None
        return claims

    def token_request(self, body: bytes, authorization: str, issuer: str) -> dict[str, Any]:
        """`POST /oauth/token`: the password and refresh_token grants of the `cf` client."""
        client = _basic_user(authorization)
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        client = client if client is not None else form.get("client_id")
        if client != CLIENT_ID:
            raise UaaError(401, "unauthorized", "Bad credentials")
        grant_type = form.get("grant_type", "")
        if grant_type == "password":
            user, given = form.get("username", ""), form.get("password", "")
            if user != USER_NAME or not hmac.compare_digest(given.encode(), password(self.state).encode()):
                raise UaaError(401, "unauthorized", "Bad credentials")
            return self.grant(issuer, "password")
        if grant_type == "refresh_token":
            value = form.get("refresh_token", "")
            claims = self.decode(value, purpose="refresh")
            if claims is None:
                raise UaaError(401, "invalid_token", _refresh_problem(value, self.key))
            return self.grant(issuer, "password")
        if not grant_type:
            raise UaaError(400, "invalid_request", "Missing grant type")
        raise UaaError(400, "unsupported_grant_type", f"Unsupported grant type: {grant_type}")

    # ----------------------------------------------------------------------- one-time codes

    def authorize_code(self, client_id: str, response_type: str, claims: dict[str, Any]) -> str:
        """A one-time code for the ssh proxy (`cf ssh-code`)."""
        if response_type != "code":
            raise UaaError(400, "unsupported_response_type", "Unsupported response types: [" + response_type + "]")
        if client_id != SSH_CLIENT_ID:
            raise UaaError(401, "invalid_client", f"No client with requested id: {client_id}")
        code = secrets.token_urlsafe(24)
        with self._lock:
            now = time.monotonic()
            self._codes = {c: v for c, v in self._codes.items() if v[1] > now}
            self._codes[code] = (str(claims.get("user_name")), now + CODE_SECONDS)
        return code

    def redeem_code(self, code: str) -> str | None:
        """The user a one-time code was issued to, once; None when unknown, used or expired."""
        with self._lock:
            found = self._codes.pop(code, None)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]


def _basic_user(authorization: str) -> str | None:
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(value.strip()).decode().partition(":")[0]
    except (ValueError, UnicodeDecodeError):
        return None


def _refresh_problem(value: str, key: bytes) -> str:
    """UAA's description of a refresh token it refuses (without echoing the token)."""
    try:
        jwt.decode(value, key, algorithms=["HS256"], options={"verify_aud": False})
    except jwt.ExpiredSignatureError:
        return "Invalid refresh token (expired): log in again"
    except jwt.PyJWTError:
        return "The token does not bear a valid signature."
    return "Invalid refresh token: it was not issued for this client"


_BY_ROOT: dict[str, Uaa] = {}
_BY_ROOT_LOCK = threading.Lock()


def for_state(state: StateDir) -> Uaa:
    """The UAA of a state dir (one per daemon process)."""
    key = str(state.root)
    with _BY_ROOT_LOCK:
        found = _BY_ROOT.get(key)
        if found is None:
            found = _BY_ROOT[key] = Uaa(state)
        return found


# --------------------------------------------------------------------------- the API's side

def bearer(authorization: str) -> str | None:
    scheme, _, value = (authorization or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def looks_like_jwt(value: str) -> bool:
    return value.count(".") == 2


def check(handler: Any) -> bool | ApiError | None:
    """The API's authentication hook: True lets the request through; an ApiError is the 401 to
    answer; None leaves the decision to the API's own bearer-token check."""
    path = handler.path.split("?", 1)[0].rstrip("/") or "/"
    if path in PUBLIC_PATHS:
        return True
    value = bearer(handler.headers.get("Authorization", ""))
    if value is None or not looks_like_jwt(value):
        return None
    if for_state(handler.server.controller.state).decode(value) is not None:
        return True
    return ApiError(401, 1000, "CF-InvalidAuthToken", "Invalid Auth Token")
