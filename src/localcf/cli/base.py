"""The `localcf` click group and what every command shares: the client, failures, the header."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .. import daemon
from ..actions import ActionFailed
from ..client import Client, ClientError
from ..constants import ORG_NAME, SPACE_NAME, USER_NAME
from ..manifest import ManifestError

ORG, SPACE, USER = ORG_NAME, SPACE_NAME, USER_NAME
WHERE = f"in org {ORG} / space {SPACE} as {USER}"

F = TypeVar("F", bound=Callable[..., Any])


class CommandFailed(click.ClickException):
    """Printed as the cf CLI prints failures: `FAILED` then the reason, exit 1."""

    def show(self, file: Any = None) -> None:
        click.echo("FAILED", err=True)
        click.echo(self.message, err=True)


def client() -> Client:
    """The command's one client of the daemon (started on first use)."""
    ctx = click.get_current_context()
    root = ctx.find_root()
    if root.obj is None:
        root.obj = {}
    if "client" not in root.obj:
        root.obj["client"] = Client()
    c: Client = root.obj["client"]
    return c


def fail_on_client_errors(fn: F) -> F:
    """API errors, manifest errors, action failures and daemon errors become `FAILED` + reason."""

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except ClientError as e:
            raise CommandFailed(e.detail) from None
        except (ManifestError, ActionFailed, daemon.DaemonError) as e:
            raise CommandFailed(str(e)) from None

    return wrapper  # type: ignore[return-value]


def say(*lines: str) -> None:
    """Print lines (a blank line for "")."""
    for line in lines:
        click.echo(line)


def confirm_delete(kind: str, name: str) -> bool:
    """Ask as cf does; with no terminal to ask on, refuse and say how to skip the question."""
    if not sys.stdin.isatty():
        raise CommandFailed(f"Refusing to delete {kind} {name} without confirmation: no terminal to ask on. "
                            "Use -f to delete without asking.")
    if click.confirm(f"Really delete the {kind} {name}?", default=False):
        return True
    click.echo(f"{kind.capitalize()} has not been deleted.")
    return False


def staging_line(message: str) -> None:
    """A staging log line as `cf push` indents it."""
    click.echo(f"   {message}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sidecar-lab", prog_name="localcf")
def main() -> None:
    """localcf: an embedded Cloud Foundry. Its verbs are the cf CLI's."""


def alias(name: str, command: click.Command, help: str) -> None:
    """Register `command` under a second name (the cf v6 experimental verbs)."""
    main.add_command(click.Command(name, callback=command.callback, params=command.params, help=help))
