"""The `scalegan` command's flags: one meaning per flag name across the subcommands, every flag in the README's
table, and bad input as one error line (exit status 2, no traceback)."""

import argparse
import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

import scalegan
from scalegan.cli import build_parser, main, options
from scalegan.family import FAMILIES
from scalegan.training import TrainConfig

README = Path(__file__).resolve().parents[1] / "README.md"

# A shared flag may have a different default in these subcommands (its meaning, type, choices and action stay the
# same): the default is each command's choice of how much or where, not a different meaning of the value given.
DEFAULT_MAY_DIFFER = {
    "--n": "how many images: sample draws a per-class grid when not told; eval takes 10,000, a metric's usual size",
    "--batch-size": "images per training step of different networks: the GAN (TrainConfig / preset) and the small "
                    "classifier",
    "--out-dir": "train writes to runs/demo when not told; train-classifier requires the folder, which eval "
                 "--backbone classifier:DIR then reads",
    "--channels-last": "train picks the layout per device (auto); eval keeps the feature network's reference "
                       "layout unless asked",
    "--resolution": "image size: prepare must be told the size it packs at; train-classifier takes the dataset's",
    "--data": "a dataset spec: training falls back to the demo's Fashion-MNIST; invert takes image files unless told",
}


def _subparsers(parser=None) -> dict[str, argparse.ArgumentParser]:
    parser = parser or build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _config_default(dest: str):
    """The default of a flag that ``scalegan train`` generates (argparse's is SUPPRESS: values resolve from
    TrainConfig, the preset and --config)."""
    if dest.startswith("objective."):
        name = dest.split(".", 1)[1]
        for family in FAMILIES.values():
            for f in dataclasses.fields(family.objective.Config):
                if f.name == name:
                    return f.default
        raise AssertionError(dest)
    return TrainConfig().flat()[dest]  # a run field or a section's setting, by its flat key


def _is_config_flag(action) -> bool:
    return action.dest in TrainConfig().flat() or action.dest.startswith("objective.")


def _flags() -> dict[str, dict[str, argparse.Action]]:
    """flag name (its first option string) -> {subcommand: action}; -h/--help left out."""
    flags: dict[str, dict[str, argparse.Action]] = {}
    for command, sub in _subparsers().items():
        for action in sub._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                flags.setdefault(action.option_strings[0], {})[command] = action
    return flags


def _type_name(kind) -> str:
    """A value type by name: the shared ones of scalegan/cli/options.py (positive_int, device, ...) or a builtin."""
    if kind is None or kind is str:
        return "str"  # argparse reads an untyped value as str
    names = [name for name, value in vars(options).items() if value is kind]
    return names[0] if names else f"{kind.__module__}.{kind.__qualname__}"


def _signature(command: str, action: argparse.Action) -> dict:
    if action.required:
        default = "<required>"
    elif action.default is argparse.SUPPRESS and command == "train" and _is_config_flag(action):
        default = _config_default(action.dest)
    else:
        default = action.default
    return {
        "action": type(action).__name__,
        "nargs": action.nargs,
        "type": _type_name(action.type),
        "choices": None if action.choices is None else tuple(action.choices),
        "default": default,
    }


def test_one_meaning_per_flag_name():
    shared = {flag: by_command for flag, by_command in _flags().items() if len(by_command) > 1}
    assert {"--device", "--threads", "--seed", "--batch-size", "--out-dir", "--data"} <= shared.keys()
    problems = []
    for flag, by_command in sorted(shared.items()):
        signatures = {command: _signature(command, action) for command, action in by_command.items()}
        for key in ("action", "nargs", "type", "choices", "default"):
            values = {command: s[key] for command, s in signatures.items()}
            if len({repr(v) for v in values.values()}) == 1:
                if key == "default" and flag in DEFAULT_MAY_DIFFER:
                    problems.append(f"{flag}: listed in DEFAULT_MAY_DIFFER but its default is the same: drop it")
                continue
            if key == "default" and flag in DEFAULT_MAY_DIFFER:
                continue
            problems.append(f"{flag}: {key} differs between subcommands: {values}")
    for flag in DEFAULT_MAY_DIFFER:
        if flag not in shared:
            problems.append(f"{flag}: listed in DEFAULT_MAY_DIFFER but not shared by two subcommands")
    assert not problems, "\n".join(problems)


