"""One CLI schema: the training options generated from TrainConfig's fields, one error contract, no import cycle."""

import argparse
import ast
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

import convkit
from convkit.cli.main import _parser, main
from convkit.cli.train_cmds import _config, add_train_arguments, config_overrides
from convkit.errors import ConvkitError
from convkit.train.config import TrainConfig, opt

CLI_DIR = Path(convkit.__file__).parent / "cli"

# The flags `convkit train` had before its options were generated: each keeps its name.
FLAGS = ["--config", "--data", "--data-dir", "--test-data", "--limit", "--test-limit", "--stream", "--no-stream",
         "--workers", "--augment", "--no-augment", "--model-arg", "--epochs", "--batch-size", "--eval-batch-size",
         "--optimizer", "--lr", "--momentum", "--nesterov", "--no-nesterov", "--weight-decay", "--schedule",
         "--warmup-epochs", "--step-size", "--gamma", "--label-smoothing", "--grad-clip", "--ema", "--early-stopping",
         "--tta", "--no-tta", "--precision", "--channels-last", "--no-channels-last", "--compile", "--cudnn-benchmark",
         "--no-cudnn-benchmark", "--device", "--threads", "--seed", "--deterministic", "--no-deterministic", "--name",
         "--runs-dir", "--checkpoint-every", "--log-every", "--quiet", "-q"]


def verb_parser(verb: str) -> argparse.ArgumentParser:
    return _parser()._subparsers._group_actions[0].choices[verb]


def field_actions(parser: argparse.ArgumentParser, config_class=TrainConfig) -> dict[str, list[argparse.Action]]:
    names = {f.name for f in fields(config_class)}
    actions: dict[str, list[argparse.Action]] = {}
    for action in parser._actions:
        if action.dest in names:
            actions.setdefault(action.dest, []).append(action)
    return actions


@pytest.mark.parametrize("verb", ["train", "lr-find"])
def test_every_config_field_is_an_option_with_help_and_the_validated_choices(verb):
    parser = verb_parser(verb)
    actions = field_actions(parser)
    assert set(actions) == {f.name for f in fields(TrainConfig)}
    for f in fields(TrainConfig):
        action = actions[f.name][0]
        assert action.help and f.metadata["help"] in action.help.replace("%%", "%"), f.name
        assert action.default is argparse.SUPPRESS, f.name  # not given: the config file's value stands
        choices = f.metadata["choices"]
        assert (tuple(action.choices) if action.choices else None) == choices, f.name
        for value in choices or ():  # what argparse offers, validation accepts; and nothing else
            assert getattr(TrainConfig(**{f.name: value}), f.name) == value
        if choices:
            with pytest.raises(ValueError, match=f"{f.name} must be one of {', '.join(choices)}"):
                TrainConfig(**{f.name: "nonsense"})
    option_strings = {s for a in parser._actions for s in a.option_strings}
    assert set(FLAGS) <= option_strings


def test_the_choices_are_declared_once():
    from convkit.train import config

    by_name = {f.name: f.metadata["choices"] for f in fields(TrainConfig)}
    assert by_name["optimizer"] is config.OPTIMIZERS and by_name["schedule"] is config.SCHEDULES
    assert by_name["precision"] is config.PRECISIONS


def test_a_field_added_to_the_dataclass_is_an_option(capsys):
    @dataclass
    class Recipe(TrainConfig):
        mixup_alpha: float = opt(0.0, group="data", help="mixup's alpha (0: off)")
        warmup: str = opt("linear", group="optimisation", choices=("linear", "cosine"), help="warm-up shape")

    parser = argparse.ArgumentParser(prog="convkit train")
    add_train_arguments(parser, Recipe)
    args = parser.parse_args(["--mixup-alpha", "0.2", "--warmup", "cosine", "--epochs", "2"])
    overrides = config_overrides(args, Recipe)
    assert overrides == {"mixup_alpha": 0.2, "warmup": "cosine", "epochs": 2}
    assert Recipe().replace(**overrides).mixup_alpha == 0.2
    with pytest.raises(SystemExit):
        parser.parse_args(["--warmup", "step"])
    assert "invalid choice: 'step'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="warmup must be one of linear, cosine"):
        Recipe(warmup="step")
    help_text = parser.format_help()
    assert "--mixup-alpha MIXUP_ALPHA" in help_text and "mixup's alpha (0: off) (default: 0.0)" in help_text


