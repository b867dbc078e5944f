"""Workshop delivery: learner copies stop at their first exercise with the check's feedback, learners
work in a folder of their own, `sidecarlab stop` and `sidecarlab reset` end and undo what the kit
started, headless runs start without ipykernel's TCP warning, and the tracked notebooks carry the
metadata Jupyter writes."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill
import psutil
import pytest
from conftest import BIN, FIXTURES, LocalCF, free_port
from nbformat.v4 import new_code_cell, new_notebook
from papermill.exceptions import PapermillExecutionError
from test_blobstore import blobstore_processes

from sidecarlab import kernel, tutorial
from sidecarlab.checks.core import FAILED_MARK, CheckFailed

# The learner copies share one platform, so they run on one worker.
pytestmark = pytest.mark.xdist_group("delivery")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
SIDECARLAB = BIN / "sidecarlab"
TCP_WARNING = "Kernel is running over TCP without encryption"
# A guard against hanging, not a performance claim.
GONE_DEADLINE = 30.0


def test_there_are_five_parts() -> None:
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


# ------------------------------------------------------------------------------- learner copies

@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> LocalCF:
    """One localcf for the five learner copies: they stop before their clean-up, so what they leave
    stays on this platform, which ends with the module."""
    cf = LocalCF(tmp_path_factory.mktemp("delivery-localcf"))
    cf("start")
    yield cf
    cf("stop", check=False)


def first_exercise_check(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The first check after an exercise's solution in an instructor copy: the first `exercise` code
    cell that is not a solution and follows a solution cell."""
    seen_solution = False
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type != "code" or tutorial.EXERCISE_TAG not in tags:
            continue
        if tutorial.SOLUTION_TAG in tags:
            seen_solution = True
        elif seen_solution:
            return cell
    raise AssertionError("no exercise check cell after a solution cell")


def feedback_pattern() -> re.Pattern[str]:
    """CheckFailed's message (what, expected, seen, hint), whatever its layout and glyph."""
    marks = {"what": "W\x00", "expected": "E\x00", "seen": "S\x00", "hint": "H\x00"}
    text = re.escape(str(CheckFailed(*marks.values())))
    for mark in marks.values():
        text = text.replace(re.escape(mark), r"(.+)")
    return re.compile(text, re.DOTALL)


def test_the_feedback_pattern_reads_check_failed_s_message() -> None:
    message = str(CheckFailed("a claim", "this", "that", "do so"))
    assert feedback_pattern().fullmatch(message).groups() == ("a claim", "this", "that", "do so")
    assert not feedback_pattern().fullmatch("NameError: name 'upload' is not defined")