def test_every_command_that_runs_a_model_takes_device_and_threads():
    flags = _flags()
    runs_a_model = {"train", "sample", "convert", "eval", "train-classifier", "export", "serve", "invert", "edit"}
    assert runs_a_model <= set(_subparsers())
    assert set(flags["--device"]) == runs_a_model and set(flags["--threads"]) == runs_a_model


def test_same_meaning_has_one_name():
    """Renamed flags stay gone: a second name for one meaning is what the table rule forbids."""
    flags = _flags()
    for old in ("--out", "--batch-size", "--format"):
        for command in ("sample", "eval", "convert"):
            assert command not in flags.get(old, {}), f"{command} {old}"
    assert set(flags["--max-batch"]) == {"sample", "eval", "serve", "edit"}
    assert set(flags["--batch-size"]) == {"train", "train-classifier"}


def _readme_table() -> tuple[str, list[tuple[str, str, str]]]:
    text = README.read_text()
    start = text.index("\n## Command-line flags\n")
    end = text.index("\n## ", start + 1)
    section = text[start:end]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            assert len(cells) == 3, line
            if cells[0] == "flag" or set(cells[0]) <= {"-", ":"}:
                continue  # the header and its separator
            rows.append(tuple(cells))
    assert rows, "no flags table in the README's 'Command-line flags' section"
    return section, rows


FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def test_readme_flags_table_lists_every_flag():
    flags = _flags()
    option_to_flag = {}
    for flag, by_command in flags.items():
        for action in by_command.values():
            for option in action.option_strings:
                option_to_flag[option] = flag
    section, rows = _readme_table()
    listed: dict[str, set[str]] = {}
    summary_rows = []
    for flag_cell, _meaning, commands_cell in rows:
        commands = {c.strip() for c in commands_cell.split(",")}
        names = FLAG.findall(flag_cell)
        if "--FIELD" in flag_cell:
            summary_rows.append(commands)
            continue
        assert names, f"README row without a flag: {flag_cell!r}"
        for name in names:
            assert name in option_to_flag, f"README lists {name}, which no subcommand has"
        for flag in {option_to_flag[name] for name in names}:  # --x / --no-x: one flag
            assert flag not in listed, f"README lists {flag} twice"
            listed[flag] = commands
            assert commands == set(flags[flag]), f"README: {flag} in {sorted(commands)}, the parser: " \
                                                 f"{sorted(flags[flag])}"
    assert summary_rows == [{"train"}], "README needs one `--FIELD` row (train's config flags) for train"
    for flag, by_command in flags.items():
        if flag in listed:
            continue
        # Unlisted: only train's generated config flags, which the `--FIELD` row covers.
        assert set(by_command) == {"train"} and _is_config_flag(by_command["train"]), \
            f"{flag} ({', '.join(by_command)}) is missing from the README's flags table"
    # Every flag the section mentions (paragraph and meanings too) exists: no stale names after a rename.
    for name in set(FLAG.findall(section)) - {"--help", "--version"}:
        assert name in option_to_flag, f"the README's flags section mentions {name}, which no subcommand has"


# ----------------------------------------------------------------------------------------------- bad input
def _config(tmp_path, text: str) -> str:
    path = tmp_path / "config.json"
    path.write_text(text)
    return str(path)


def _weights_with_ch(tmp_path, value) -> str:
    folder = tmp_path / f"weights_{value}"
    scalegan.weights.save_generator(scalegan.create_model("biggan-fmnist", ch=8, d_ch=8)[0], folder)
    config = json.loads((folder / "config.json").read_text())
    config["model"]["ch"] = value
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")

