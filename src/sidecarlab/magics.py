"""The `%cf` magic: `%cf push ...` echoes `$ cf push ...` and runs it on the notebook's target.

Load it with `%load_ext sidecarlab.magics`; `sidecarlab.notebook.target_from_params(...)` also
loads it and makes the target it creates the magic's target. Loading it also makes every kit error
(`KitError`) and failed check (`CheckFailed`) show as its one message, without a Python traceback.
`{name}` in the line is replaced by the notebook variable `name`;
`$VAR` and `$(...)` are left alone for the shell on the platform (as in `cf ssh -c "..."`).
A leading `--no-check` runs a command whose failure is expected or harmless (for example a
`cf ssh` that kills the container it runs in).

Long outputs are kept short where a learner would only scroll past them, and always stay whole in
the notebook variable `_cf` (the last command's `CommandResult`, `_cf.output`):

- `--grep PATTERN` shows only the lines matching the regular expression PATTERN, echoed as the shell
  line a learner would type (`$ cf logs APP --recent | grep -E 'PATTERN'`), and says how many lines
  it left out;
- a staging command (`push`, `restage`) prints its whole transcript the first time in a notebook;
  later ones print the lines that matter (buildpack steps, warnings, errors, the app's state) and
  the whole transcript in a collapsed `<details>` block; `--full` prints it whole anyway;
- `cf curl` answers lose their repeated `links`/pagination URLs (the API's own address, again and
  again), with a note saying so.
"""

from __future__ import annotations

import html
import json
import re
import shlex
from typing import Any

from IPython import get_ipython
from IPython.core.magic import Magics, line_magic, magics_class, no_var_expand
from IPython.display import display

from .checks import CheckFailed
from .errors import KitError
from .targets import CommandError, CommandResult, Target, TargetError