@pytest.mark.timeout(900)  # Part 5's first check runs the buildpack's integration suite (a guard, not a budget)
@pytest.mark.parametrize("source", NOTEBOOKS, ids=[p.stem[:2] for p in NOTEBOOKS])
def test_a_learner_copy_stops_at_its_first_exercise_with_the_check_s_feedback(
        source: Path, platform: LocalCF, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALCF_HOME", str(platform.home))
    monkeypatch.setenv("SIDECARLAB_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("SIDECARLAB_HOME", str(tmp_path / "home"))
    jupyter = tmp_path / "jupyter"
    kernel_name = tutorial.ensure_kernel(jupyter)
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))

    # The copy as `make learner-copies` writes it, in the learners' work folder.
    (made,) = tutorial.make_learner_copies([source])
    assert made.status == "written" and made.path.parent == tutorial.learners_dir()
    copy = nbformat.read(str(made.path), as_version=4)
    instructor = nbformat.read(str(source), as_version=4)
    solutions = [c for c in instructor.cells if tutorial.SOLUTION_TAG in c.metadata.get("tags", [])]
    assert solutions and made.solutions_removed == len(solutions)
    kept = {c.id: c.source for c in copy.cells}
    assert all(kept[c.id] == tutorial.LEARNER_PLACEHOLDER for c in solutions), "a solution is left in the copy"
    check_cell = first_exercise_check(instructor)  # the copy has no solution tags left
    assert check_cell.id in kept and kept[check_cell.id] == check_cell.source

    executed = tmp_path / "executed.ipynb"
    with pytest.raises(PapermillExecutionError) as raised:
        papermill.execute_notebook(str(made.path), str(executed),
                                   parameters=tutorial.parameters_for(made.path, tutorial.load_params("local")),
                                   kernel_name=kernel_name, progress_bar=False, cwd=str(made.path.parent),
                                   kernel_manager_class=kernel.IpcKernelManager)
    error = raised.value
    out = nbformat.read(str(executed), as_version=4)
    # (papermill puts a note of the error above the cells of its output: find the cell by In [N])
    (index,) = [i for i, c in enumerate(out.cells) if c.get("execution_count") == error.exec_count]
    failed = out.cells[index]
    assert [o.ename for o in failed.outputs if o.output_type == "error"] == ["CheckFailed"]
    assert failed.id == check_cell.id, (
        f"{source.name}: stopped at {failed.source.splitlines()[0]!r} ({error.ename}: {error.evalue[:300]}), "
        f"not at the first exercise check {check_cell.source.splitlines()[0]!r}")
    assert error.ename == "CheckFailed", f"{source.name}: {error.ename}: {error.evalue}"
    what, expected, seen, hint = feedback_pattern().fullmatch(error.evalue).groups()
    assert error.evalue.startswith(FAILED_MARK)
    assert all(part.strip() for part in (what, expected, seen, hint))
    assert "NameError" not in error.evalue
    # Every cell before the check ran (the placeholder included), none after it.
    assert all(c.execution_count is not None for c in out.cells[:index] if c.cell_type == "code")
    assert sum(c.source == tutorial.LEARNER_PLACEHOLDER for c in out.cells[:index]) >= 1
    assert all(c.execution_count is None for c in out.cells[index + 1:] if c.cell_type == "code")


# ---------------------------------------------------------------------- the learners' work folder

