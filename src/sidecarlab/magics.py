"""The `%cf` magic: `%cf push ...` echoes `$ cf push ...` and runs it on the notebook's target.

Load it with `%load_ext sidecarlab.magics`; `sidecarlab.notebook.target_from_params(...)` also
loads it and makes the target it creates the magic's target. Loading it also makes every kit error
(`KitError`) and failed check (`CheckFailed`) show as its one message, without a Python traceback.
`{name}` in the line is replaced by the notebook variable `name`;
`$VAR` and `$(...)` are left alone for the shell on the platform (as in `cf ssh -c "..."`).
A leading `--no-check` runs a command whose failure is expected or harmless (for example a
`cf ssh` that kills the container it runs in).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from IPython import get_ipython
from IPython.core.magic import Magics, line_magic, magics_class, no_var_expand

from .checks import CheckFailed
from .errors import KitError
from .targets import Target, TargetError

__all__ = [
    "CLEAN_ERRORS",
    "CfMagics",
    "UnknownVariable",
    "expand",
    "load_in_running_shell",
    "load_ipython_extension",
    "use_target",
]

#: Errors shown as their message alone: it already says what was wrong and what to do.
CLEAN_ERRORS: tuple[type[BaseException], ...] = (KitError, CheckFailed)

# `{name}` or `{name.attr}`, but not `${VAR}`, which belongs to the remote shell.
_PLACEHOLDER = re.compile(r"(?<![$\\])\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}")


class UnknownVariable(KitError, NameError):
    """`{name}` in a `%cf` line names no notebook variable."""


def expand(line: str, namespace: dict[str, Any]) -> str:
    """Replace `{name}` by the value of `name` in `namespace`; a missing name is a clear error."""

    def value(m: re.Match[str]) -> str:
        first, *attrs = m.group(1).split(".")
        if first not in namespace:
            raise UnknownVariable(
                f"%cf: {{{m.group(1)}}} names no notebook variable {first!r}: run the parameters "
                "and setup cells first, or write the value itself."
            )
        obj = namespace[first]
        for attr in attrs:
            obj = getattr(obj, attr)
        return str(obj)

    return _PLACEHOLDER.sub(value, line)


@magics_class
class CfMagics(Magics):
    """Holds the notebook's target and runs `%cf` lines on it."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.target: Target | None = None

    def _find_target(self) -> Target:
        if self.target is not None:
            return self.target
        found = [v for k, v in self._namespace().items() if isinstance(v, Target) and not k.startswith("_")]
        if len(found) == 1:
            return found[0]
        raise TargetError(
            "%cf has no target: run the setup cell that calls "
            "sidecarlab.notebook.target_from_params(...) first."
        )

    def _namespace(self) -> dict[str, Any]:
        return self.shell.user_ns if self.shell is not None else {}

    @no_var_expand
    @line_magic
    def cf(self, line: str) -> None:
        """Echo `$ cf ARGS` and run it on the notebook's target, streaming its output."""
        line = expand(line, self._namespace()).strip()
        check = True
        if line.startswith("--no-check"):
            check = False
            line = line[len("--no-check"):].strip()
        if not line:
            raise TargetError("%cf needs a cf command, e.g. `%cf apps`.")
        try:
            args = shlex.split(line)
        except ValueError as exc:
            raise TargetError(f"%cf {line}: {exc} (check the quotes).") from None
        self._find_target().cf(*args, check=check, shown=f"cf {line}", echo=True)


def load_in_running_shell() -> bool:
    """Load the extension into the running IPython (a notebook's kernel); False outside IPython."""
    shell = get_ipython()
    if shell is None:
        return False
    _registered(shell)
    return True


def use_target(target: Target) -> None:
    """Make `target` the target of `%cf` in the running IPython, loading the magic if needed."""
    shell = get_ipython()
    if shell is None:
        return
    magics = _registered(shell)
    magics.target = target


def _registered(shell: Any) -> CfMagics:
    existing = shell.magics_manager.registry.get("CfMagics")
    if existing is None:
        load_ipython_extension(shell)
        existing = shell.magics_manager.registry["CfMagics"]
    return existing


def _short_error(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> list[str]:
    """Show the kit's own errors (failed checks, failed cf commands) without a Python traceback:
    their message already says what was expected, what was seen and what to do."""
    stb = [f"{etype.__name__}: {value}"]
    shell._showtraceback(etype, value, stb)
    return stb


def load_ipython_extension(shell: Any) -> None:
    """`%load_ext sidecarlab.magics`: register `%cf` and the short error display."""
    if "CfMagics" not in shell.magics_manager.registry:
        shell.register_magics(CfMagics(shell))
    shell.set_custom_exc(CLEAN_ERRORS, _short_error)
