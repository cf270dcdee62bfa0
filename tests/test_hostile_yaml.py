"""Careless and hostile YAML, and absurd models (issue 10): refused (bounded, never hanging) as one line naming the file and line.

Every YAML text convkit reads (model files, `--config` files, `--model-arg`/`--augment` values, a run's
config.yaml, the model file inside a checkpoint's metadata) goes through `convkit.utils.load_yaml`/`compose_yaml`.
Cases that used to take minutes and gigabytes (a 1 KB alias bomb, a model with billions of parameters, an input of
3x100000x100000) run the real CLI in a subprocess under an address-space cap (`RLIMIT_AS`, 3 GiB above what the
imports of torch and convkit reserve) and a time limit, so a regression fails here instead of exhausting the machine.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from convkit.cli.main import main
from convkit.models.reference import MAX_PARAMETERS, ModelTooLargeError, check_model_size
from convkit.train import TrainConfig
from convkit.utils import YAML_ALIAS_LIMIT, YAMLInputError, compose_yaml, load_yaml

SRC = str(Path(__file__).resolve().parents[1] / "src")

# 1 KB that expands to 9^9 (387 million) strings: nine lists, each nine aliases of the one before.
BOMB = "[" + ", ".join(["&a0 [x, x, x, x, x, x, x, x, x]"] +
                       [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]) + "]"

CAPPED = textwrap.dedent("""
    import resource, sys
    import torch
    import convkit.cli.main as cli
    cli._parser()  # every verb's imports, before the cap
    reserved = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
    cap = reserved + (3 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    sys.exit(cli.main(sys.argv[1:]))
""")


def capped_cli(*argv, cwd):
    """The real `convkit` in a subprocess capped at 3 GiB more than its imports; returns (code, out, err).

    The timeout guards against a hang (an unbounded alias expansion runs for minutes); it measures no speed."""
    result = subprocess.run([sys.executable, "-c", CAPPED, *map(str, argv)], cwd=cwd, capture_output=True, text=True,
                            timeout=120, env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    return result.returncode, result.stdout, result.stderr


def one_line_error(err: str) -> str:
    assert err.startswith("convkit: error: ") and err.count("\n") == 1, err[-2000:]
    return err


# --- the loader ----------------------------------------------------------------------------------------------

def test_plain_yaml_reads_as_safe_load_reads_it():
    texts = ["a: 1", "- [1, 2.5, {x: y}]\n- b", "", "x: 2020-01-01", "- &x a\n- *x\n- *x", "c: |\n  two\n  lines\n",
             "base: &b {lr: 0.1, w: [1, 2]}\nother:\n  <<: *b\n  lr: 0.2", "a: [.inf, null, no, '0x10', 0x10]"]
    for text in texts:
        assert load_yaml(text) == yaml.safe_load(text), text


@pytest.mark.parametrize("text, line, words", [
    (f"lr: 0.1\nw: {BOMB}\n", 2, "aliases expand this document past"),
    ("a: 1\nloop: &l [1, *l]\n", 2, "refers to a collection that contains it"),
    ("a: 1\nb: " + "[" * 100_000 + "]" * 100_000, 2, "nested deeper than 64 levels"),  # libyaml segfaulted
    ("a: 1\nb: *nowhere\n", 2, "undefined alias *nowhere"),
    ("a: 1\n---\na: 2\n", 2, "expected one YAML document"),
    ("a: 1\nb: !!python/object/apply:os.system [ls]\n", 2, "the tag '!!python/object/apply:os.system' is not allowed"),
    ("a: 1\nb: !custom 3\n", 2, "the tag '!custom' is not allowed"),
    ("a: 1\nb: !!int abc\n", 2, "not a value YAML can build"),
])
def test_hostile_yaml_is_refused_with_its_line(text, line, words):
    with pytest.raises(YAMLInputError) as caught:
        load_yaml(text, "f.yaml")
    assert str(caught.value).startswith(f"f.yaml:{line}: ") and words in str(caught.value)
    assert len(str(caught.value)) < 400


def test_aliases_within_the_bound_still_work():
    text = "base: &b [" + ", ".join(["1"] * 1000) + "]\n" + "\n".join(f"k{i}: *b" for i in range(YAML_ALIAS_LIMIT // 3000))
    data = load_yaml(text)
    assert data["k0"] is data["base"] and len(data) == 1 + YAML_ALIAS_LIMIT // 3000
    assert compose_yaml("") is None and load_yaml("") is None


# --- model files -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layers, line, words", [
    ("layers: [!!python/object:os.system ls]", 2, "the tag '!!python/object:os.system' is not allowed"),
    ("layers:\n  - conv3-8\n  - !!python/name:os.system x", 4, "the tag '!!python/name:os.system'"),
    ("layers:\n  - conv3-8\n  - conv: " + BOMB, 4, "aliases expand this document past"),
    ("layers: [conv3-8, " + BOMB + "]", 2, "aliases expand this document past"),
    ("layers:\n  - conv3-8\n  - residual: {filters: -4}\n  - gap", 4, "filters must be a whole number of at least 1, got -4"),
    ("layers: [conv3-0, gap, FC-10]", 2, "filters must be a whole number of at least 1, got 0"),
    ("layers:\n  - conv: {filters: 8, kernel: [3, 0]}", 3, "kernel must be a whole number of at least 1, got [3, 0]"),
    ("layers:\n  - conv3-8\n  - FC-0", 4, "units must be a whole number of at least 1, got 0"),
    ("layers:\n  - inception: [8, 8, 8, 8, 8, -1]", 3, "pool_proj must be a whole number of at least 1, got -1"),
    ("layers:\n  - maxpool: {size: 2, padding: -1}", 3, "padding must be a whole number, 0 or more, got -1"),
    ("layers:\n  - " + "x" * 100_000, 3, "unknown layer 'xxxxxxxx"),
])
def test_bad_model_files_are_one_line_errors_with_file_and_line(layers, line, words, tmp_path, capsys):
    path = tmp_path / "net.yaml"
    path.write_text(f"input: 1x28x28\n{layers}\n")
    code = main(["summary", str(path)])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert one_line_error(err).startswith(f"convkit: error: {path}:{line}: ") and words in err
    assert len(err) < 700  # long values are cut


def test_an_alias_bomb_in_a_model_file_under_a_memory_cap(tmp_path):
    (tmp_path / "bomb.yaml").write_text(f"input: 1x28x28\nlayers:\n  - conv3-8\n  - conv: {BOMB}\n")
    assert len((tmp_path / "bomb.yaml").read_text()) < 1100
    code, out, err = capped_cli("summary", "bomb.yaml", cwd=tmp_path)
    assert (code, out) == (2, "")
    assert one_line_error(err).startswith("convkit: error: bomb.yaml:4: aliases expand this document past")


def test_an_alias_bomb_in_a_checkpoints_model_file_under_a_memory_cap(tmp_path):
    text = f"input: 1x28x28\nlayers:\n  - conv3-8\n  - conv: {BOMB}\n"
    meta = {"model": {"kind": "file", "path": "net.yaml", "text": text, "num_classes": 10, "in_channels": 1},
            "classes": [str(i) for i in range(10)], "input_shape": [1, 28, 28]}
    save_file({"w": torch.zeros(1)}, str(tmp_path / "best.safetensors"), metadata={"convkit": json.dumps(meta)})
    code, out, err = capped_cli("summary", "best.safetensors", cwd=tmp_path)
    assert (code, out) == (2, "")
    assert one_line_error(err).startswith("convkit: error: best.safetensors: the model its metadata describes cannot "
                                          "be built: net.yaml:4: aliases expand this document past")


# --- config files and K=V options ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, line, words", [
    ("epochs: 1\nmodel: !!python/object:os.system ls\n", 2, "the tag '!!python/object:os.system' is not allowed"),
    ("epochs: 1\nlr: [1\n", None, "not valid YAML"),
    ("epochs: 1\n\noptimizer: " + "x" * 100_000 + "\n", 3, "optimizer must be one of sgd, adam, adamw, got 'xxx"),
    ("epochs: 1\nbetas: [a, b]\n", 2, "betas must be two numbers in [0, 1), got ['a', 'b']"),
    ("epochs: 1\naugment: {crop_padding: 2, flipx: 1}\n", 2, "unknown augmentation 'flipx'"),
    ("epochs: 1\nlrr: 3\n", 2, "unknown config key 'lrr'; did you mean 'lr'?"),
])
def test_bad_config_files_name_file_and_line(text, line, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    code = main(["train", "--config", "bad.yaml", "--runs-dir", "runs"])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "") and words in one_line_error(err) and len(err) < 700
    assert err.startswith(f"convkit: error: bad.yaml:{line}: " if line else "convkit: error: bad.yaml:")
    assert not (tmp_path / "runs").exists()


def test_an_alias_bomb_in_a_config_file_under_a_memory_cap(tmp_path):
    (tmp_path / "bomb.yaml").write_text(f"epochs: 1\nlr: {BOMB}\n")
    code, out, err = capped_cli("train", "--config", "bomb.yaml", "--runs-dir", "runs", cwd=tmp_path)
    assert (code, out) == (2, "") and not (tmp_path / "runs").exists()
    assert one_line_error(err).startswith("convkit: error: bomb.yaml:2: aliases expand this document past")


@pytest.mark.parametrize("option, value, words", [
    ("--model-arg", f"widths={BOMB}", "aliases expand this document past"),
    ("--augment", "x=!!python/object:os.system ls", "the tag '!!python/object:os.system' is not allowed"),
    ("--augment", "crop_padding=[1", "unbalanced brackets in 'crop_padding=[1'"),  # was silently dropped
])
def test_bad_key_values_are_usage_errors(option, value, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["train", option, value, "--runs-dir", "runs"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {option}: " in err and words in err and len(err) < 3000  # the usage, then one bounded line
    assert not (tmp_path / "runs").exists()


# --- resume with an edited config.yaml --------------------------------------------------------------------

def test_resume_says_which_edited_values_it_ignores(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--epochs", "1", "--limit", "64", "--test-limit", "32", "--batch-size", "32",
                 "--name", "r", "--quiet", "--runs-dir", "runs"]) == 0
    config = tmp_path / "runs" / "r" / "config.yaml"
    edited = config.read_text().replace("\nlr: 0.006", "\nlr: 0.5").replace("\nepochs: 1", "\nepochs: 3")
    config.write_text(edited + "bogus: 1\n")
    capsys.readouterr()
    assert main(["train", "--resume", "runs/r", "--quiet"]) == 0
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if line.startswith("convkit: warning: "))
    assert "runs/r/config.yaml differs from the run's own config" in warning
    assert "lr: 0.006 (run) vs 0.5 (file)" in warning and "epochs: 1 (run) vs 3 (file)" in warning
    assert "bogus: not a config key" in warning and "resuming with the run's values" in warning
    assert config.read_text() == edited + "bogus: 1\n"  # the edit is kept, not overwritten
    assert TrainConfig.from_yaml(edited).lr == 0.5  # a new run from the file gets the file's values


# --- absurd models ----------------------------------------------------------------------------------------

def test_real_builds_past_the_bound_are_refused_after_a_meta_count():
    with torch.device("meta"):
        huge = torch.nn.Linear(50_000, 50_000)  # 2.5 billion parameters
    with pytest.raises(ModelTooLargeError, match=r"huge: 2,500,050,000 parameters \(9.3 GiB as float32\): "
                                                 r"convkit builds at most 2,147,483,648 parameters"):
        check_model_size(huge, "huge")
    assert MAX_PARAMETERS == 2**31


@pytest.mark.parametrize("layers, words", [
    ("[conv3-100000000, FC-10]", "785,000,000,010 parameters (2.9 TiB as float32): convkit builds at most"),
    ("[conv3-100000000, gap, FC-10]", "2,000,000,010 parameters (7.5 GiB as float32): this exceeds the memory"),
])
def test_train_refuses_an_absurd_model_under_a_memory_cap(layers, words, tmp_path):
    (tmp_path / "big.yaml").write_text(f"input: 1x28x28\nlayers: {layers}\n")
    code, out, err = capped_cli("train", "big.yaml", "--epochs", "1", "--limit", "64", "--runs-dir", "runs",
                                         cwd=tmp_path)
    assert code == 2 and not (tmp_path / "runs").exists()
    assert one_line_error(err).startswith("convkit: error: big.yaml: ") and words in err


@pytest.mark.parametrize("argv, words", [
    (["big.yaml"], "Training memory:  6.3 TiB"),
    (["huge_input.yaml"], "input 3x100000x100000"),
    (["resnet18", "--input", "3x100000x100000"], "input 3x100000x100000"),
])
def test_summary_of_absurd_models_allocates_nothing(argv, words, tmp_path):
    (tmp_path / "big.yaml").write_text("input: 1x28x28\nlayers: [conv3-100000000, FC-10]\n")
    (tmp_path / "huge_input.yaml").write_text("input: 3x100000x100000\nlayers: [conv3-8, gap, FC-10]\n")
    code, out, err = capped_cli("summary", *argv, cwd=tmp_path)
    assert code == 0, err[-2000:]
    assert words in out
