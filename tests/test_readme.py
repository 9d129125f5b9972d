"""Every command of README.md, and those of docs/usage.md that a user runs, as the user types it (run by
conftest's `readme_runs`, see tests/readme_commands.py): each exits 0 and writes the files its section says it
writes. A renamed flag, a moved file or a wrong path in the README fails here."""
import os
import re

import pytest

from readme_commands import NOT_RUN, all_commands, skipped, written


def test_every_command_is_run_or_says_why_not():
    assert len(all_commands()) >= 15
    for start in NOT_RUN:
        assert any(c.startswith(start) for c in all_commands()), f"NOT_RUN names a command the docs no longer have: {start}"
    assert "python predict.py" in " ".join(all_commands())


@pytest.mark.parametrize("command", all_commands(), ids=lambda c: " ".join(c.split()[:3])[:40])
def test_command_runs_as_written(command, readme_runs, user_checkout):
    why = skipped(command)
    if why:
        pytest.skip(f"not run: {why}")
    run = readme_runs[command]
    assert not re.search(r"/path/to|\bDS/|\bVOC/|[A-Z]{4,}_[A-Z]+", run.typed), f"a placeholder is left: {run.typed}"
    assert run.proc.returncode == 0, f"{run.typed}\n{run.proc.stdout[-3000:]}\n{run.proc.stderr[-3000:]}"
    for name in written(command):
        path = os.path.join(user_checkout, name)
        assert os.path.isfile(path) and os.path.getmtime(path) >= run.started, f"{run.typed} did not write {name}"