def test_a_field_without_an_option_is_refused():
    @dataclass
    class Recipe(TrainConfig):
        secret: int = 3

    with pytest.raises(TypeError, match="Recipe.secret has no command-line option"):
        add_train_arguments(argparse.ArgumentParser(), Recipe)


def test_options_given_override_the_config_file_and_the_others_keep_it(tmp_path):
    path = tmp_path / "c.yaml"
    TrainConfig(model="resnet20", epochs=5, lr=0.1, augment={"crop_padding": 4}, quiet=True).to_yaml(path)
    args = _parser().parse_args(["train", "--config", str(path), "--lr", "0.2", "--betas", "0.8", "0.99"])
    cfg = _config(args)
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.betas, cfg.augment, cfg.quiet) == (
        "resnet20", 5, 0.2, (0.8, 0.99), {"crop_padding": 4}, True)
    args = _parser().parse_args(["train", "lenet5", "--config", str(path), "--no-augment", "--no-quiet", "--compile"])
    cfg = _config(args)
    assert (cfg.model, cfg.augment, cfg.quiet, cfg.compile) == ("lenet5", {}, False, True)
    args = _parser().parse_args(["lr-find", "-q", "--compile", "aot_eager", "--model-arg", "widths=[8,16]"])
    assert config_overrides(args) == {"quiet": True, "compile": "aot_eager", "model_kwargs": {"widths": [8, 16]}}


# --- errors ------------------------------------------------------------------------------------------------------

