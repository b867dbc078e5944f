"""The launcher: how every app and sidecar process starts, as Cloud Foundry's launcher does it.

`cd` to the app directory, say `Invoking pre-start scripts.`, source the buildpacks'
`../profile.d/*`, then the app's `.profile.d/*`, then `.profile`, say `Invoking start command.`,
and `exec bash -c "<command>"`. The sourced scripts share one shell, so what they export reaches
the command.
"""

from __future__ import annotations

# $1 is the app directory, $2 the start command. The command is kept in a variable with an
# unlikely name because the sourced scripts run in this very shell and may reset "$@".
LAUNCHER_SCRIPT = r"""
cd "$1" || exit 1
__localcf_start_command=$2
shift 2
echo "Invoking pre-start scripts."
for __localcf_script in ../profile.d/*; do
  if [ -f "$__localcf_script" ]; then . "$__localcf_script"; fi
done
for __localcf_script in .profile.d/*; do
  if [ -f "$__localcf_script" ]; then . "$__localcf_script"; fi
done
unset __localcf_script
if [ -f .profile ]; then . ./.profile; fi
echo "Invoking start command."
exec bash -c "$__localcf_start_command"
"""


def launcher_argv(bash: str, app_dir: str, command: str) -> list[str]:
    """The argv that starts `command` through the launcher, `bash` being the shell's path."""
    return [bash, "-c", LAUNCHER_SCRIPT, "launcher", app_dir, command]
