"""Bad config values and files are refused before any work, as one line naming the field (issue 10's first part).

Each case runs the real CLI (`convkit.cli.main.main`) and checks the exit code, that nothing was printed to
stdout, that stderr is one line naming the field or file and what was expected, and that no run folder appeared.
"""

import math

import pytest

from convkit.cli.main import main
from convkit.errors import ConvkitError
from convkit.train import TrainConfig
from convkit.train.config import ConfigError


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, message", [
    (["--limit", "-5"], "limit must be at least 1 (or null: all), got -5"),
    (["--test-limit", "0"], "test_limit must be at least 1"),
    (["--weight-decay", "-1"], "weight_decay must be at least 0, got -1.0"),
    (["--grad-clip", "-1"], "grad_clip must be at least 0 (0: off), got -1.0"),
    (["--threads", "0"], "threads must be at least 1 (or null: all cores), got 0"),
    (["--lr", "nan"], "lr must be positive, got nan"),
    (["--lr", "inf"], "lr must be positive, got inf"),
    (["--momentum", "1.5"], "momentum must lie in [0, 1), got 1.5"),
    (["--warmup-epochs", "-0.5"], "warmup_epochs must be at least 0, got -0.5"),
    (["--betas", "0.9", "1.0"], "betas must be two numbers in [0, 1), got [0.9, 1.0]"),
    (["--name", "../x"], "name must be a plain folder name under runs_dir"),
    (["--name", ".."], "name must be a plain folder name under runs_dir"),
    (["--task", "detektion"], "task must be one of classification"),
])
def test_bad_values_are_one_line_errors_and_nothing_runs(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "train", "--runs-dir", str(tmp_path / "runs"), *argv)
    assert (code, out) == (2, "") and err.startswith("convkit: error: ")
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("text, message", [
    ("epochs: 2\nlr: abc\n", "bad.yaml:2: lr must be a number, got 'abc' (str)"),
    ("lr: [1]\n", "bad.yaml:1: lr must be a number, got [1] (list)"),
    ('epochs: 2\n\nbatch_size: "128"\n', "bad.yaml:3: batch_size must be int, got '128' (str)"),
    ("epochs: true\n", "bad.yaml:1: epochs must be int, got True (bool)"),
    ("lr: [1\nepochs: 2\n", "bad.yaml:2: not valid YAML"),
    ("- 1\n- 2\n", "bad.yaml: a config is a mapping of option: value, got list"),
])
def test_bad_config_files_name_the_file_and_field(text, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    code, out, err = run(capsys, "train", "--config", "bad.yaml")
    assert (code, out) == (2, "") and err.startswith(f"convkit: error: {message}") and err.count("\n") == 1


def test_summary_refuses_a_head_of_no_classes(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["summary", "lenet5", "--num-classes", "0"])
    assert exit_.value.code == 2
    assert "--num-classes: expected a whole number of at least 1, got '0'" in capsys.readouterr().err


def test_config_errors_are_convkit_errors_from_python_too():
    with pytest.raises(ConfigError, match="batch_size must be int") as caught:
        TrainConfig(batch_size="128")
    assert isinstance(caught.value, ConvkitError) and isinstance(caught.value, ValueError)
    # the edges themselves are accepted
    cfg = TrainConfig(limit=1, weight_decay=0, grad_clip=0, threads=1, momentum=0, lr=1, name="run-1")
    assert (cfg.limit, cfg.lr, cfg.name) == (1, 1, "run-1") and not math.isnan(cfg.lr)


@pytest.mark.parametrize("arg, message", [
    ("bogus=1", "fastcnn: cannot be built with num_classes=10, in_channels=1, bogus=1: "),
    ("widths=3", "fastcnn: cannot be built with num_classes=10, in_channels=1, widths=3: "),
])
def test_a_model_argument_the_builder_refuses_is_named(arg, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "train", "--model-arg", arg, "--epochs", "1", "--limit", "8")
    assert (code, out) == (2, "") and err.startswith(f"convkit: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
    from convkit.models import ModelArgumentError, create_model

    with pytest.raises(ModelArgumentError, match="bogus=1") as caught:
        create_model("resnet18", bogus=1)
    assert isinstance(caught.value.__cause__, TypeError)  # --debug still shows the builder's own error
