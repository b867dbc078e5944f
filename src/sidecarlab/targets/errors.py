"""What can go wrong between the kit and a platform, each as one message that says what to do.

The texts recognised here are the cf CLI's and Cloud Controller's own: `cf curl` exits 0 on an HTTP
error and prints CC's error document (`{"errors": [{"title", "detail", "code"}]}`), and `cf ssh`
into an app whose ssh is disabled prints `Error opening SSH connection: You are not authorized to
perform the requested action.`
"""

from __future__ import annotations

from typing import Any

from ..errors import KitError

__all__ = [
    "ApiError",
    "CommandError",
    "SshNotAllowed",
    "TargetError",
    "api_errors",
    "ssh_refusal",
]

# What `cf ssh` prints when ssh is off for the app, its space or the foundation.
SSH_NOT_AUTHORIZED = "Error opening SSH connection: You are not authorized to perform the requested action."
_SSH_REFUSALS = (SSH_NOT_AUTHORIZED, "SSH support is disabled")

# What the learner can do about a Cloud Controller error, by its title.
_API_HINTS = {
    "CF-NotAuthorized": ("Your user lacks the role this needs: SpaceDeveloper in the space for apps, the "
                         "admin role for buildpacks. Ask your operator for the role, or use target='local'."),
    "CF-InvalidAuthToken": "Your login expired: run the cell that creates the target again (it logs in anew).",
    "CF-NotAuthenticated": "The kit is not logged in: run the cell that creates the target again.",
    "CF-ResourceNotFound": ("Cloud Controller has no such resource: was the app deleted or renamed since? "
                            "Run the push cell above again."),
    "CF-AppNotFound": "The app does not exist (any more): run the push cell above again.",
}


class TargetError(KitError):
    """The platform could not be reached, set up or used; the message says what to do."""


class CommandError(TargetError):
    """A cf verb exited non-zero; carries the command as the learner sees it and its output."""

    def __init__(self, shown: str, returncode: int, output: str, hint: str = "") -> None:
        tail = "\n".join(output.rstrip().splitlines()[-25:])
        message = f"`{shown}` failed with exit status {returncode}."
        if tail:
            message += f"\n{tail}"
        if hint:
            message += f"\n{hint}"
        super().__init__(message, hint)
        self.shown = shown
        self.returncode = returncode
        self.output = output


class ApiError(TargetError):
    """Cloud Controller answered a `cf curl` with its error document (title, detail, code)."""

    def __init__(self, shown: str, errors: list[dict[str, Any]]) -> None:
        first = errors[0] if errors else {}
        self.shown = shown
        self.errors = errors
        self.title = str(first.get("title") or "")
        self.detail = str(first.get("detail") or "")
        self.code = first.get("code")
        said = "; ".join(f"{e.get('title', '?')}: {e.get('detail', '')}" for e in errors) or "an error"
        hint = _API_HINTS.get(self.title, f"Cloud Controller's detail above says what was wrong; `{shown}` "
                                          "in a terminal shows the same answer.")
        super().__init__(f"Cloud Controller refused `{shown}`: {said}\n{hint}", hint)


class SshNotAllowed(TargetError):
    """`cf ssh` was refused: ssh is disabled for the app, its space, or the whole foundation."""

    def __init__(self, shown: str, said: str, app: str, space: str) -> None:
        hint = (f"Allow ssh to the app with `cf enable-ssh {app}` and then `cf restart {app}`; if its space "
                f"forbids ssh, a space manager runs `cf allow-space-ssh {space}`; if both are allowed "
                "already, ssh is off for the whole foundation: ask your operator.")
        super().__init__(f"`{shown}` was refused: {said}\nssh into the app's container is disabled.\n{hint}",
                         hint)
        self.shown = shown


def api_errors(document: Any) -> list[dict[str, Any]] | None:
    """The `errors` of a Cloud Controller error document, or None when `document` is not one."""
    if isinstance(document, dict) and isinstance(document.get("errors"), list) and document["errors"]:
        return [e if isinstance(e, dict) else {"detail": str(e)} for e in document["errors"]]
    return None


def ssh_refusal(output: str) -> str | None:
    """The line in which `cf ssh` said ssh is not allowed, or None."""
    for line in output.splitlines():
        if any(text in line for text in _SSH_REFUSALS):
            return line.strip()
    return None