__all__ = [
    "CLEAN_ERRORS",
    "CfMagics",
    "UnknownVariable",
    "expand",
    "fold_staging",
    "grep_lines",
    "load_in_running_shell",
    "trim_curl",
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
        # Staging verbs whose whole transcript this notebook has shown once already.
        self._shown_in_full: set[str] = set()

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
        check, full, pattern = True, False, None
        while True:
            m = _OPTION.match(line)
            if m is None:
                break
            option, value = m.group(1) or "--grep", m.group(2)
            line = line[m.end():].strip()
            if option == "--no-check":
                check = False
            elif option == "--full":
                full = True
            else:
                if not value:
                    raise TargetError("%cf --grep needs a pattern, e.g. `%cf --grep 'SIDECAR' logs APP --recent`.")
                pattern = shlex.split(value)[0]
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise TargetError(f"%cf --grep {pattern!r}: not a regular expression ({exc}).") from None
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise TargetError(f"%cf {line}: {exc} (check the quotes).") from None
        if not words:
            raise TargetError("%cf needs a cf command, e.g. `%cf apps`.")
        shown = f"cf {line}"
        target = self._find_target()
        verb = words[0]
        if pattern is not None:
            result = self._run_quiet(target, words, shown, f" | grep -E {shlex.quote(pattern)}")
            kept, total = grep_lines(result.output, pattern)
            print("\n".join([*kept, f"({len(kept)} of {total} lines match; the whole output is in `_cf.output`)"]))
        elif verb == "curl":
            result = self._run_quiet(target, words, shown)
            trimmed, note = trim_curl(result.output)
            print("\n".join([trimmed, note]) if note else trimmed)
        elif verb in _STAGING_VERBS and not full and verb in self._shown_in_full:
            result = self._run_quiet(target, words, shown)
            print(fold_staging(result.output))
            _show_details(f"the whole output of `{shown}`", result.output)
        else:
            self._remember(target.cf(*words, check=check, shown=shown, echo=True))
            if verb in _STAGING_VERBS:
                # The first staging transcript is shown whole; later ones (push or restage) are folded.
                self._shown_in_full |= _STAGING_VERBS
            return
        if check and not result.ok:
            raise CommandError(result.shown, result.returncode, result.output)

    def _run_quiet(self, target: Target, words: list[str], shown: str, pipe: str = "") -> CommandResult:
        """Run a command whose output is shown shortened: echo it, keep the whole output in `_cf`."""
        print(f"$ {shown}{pipe}", flush=True)
        result = target.cf(*words, check=False, shown=shown, echo=False, quiet=True)
        self._remember(result)
        return result

    def _remember(self, result: CommandResult) -> None:
        if self.shell is not None:
            self.shell.user_ns["_cf"] = result


# The magic's own options, before the cf command: `--no-check`, `--full`, `--grep PATTERN`.
_OPTION = re.compile(r"""^(?:(--no-check|--full)|--grep(?:\s+('[^']*'|"[^"]*"|\S+))?)(?:\s+|$)""")
_STAGING_VERBS = {"push", "restage", "v3-push"}

# The lines of a staging transcript worth keeping when it is folded: what is pushed, each
# buildpack's own steps (`----->`), the supply step's lines, warnings and errors, the staging's end,
# and the app's state table.
_KEY_LINE = re.compile(
    r"^(Pushing app|Applying manifest|Updating app|Uploading files|Staging app|Waiting for app"
    r"|Restaging app|FAILED|OK$|Error|name:|requested state:|routes:|type:|sidecars:|instances:|state\s+since"
    r"|#\d+\s)"
    r"|-----> |\bWarning\b|\bERROR\b|\bError\b|Exit status|Uploading droplet|Uploading complete"
    r"|Could not|failed",
)


def grep_lines(output: str, pattern: str) -> tuple[list[str], int]:
    """The lines of `output` matching the regular expression `pattern`, and how many lines there were."""
    lines = [line for line in output.splitlines() if line.strip()]
    regex = re.compile(pattern)
    return [line for line in lines if regex.search(line)], len(lines)


def fold_staging(output: str) -> str:
    """A staging transcript (`cf push`, `cf restage`) folded to its key lines, with a note saying how
    many were left out."""
    lines = [line for line in output.splitlines() if line.strip()]
    kept = [line for line in lines if _KEY_LINE.search(line.strip()) or _KEY_LINE.search(line)]
    left_out = len(lines) - len(kept)
    note = (f"({left_out} more lines of this transcript are folded away: open the block below, or read "
            "`_cf.output`)") if left_out else ""
    return "\n".join([*kept, note] if note else kept)


def trim_curl(output: str) -> tuple[str, str]:
    """A `cf curl` answer without its repeated `links` and pagination URLs, and a note saying what
    was left out (the text unchanged, and no note, when it is not such a JSON document)."""
    try:
        document = json.loads(output)
    except ValueError:
        return output.rstrip("\n"), ""
    removed = [0]

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if key == "links" and isinstance(item, dict):
                    removed[0] += 1
                    continue
                if key == "pagination" and isinstance(item, dict):
                    kept = {k: v for k, v in item.items() if k in ("total_results", "total_pages")}
                    removed[0] += len(item) - len(kept)
                    out[key] = kept
                    continue
                out[key] = strip(item)
            return out
        if isinstance(value, list):
            return [strip(item) for item in value]
        return value

    trimmed = strip(document)
    if not removed[0]:
        return output.rstrip("\n"), ""
    return (json.dumps(trimmed, indent=3),
            "(the `links` and pagination URLs, the API's own address again and again, are left out here; "
            "the whole answer is in `_cf.output`)")


def _show_details(summary: str, text: str) -> None:
    """The whole `text` in a collapsed HTML block (plain-text front ends get a one-line pointer)."""
    display({
        "text/html": f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre></details>",
        "text/plain": f"({summary}: `_cf.output`)",
    }, raw=True)


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
    magics._shown_in_full.clear()  # a notebook run again from the top shows its first push whole again


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
