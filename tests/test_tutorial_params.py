"""`sidecarlab run -p NAME VALUE`: a parameter no notebook to run has is refused before anything runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import BIN, ROOT


def test_unknown_parameters_are_refused_with_the_known_ones(tmp_path: Path) -> None:
    res = subprocess.run([str(BIN / "sidecarlab"), "run", "01", "--out", str(tmp_path / "out"),
                          "-p", "nosuch", "1", "-p", "app_nmae", "x"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 1
    assert ("Unknown notebook parameters 'app_nmae', 'nosuch': the notebooks to run (01-push-app-with-sidecar) "
            "take app_name, ") in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    # refused before anything ran: no executed notebook, no summary
    assert not (tmp_path / "out" / "notebooks").exists()


def test_a_parameter_of_a_later_part_is_known_when_that_part_runs(tmp_path: Path) -> None:
    from sidecarlab import tutorial

    notebooks = tutorial.find_notebooks(["01", "03"], ROOT / "notebooks")
    tutorial.check_parameters(notebooks, {"s3_bucket": "b", "app_name": "a"})  # no error
    try:
        tutorial.check_parameters(notebooks[:1], {"s3_bucket": "b"})
    except tutorial.TutorialError as e:
        assert "'s3_bucket'" in str(e)
    else:
        raise AssertionError("s3_bucket is not a parameter of Part 1")


def test_each_notebook_is_given_only_the_parameters_it_declares() -> None:
    from sidecarlab import tutorial

    local = tutorial.load_params("local", ROOT / "notebooks" / "params")
    assert {"config_server_port", "local_cli", "learner", "target"} <= set(local)
    part1, part5 = tutorial.find_notebooks(["01", "05"], ROOT / "notebooks")
    assert tutorial.parameters_for(part1, local) == local  # Part 1 takes every one of them
    five = tutorial.parameters_for(part5, local)
    assert set(five) == set(local) & set(tutorial.notebook_parameters(part5))
    assert "config_server_port" not in five and five["target"] == "local" and "learner" in five