def test_learner_copies_never_overwrite_a_learner_s_edits(tmp_path: Path) -> None:
    out = tmp_path / "notebooks"
    env = dict(os.environ, SIDECARLAB_WORK=str(tmp_path))
    first = subprocess.run([str(SIDECARLAB), "learner-copy"], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in NOTEBOOKS]
    assert first.stdout.count("written (") == len(NOTEBOOKS)

    edited = out / NOTEBOOKS[0].name
    nb = nbformat.read(str(edited), as_version=4)
    nb.cells.append(new_code_cell("print('my own cell')"))
    nbformat.write(nb, str(edited))
    mine = edited.read_bytes()
    (out / NOTEBOOKS[1].name).unlink()

    again = subprocess.run([str(SIDECARLAB), "learner-copy"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"{edited}: kept: it differs from a fresh copy" in again.stdout
    assert f"{out / NOTEBOOKS[1].name}: written" in again.stdout
    assert again.stdout.count("already the fresh learner copy") == len(NOTEBOOKS) - 2
    assert edited.read_bytes() == mine

    forced = subprocess.run([str(SIDECARLAB), "learner-copy", "--force", str(NOTEBOOKS[0])], env=env,
                            capture_output=True, text=True, timeout=120)
    assert forced.returncode == 0, forced.stderr
    assert "replaced by a fresh copy" in forced.stdout
    assert "my own cell" not in edited.read_text()


def test_make_lab_opens_the_learners_folder_not_the_tracked_notebooks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^lab:.*\n\t(.+)$", makefile, re.MULTILINE).group(1)
    assert recipe.startswith("$(VENV)/bin/sidecarlab lab") and "notebooks/" not in recipe
    ignored = subprocess.run(["git", "check-ignore", "-q", "work/notebooks/01-x.ipynb"], cwd=ROOT)
    assert ignored.returncode == 0, "the learners' folder must be git-ignored"


def test_sidecarlab_lab_makes_the_copies_and_runs_jupyterlab_in_the_learners_folder(tmp_path: Path) -> None:
    # `--version`: the real JupyterLab, run where learners work, without serving anything.
    env = dict(os.environ, SIDECARLAB_WORK=str(tmp_path))
    done = subprocess.run([str(SIDECARLAB), "lab", "--version"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in (tmp_path / "notebooks").iterdir()) == [p.name for p in NOTEBOOKS]
    assert f"your own copies of the notebooks, in {tmp_path / 'notebooks'}" in done.stdout
    assert "`make stop` (or `sidecarlab stop`) stops localcf" in done.stdout
    assert re.search(r"^\d+\.\d+\.\d+", done.stdout.split("`make reset` starts the tutorial over.\n")[1])
    assert done.stdout.rstrip().endswith("`make stop` (or `sidecarlab stop`) stops them.")


def test_the_tracked_notebooks_carry_the_metadata_jupyter_writes() -> None:
    reported = kernel.language_info("python3")
    for path in NOTEBOOKS:
        metadata = json.loads(path.read_text())["metadata"]
        assert metadata["kernelspec"] == {"display_name": "Python 3 (ipykernel)", "language": "python",
                                          "name": "python3"}, path.name
        saved = dict(metadata["language_info"])
        # The Python version is the machine's: the tracked one is the kit's reference Python.
        assert re.fullmatch(r"3\.\d+\.\d+", saved.pop("version")), path.name
        reported.pop("version", None)
        assert saved == reported, path.name


# ------------------------------------------------------------------------------ stop and reset

def kit_env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, LOCALCF_HOME=str(tmp_path / "localcf"), SIDECARLAB_WORK=str(tmp_path / "work"),
                SIDECARLAB_HOME=str(tmp_path / "home"))


def sidecarlab(env: dict[str, str], *args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run([str(SIDECARLAB), *args], env=env, capture_output=True, text=True, timeout=300,
                          stdin=stdin)


def daemon_pid(home: Path) -> int:
    return json.loads((home / "daemon.json").read_text())["pid"]


def wait_gone(pids: list[int]) -> list[int]:
    end = time.monotonic() + GONE_DEADLINE
    while True:
        left = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.1)


def test_stop_ends_localcf_the_s3_server_and_the_kit_s_tunnels_and_is_idempotent(tmp_path: Path) -> None:
    env = kit_env(tmp_path)
    cf = LocalCF(tmp_path / "localcf")
    cf.env = env
    cf("start")
    app = tmp_path / "runtime-app"
    shutil.copytree(FIXTURES / "runtime-app", app)
    cf("push", "-f", str(app / "manifest.yml"), "-p", str(app), cwd=app)
    store = sidecarlab(env, "blobstore", "start")
    assert store.returncode == 0, store.stderr
    # A tunnel as the kit opens one (`cf ssh -N -L`).
    tunnel = subprocess.Popen([sys.executable, "-m", "localcf.cli", "ssh", "runtime-app", "-N", "-L",
                               f"{free_port()}:localhost:8082"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    # A process with a tunnel's command line but another localcf's settings (a stand-in: a second
    # platform only for this would be slow): stop must leave it alone.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "localcf.cli", "ssh",
                              "runtime-app", "-N", "-L", "1:localhost:8082"],
                             env=dict(env, LOCALCF_HOME=str(tmp_path / "another-localcf")))
    try:
        time.sleep(1)
        assert tunnel.poll() is None
        daemon = daemon_pid(tmp_path / "localcf")
        servers = blobstore_processes(tmp_path / "home" / "blobstore")
        assert servers and psutil.pid_exists(daemon)

        stopped = sidecarlab(env, "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped ssh tunnels (pid {tunnel.pid})" in stopped.stdout
        assert f"stopped the embedded S3 server (pid {servers[0]}," in stopped.stdout
        assert "stopped the localcf daemon" in stopped.stdout
        assert tunnel.wait(timeout=GONE_DEADLINE) is not None
        assert wait_gone([daemon, *servers]) == []
        assert other.poll() is None, "a tunnel to another localcf was stopped"

        again = sidecarlab(env, "stop")
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines() == [
            "ssh tunnels: not running",
            f"the embedded S3 server: not running (state dir {tmp_path / 'home' / 'blobstore'})",
            "the localcf daemon: not running",
        ]
    finally:
        for proc in (tunnel, other):
            proc.kill()
            proc.wait()
        cf("stop", check=False)


def tree(root: Path) -> dict[str, str]:
    """Every file under root, with its content's digest."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def answer_on_a_terminal(env: dict[str, str], answer: str, *args: str) -> tuple[int, str]:
    """Run `sidecarlab ARGS` on a pseudo-terminal, answer its question, return (exit code, what it said)."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([str(SIDECARLAB), *args], env=env, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    said, answered = b"", False
    end = time.monotonic() + 120
    while time.monotonic() < end:
        ready, _, _ = select.select([controller], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            said += chunk
            if not answered and b"[y/N]" in said:
                os.write(controller, answer.encode() + b"\n")
                answered = True
        elif proc.poll() is not None:
            break
    os.close(controller)
    return proc.wait(timeout=60), said.decode(errors="replace").replace("\r\n", "\n")


def test_reset_lists_what_it_deletes_asks_first_and_puts_the_learner_back_at_the_start(tmp_path: Path) -> None:
    env = kit_env(tmp_path)
    work, home, localcf_home = tmp_path / "work", tmp_path / "home", tmp_path / "localcf"
    # State, made for real: learner copies with an edit, a running localcf, a running S3 server.
    assert sidecarlab(env, "learner-copy").returncode == 0
    edited = work / "notebooks" / NOTEBOOKS[0].name
    edited.write_text(edited.read_text().replace("Exercise 1", "Exercise 1 (my notes)"))
    (work / "part1").mkdir()
    (work / "part1" / "manifest.yml").write_text("applications: []\n")
    cf = LocalCF(localcf_home)
    cf.env = env
    cf("start")
    assert sidecarlab(env, "blobstore", "start").returncode == 0
    daemon = daemon_pid(localcf_home)
    servers = blobstore_processes(home / "blobstore")
    # What is not the kit's state: beside it in the same folders, and the checkout's notebooks.
    (tmp_path / "mine.txt").write_text("not the kit's")
    (home / "other-tool").mkdir(parents=True)
    (home / "other-tool" / "settings").write_text("keep")
    outside = {k: v for k, v in tree(tmp_path).items() if not k.startswith(("work/", "localcf/", "home/blobstore/"))}
    tracked = tree(ROOT / "notebooks")
    listing = [f"  {work}  (the work dir", f"  {home / 'blobstore'}  (the embedded S3 server's state)",
               f"  {localcf_home}  (localcf's state"]
    try:
        # No terminal, no --yes: refused, nothing touched.
        refused = sidecarlab(env, "reset")
        assert refused.returncode == 1
        assert "Nothing deleted: `sidecarlab reset` asks before it deletes, and there is no terminal" in refused.stderr
        assert all(line in refused.stdout for line in listing), refused.stdout
        # A terminal, answered 'n': refused, nothing touched, nothing stopped.
        code, said = answer_on_a_terminal(env, "n", "reset")
        assert code == 1, said
        assert all(line in said for line in listing), said
        assert "Delete all this and start over? [y/N]" in said and "Nothing deleted." in said
        assert psutil.pid_exists(daemon) and blobstore_processes(home / "blobstore") == servers
        assert "my notes" in edited.read_text() and (localcf_home / "localcf.db").is_file()

        done = sidecarlab(env, "reset", "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        assert all(line in done.stdout for line in listing), done.stdout
        assert wait_gone([daemon, *servers]) == []
        assert not localcf_home.exists() and not (home / "blobstore").exists()
        # Back at the start: the work dir holds only fresh learner copies.
        assert sorted(tree(work)) == sorted(f"notebooks/{p.name}" for p in NOTEBOOKS)
        assert "my notes" not in edited.read_text()
        assert done.stdout.count("replaced by a fresh copy") + done.stdout.count(": written (") == len(NOTEBOOKS)
        # Nothing else touched.
        assert {k: v for k, v in tree(tmp_path).items() if not k.startswith("work/")} == outside
        assert tree(ROOT / "notebooks") == tracked
    finally:
        cf("stop", check=False)


def test_reset_deletes_through_read_only_folders(tmp_path: Path) -> None:
    from sidecarlab import reset

    locked = tmp_path / "state" / "droplet" / "bin"
    locked.mkdir(parents=True)
    (locked / "config-server").write_text("binary")
    locked.chmod(0o500)
    locked.parent.chmod(0o500)
    reset._delete(tmp_path / "state")
    assert not (tmp_path / "state").exists()


# ------------------------------------------------------------------------------ headless runs

def tiny_tutorial(directory: Path) -> Path:
    """A one-part tutorial: a parameters cell and a cell that prints its kernel's pid."""
    nb = new_notebook(cells=[new_code_cell("target = 'local'", metadata={"tags": ["parameters"]}),
                             new_code_cell("import os\nprint('kernel pid', os.getpid())")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    (directory / "params").mkdir(parents=True)
    (directory / "params" / "local.yml").write_text("target: local\n")
    path = directory / "01-tiny.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_sidecarlab_run_starts_its_kernel_without_the_tcp_warning(tmp_path: Path) -> None:
    path = tiny_tutorial(tmp_path / "notebooks")
    done = subprocess.run([str(SIDECARLAB), "run", "01", "--notebooks", str(path.parent), "-o", str(tmp_path / "out"),
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "kernel pid" in (tmp_path / "out" / "notebooks" / path.name).read_text()
    assert TCP_WARNING not in done.stderr

    # What the warning looks like, and where it came from: a kernel on the default TCP transport.
    kernel_name = tutorial.ensure_kernel(tmp_path / "jupyter")
    plain = subprocess.run([sys.executable, "-m", "papermill", str(path), str(tmp_path / "tcp.ipynb"), "-k",
                            kernel_name, "--no-progress-bar"], capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, JUPYTER_PATH=str(tmp_path / "jupyter")))
    assert plain.returncode == 0, plain.stderr
    assert TCP_WARNING in plain.stderr


def test_headless_kernels_started_at_once_from_one_directory_each_get_their_own_sockets(tmp_path: Path,
                                                                                       monkeypatch) -> None:
    """Two notebooks executed at once from `notebooks/` start two kernels in one directory: each must
    answer on sockets of its own, none of them written into that directory."""
    import asyncio

    from sidecarlab.kernel import IpcKernelManager

    monkeypatch.chdir(tmp_path)

    async def start_two() -> list[str]:
        managers = [IpcKernelManager(kernel_name="python3") for _ in range(2)]
        await asyncio.gather(*(m.start_kernel() for m in managers))
        try:
            answers = []
            for manager in managers:
                client = manager.client()
                client.start_channels()
                try:
                    await client.wait_for_ready(timeout=60)
                    reply = await client.execute_interactive("import os; print(os.getpid())", timeout=60,
                                                             output_hook=lambda msg: answers.append(
                                                                 msg["content"].get("text", "").strip()))
                    assert reply["content"]["status"] == "ok"
                finally:
                    client.stop_channels()
            return answers
        finally:
            assert managers[0].ip != managers[1].ip
            await asyncio.gather(*(m.shutdown_kernel(now=True) for m in managers))

    pids = [a for a in asyncio.run(start_two()) if a]
    assert len(pids) == 2 and pids[0] != pids[1], pids
    assert list(tmp_path.iterdir()) == []