def test_user_errors_are_convkit_errors_and_keep_their_builtin_base():
    from convkit.cli.common import CLIError
    from convkit.data.errors import DataFormatError, DatasetNotFoundError, DownloadError, LabelError
    from convkit.explain.animate import UnknownLayerError
    from convkit.explain.kernels import KernelError
    from convkit.explain.source import LayerError
    from convkit.inspect.trace import MetaUnsupportedError
    from convkit.layers.shapes import ShapeError
    from convkit.models import ModelFileError, UnknownModelError
    from convkit.report import ReportError
    from convkit.train import CheckpointError, NonFiniteLossError

    bases = {CheckpointError: ValueError, UnknownModelError: KeyError, ModelFileError: ValueError,
             ShapeError: ValueError, DataFormatError: ValueError, LabelError: ValueError,
             DatasetNotFoundError: FileNotFoundError, DownloadError: OSError, LayerError: ValueError,
             KernelError: ValueError, UnknownLayerError: KeyError, ReportError: ValueError,
             NonFiniteLossError: RuntimeError, MetaUnsupportedError: RuntimeError, CLIError: Exception}
    for cls, base in bases.items():
        assert issubclass(cls, ConvkitError) and issubclass(cls, base), cls
        assert cls.exit_code == (1 if cls is NonFiniteLossError else 2)
    assert str(UnknownModelError("unknown model 'x'")) == "unknown model 'x'"  # a sentence, not a quoted key


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_an_error_is_one_line_with_exit_code_2_and_debug_raises_it(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv, message in [(["summary", "resnet19"], "unknown model 'resnet19'"),  # a ConvkitError
                          (["train", "--lr", "-1"], "lr must be positive, got -1.0"),  # a plain ValueError
                          (["train", "--config", "nothing.yaml"], "--config nothing.yaml: no such file"),
                          (["kernel", "blur", "x.png"], "x.png: no such image file")]:
        code, out, err = run(capsys, *argv)
        assert (code, out) == (2, "") and err.startswith(f"convkit: error: {message}") and err.count("\n") == 1
    (tmp_path / "no").write_text("")  # a plain OSError: a file where the CSV's folder should be
    code, _, err = run(capsys, "summary", "lenet5", "--csv", str(tmp_path / "no" / "rows.csv"))
    assert code == 2 and err == f"convkit: error: {tmp_path / 'no'}: not a directory (a file stands where a folder is needed)\n"
    with pytest.raises(ConvkitError, match="unknown model 'resnet19'"):  # with its traceback
        main(["--debug", "summary", "resnet19"])
    from convkit.explain.kernels import KernelError

    with pytest.raises(KernelError, match="unknown kernel 'sharpn'"):
        main(["--debug", "kernel", "sharpn", "x.png"])


def test_a_non_finite_loss_exits_1(capsys, monkeypatch):
    from convkit.train import NonFiniteLossError

    def diverge(*args, **kwargs):
        raise NonFiniteLossError("the loss is nan at epoch 1, step 3; the last good checkpoint is runs/x")

    monkeypatch.setattr(sys.modules["convkit.train"], "train", diverge)
    code, _, err = run(capsys, "train", "--epochs", "1")
    assert code == 1
    assert err == "convkit: error: the loss is nan at epoch 1, step 3; the last good checkpoint is runs/x\n"


def test_the_command_prints_no_traceback_unless_debug(tmp_path):
    result = subprocess.run([sys.executable, "-m", "convkit", "animate", "--model", "lenet5", "--layer", "c9"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("convkit: error: lenet5 has no layer 'c9'")
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


# --- the cli package's layering --------------------------------------------------------------------------------

def cli_imports(module: str) -> set[str]:
    """The convkit.cli modules that `module` imports anywhere (at the top or inside functions)."""
    tree = ast.parse((CLI_DIR / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n.split(".")[2] for n in names if n.startswith("convkit.cli.") and n.split(".")[2] != "__init__"}


VERBS = ["train_cmds", "explain_cmds", "kernel_cmds", "report_cmds", "features_cmds", "segment_cmds", "export_cmds",
         "serve_cmds"]


def test_the_verb_modules_import_only_common_and_common_imports_no_cli_module():
    verbs = set(VERBS)
    assert {p.stem for p in CLI_DIR.glob("*.py")} == verbs | {"__init__", "common", "main"}
    assert cli_imports("common") == set()
    for verb in verbs:
        assert cli_imports(verb) == {"common"}, verb
    assert cli_imports("main") == verbs | {"common"}


def test_each_cli_module_imports_alone():
    """Each module imported into a fresh convkit.cli (in one interpreter: the rest of convkit, 5 s to import, is
    shared) pulls in only what it names."""
    check = ("import importlib, sys, convkit\n"
             "out = {}\n"
             "for m in sys.argv[1:]:\n"
             "    for k in [k for k in sys.modules if k.startswith('convkit.cli')]: del sys.modules[k]\n"
             "    importlib.import_module('convkit.cli.' + m)\n"
             "    out[m] = sorted(k[12:] for k in sys.modules if k.startswith('convkit.cli.'))\n"
             "print(out)")
    modules = ["common", *VERBS, "main"]
    proc = subprocess.run([sys.executable, "-c", check, *modules], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = ast.literal_eval(proc.stdout.strip())
    assert loaded["common"] == ["common"]
    for verb in VERBS:
        assert loaded[verb] == sorted(["common", verb])
    assert len(loaded["main"]) == len(VERBS) + 2


def test_the_config_file_carries_each_option_s_help_and_reads_back():
    cfg = TrainConfig(model_kwargs={"widths": [8, 16]}, compile="aot_eager", name="a: b # c", betas=(0.8, 0.9))
    text = cfg.to_yaml()
    assert TrainConfig.from_yaml(text) == cfg
    assert "epochs: 8  # passes over the training set\n" in text
    assert "augment:  # augmentations, e.g." in text and "name: 'a: b # c'  # run folder name" in text
