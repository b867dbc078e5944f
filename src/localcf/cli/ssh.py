"""`localcf ssh`: a command or a shell in an instance's container, or ports forwarded into it."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from ..client import Client
from ..jsondoc import JsonObject
from .base import CommandFailed, client, fail_on_client_errors, main


@main.command()
@click.argument("name")
@click.option("-i", "--app-instance-index", "index", type=int, default=0, show_default=True,
              help="Instance index")
@click.option("-c", "--command", "command", help="Command to run (default: an interactive shell)")
@click.option("-L", "forwards", multiple=True, help="Local port forward [BIND:]LOCAL_PORT:HOST:PORT")
@click.option("-N", "no_command", is_flag=True, help="Do not run a command (with -L)")
@click.option("-t", "--force-pseudo-tty", "force_tty", is_flag=True, help="Force a pseudo-terminal")
@click.option("-T", "--disable-pseudo-tty", "no_tty", is_flag=True, help="No pseudo-terminal")
@fail_on_client_errors
def ssh(name: str, index: int, command: str | None, forwards: tuple[str, ...], no_command: bool,
        force_tty: bool, no_tty: bool) -> None:
    """Run a command or a shell in an instance's container, or forward ports into it (cf ssh)."""
    from .. import ssh as sshmod
    c = client()
    app = c.require_app(name)
    port = c.endpoint["api_port"]
    token = c.state.token()
    listeners = [start_forward(c, app, spec, index) for spec in forwards]
    if no_command or (forwards and command is None and not sys.stdin.isatty()):
        if not listeners:
            raise CommandFailed("Incorrect Usage: -N needs at least one -L")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return
    tty = (force_tty or (command is None and sys.stdin.isatty())) and not no_tty
    body: JsonObject = {"index": index, "command": command, "tty": tty, "term": os.environ.get("TERM")}
    if tty:
        size = os.get_terminal_size() if sys.stdout.isatty() else os.terminal_size((80, 24))
        body.update(rows=size.lines, cols=size.columns)
    try:
        sock, reader = sshmod.open_upgraded(port, token, f"/localcf/v1/apps/{app['guid']}/ssh", body)
    except ConnectionError as e:
        raise CommandFailed(str(e)) from None
    if tty and sys.stdin.isatty():
        import termios
        import tty as ttymod
        saved = termios.tcgetattr(sys.stdin.fileno())
        ttymod.setraw(sys.stdin.fileno(), termios.TCSANOW)  # keep what was typed ahead
        try:
            status = sshmod.run_client(sock, reader, tty)
        finally:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
    else:
        status = sshmod.run_client(sock, reader, tty, stdin=None if command is None else sys.stdin.buffer)
    sys.exit(status)


def start_forward(c: Client, app: JsonObject, spec: str, index: int) -> Any:
    """Listen on a local port; each connection is forwarded to HOST:PORT inside the container."""
    import socket as socketmod
    import threading

    from .. import ssh as sshmod
    parts = spec.split(":")
    if len(parts) == 3:
        bind, (local, host, rport) = "127.0.0.1", parts
    elif len(parts) == 4:
        bind, local, host, rport = parts
    else:
        raise CommandFailed(f"Incorrect Usage: -L {spec}: expected [BIND_ADDRESS:]LOCAL_PORT:REMOTE_HOST:REMOTE_PORT")
    try:
        lport, rport_i = int(local), int(rport)
    except ValueError:
        raise CommandFailed(f"Incorrect Usage: -L {spec}: ports must be numbers") from None
    srv = socketmod.socket()
    srv.setsockopt(socketmod.SOL_SOCKET, socketmod.SO_REUSEADDR, 1)
    try:
        srv.bind((bind or "127.0.0.1", lport))
    except OSError as e:
        raise CommandFailed(f"Error opening local port {bind}:{lport}: {e.strerror}") from None
    srv.listen(16)
    port, token = c.endpoint["api_port"], c.state.token()

    def handle(conn: Any) -> None:
        try:
            sock, reader = sshmod.open_upgraded(port, token, f"/localcf/v1/apps/{app['guid']}/forward",
                                                {"index": index, "host": host, "port": rport_i})
        except ConnectionError as e:
            click.echo(f"connect to {host}:{rport_i} failed: {e}", err=True)
            conn.close()
            return
        sshmod._splice(sock, conn, first_reader=reader)
        conn.close()
        sock.close()

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv
