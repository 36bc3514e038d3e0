"""Every `python -m jobs.X ...` command in README.md names a real job whose flags parse (flags never go stale)."""

import importlib
import re
import shlex

import pytest

from jobs.common import parse_job_args
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

README = re.sub(r"\\\n\s*", " ", (ROOT / "README.md").read_text())  # join shell line continuations
COMMANDS = [c.strip() for c in re.findall(r"python -m (jobs\.\w+[^\n#`]*)", README)]


def test_readme_has_commands():
    assert len(COMMANDS) >= 8


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command):
    module, *args = shlex.split(command)
    mod = importlib.import_module(module)
    assert callable(getattr(mod, "main", None)), f"{module} has no main()"
    if "--help" in args:
        with pytest.raises(SystemExit) as e:
            parse_job_args(args, module.split(".")[1])
        assert e.value.code == 0
    else:
        parse_job_args(args, module.split(".")[1])


def test_help_lists_every_key(capsys):
    with pytest.raises(SystemExit) as e:
        parse_job_args(["--help"], "compare")
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--ppo.kl_coef" in out and "--moe.num_experts" in out


def test_bad_flag_exits_2_naming_key(capsys):
    with pytest.raises(SystemExit) as e:
        parse_job_args(["--ppo.kl_cof", "1"], "ppo")
    assert e.value.code == 2
    assert "ppo.kl_cof" in capsys.readouterr().err
