"""The command line reads well: grouped ``--help`` with examples, ``--version``, a bare ``gradstop``."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import pytest

from gradstop.cli import main
from gradstop.cli.train import GROUPS
from gradstop.trainers import TrainConfig
from sims import names


def help_of(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_every_train_config_field_is_in_exactly_one_help_group():
    grouped = [name for _, fields in GROUPS.values() for name in fields]
    duplicated = sorted({n for n in grouped if grouped.count(n) > 1})
    assert not duplicated, f"fields in more than one group of gradstop.cli.train.GROUPS: {duplicated}"
    missing = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in grouped]
    assert not missing, f"TrainConfig fields in no group of gradstop.cli.train.GROUPS (add them there): {missing}"
    unknown = sorted(set(grouped) - {f.name for f in dataclasses.fields(TrainConfig)})
    assert not unknown, f"GROUPS names no TrainConfig field {unknown}"


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("gradstop ") and out.split()[1][0].isdigit()


def test_a_bare_gradstop_prints_its_help_and_an_unknown_command_is_an_error(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: gradstop" in out and "examples:" in out
    for command in ("train", "play", "diagnose", "check", "sweep", "figures"):
        assert f"    {command} " in out
    with pytest.raises(SystemExit) as done:
        main(["bogus"])
    assert done.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err


def test_train_help_shows_its_groups_the_simulators_and_readable_defaults(capsys):
    out = help_of(capsys, "train")
    for title in GROUPS:
        assert f"\n{title}:\n" in out, f"no group {title!r} in gradstop train --help"
    for name in names():
        assert name in out
    assert "brax:<env>" in out and "package.module:Class" in out
    assert "--param KEY=VALUE" in out and "--param poles=2" in out
    assert "(default: 64,64)" in out and "(default: 100; shac: 256)" in out
    assert "{" not in out and "}" not in out, "a Python dict or set in gradstop train --help"
    assert "examples:" in out and "--preset literature --param poles=2" in out and "--algo shac" in out
    assert "--flow FLOWS, --stop FLOWS" in out and "--shuffle, --no-shuffle" in out


def test_the_train_help_groups_keep_every_flag_in_its_group(capsys):
    out = help_of(capsys, "train")
    sections = {}  # a section runs from its "title:" line (unindented) to the next one
    for block in re.split(r"\n(?=\S[^\n]*:\n)", out):
        title, _, body = block.partition(":\n")
        sections[title.strip()] = body
    assert "--window" in sections["SHAC"] and "--lr " in sections["optimizer"] and "--hidden" in sections["policy"]
    assert "--out" in sections["output"] and "--on-nonfinite" in sections["output"] and "--sim" in sections["run"]


@pytest.mark.parametrize("command", ["play", "diagnose", "check", "sweep", "figures"])
def test_every_command_help_has_examples(capsys, command):
    out = help_of(capsys, command)
    assert "examples:" in out and f"gradstop {command} " in out


def test_flags_still_override_a_config_only_where_given(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TrainConfig(horizon=7, shuffle=False, hidden=(4,)).to_dict()))
    assert main(["train", "--config", str(path), "--lr", "0.01", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["horizon"] == 7 and printed["shuffle"] is False and printed["hidden"] == [4] and printed["lr"] == 0.01
    assert main(["train", "--config", str(path), "--shuffle", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["shuffle"] is True


def test_python_m_gradstop_without_a_command_prints_help():
    done = subprocess.run([sys.executable, "-m", "gradstop"], capture_output=True, text=True)
    assert done.returncode == 0 and "Run 'gradstop COMMAND --help'" in done.stdout