# (argv, a hint the error line must contain); a (kind, value) item of argv is made in tmp_path by the test
BAD_INPUT = [
    pytest.param(["train", "--dry-run", "--set", "ch=-4"], "must be > 0", id="set-negative"),
    pytest.param(["train", "--dry-run", "--set", "ch=abc"], "must be int", id="set-not-int"),
    pytest.param(["train", "--dry-run", "--set", "colour=3"], "known fields", id="set-unknown-field"),
    pytest.param(["train", "--dry-run", "--config", ("config", '{"lr_g": "fast"}')], "must be a finite float",
                 id="config-lr-string"),
    pytest.param(["train", "--dry-run", "--config", ("config", '{"lr_d": Infinity}')], "must be a finite float",
                 id="config-lr-infinite"),
    pytest.param(["train", "--dry-run", "--config", ("config", '{"batch_size": 1.5}')], "must be int",
                 id="config-batch-float"),
    pytest.param(["train", "--dry-run", "--config", ("config", '{"objective": {"n_d_steps": "two"}}')],
                 "must be int", id="config-objective-string"),
    pytest.param(["train", "--dry-run", "--config", ("config", '{"lr_g": ')], "not valid JSON",
                 id="config-broken-json"),
    pytest.param(["train", "--dry-run", "--config", ("config", "[1, 2]")], "expected a JSON object",
                 id="config-list"),
    pytest.param(["train", "--dry-run", "--config", ("config", '{"model_overrides": [1, 2]}')],
                 "must be a JSON object", id="config-overrides-list"),
    pytest.param(["train", "--dry-run", "--config", ("config", '{"objective": 3}')], "must be a JSON object",
                 id="config-objective-int"),
    pytest.param(["train", "--dry-run", "--config", ("missing", "")], "cannot read", id="config-missing"),
    pytest.param(["train", "--dry-run", "--lr-g", "nan"], "expected a finite number", id="lr-nan"),
    pytest.param(["train", "--dry-run", "--lr-g", "inf"], "expected a finite number", id="lr-inf"),
    pytest.param(["train", "--dry-run", "--iterations", "-1"], "must be >= 1", id="iterations-negative"),
    pytest.param(["train", "--dry-run", "--n-d-steps", "0"], "must be >= 1", id="n-d-steps-zero"),
    pytest.param(["train", "--dry-run", "--batch-size", "0"], "integer >= 1", id="batch-size-zero"),
    pytest.param(["train", "--device", "cuda", "--dry-run"], "use cpu", id="train-cuda", marks=NO_CUDA),
    pytest.param(["train", "--device", "tpu", "--dry-run"], "use cpu", id="train-tpu"),
    pytest.param(["sample", ("path", "X"), "--n", "-3"], "integer >= 1", id="sample-n-negative"),
    pytest.param(["sample", ("path", "X"), "--n", "abc"], "integer >= 1", id="sample-n-text"),
    pytest.param(["sample", ("path", "X"), "--truncation", "-0.5"], "number > 0", id="sample-truncation"),
    pytest.param(["sample", ("path", "X"), "--device", "cuda"], "use cpu", id="sample-cuda", marks=NO_CUDA),
    pytest.param(["sample", "/nonexistent"], "pass a run folder", id="sample-missing-source"),
    pytest.param(["eval", "a", "b", "--max-batch", "0"], "integer >= 1", id="eval-max-batch"),
    pytest.param(["info", "biggan-12"], "did you mean", id="info-unknown-preset"),
    pytest.param(["convert", "--list", "--device", "cuda"], "use cpu", id="convert-cuda", marks=NO_CUDA),
    pytest.param(["sample", ("weights_ch", "abc"), "--n", "2"], "must be int", id="weights-config-ch-text"),
    pytest.param(["sample", ("weights_ch", -4), "--n", "2"], "must be > 0", id="weights-config-ch-negative"),
]


@pytest.mark.parametrize("argv, hint", BAD_INPUT)
def test_bad_input_is_one_error_line(argv, hint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, not into the repository
    makers = {"config": lambda value: _config(tmp_path, value),
              "missing": lambda _: str(tmp_path / "missing.json"),
              "path": lambda value: str(tmp_path / value),
              "weights_ch": lambda value: _weights_with_ch(tmp_path, value)}
    resolved = [makers[item[0]](item[1]) if isinstance(item, tuple) else item for item in argv]
    assert main(resolved) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"scalegan {argv[0]}: error: "), lines[0]
    assert hint in lines[0], lines[0]
    assert out == ""
