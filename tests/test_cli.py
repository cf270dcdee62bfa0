"""The convkit command: help with examples, the zoo listing, errors with suggestions."""

import json
import subprocess
import sys

import pytest
from conftest import EXAMPLES

from convkit.cli.main import main
from convkit.models import list_models


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("verb", [[], ["models"], ["summary"], ["train"], ["evaluate"], ["predict"], ["lr-find"],
                                  ["explain"], ["explain", "filters"], ["explain", "features"],
                                  ["explain", "attribution"], ["explain", "maximize"], ["kernel"], ["animate"],
                                  ["report"], ["features"]])
def test_every_help_shows_an_example(verb, capsys):
    # in-process: a subprocess per verb spends seconds importing torch (test_console_script_is_installed runs one)
    with pytest.raises(SystemExit) as exit_info:
        main([*verb, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "examples:" in out and f"convkit {' '.join(verb)}".strip() in out.split("examples:")[1]


def test_models_lists_the_whole_zoo_with_parameters(capsys):
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == set(list_models())
    for name in ["lenet5", "alexnet", "alexnet_lrn", "zfnet", "vgg11", "vgg11_lrn", "vgg13", "vgg16_c", "vgg16",
                 "vgg19", "vgg16_bn", "nin", "googlenet", "resnet18", "resnet34", "resnet50", "resnet101",
                 "resnet152", "fastcnn", "resnet20"]:
        assert name in rows, name
    assert rows["resnet18"]["parameters"] == 11_689_512  # torchvision's figure
    assert rows["vgg16"]["parameters"] == 138_357_544
    assert "Simonyan" in rows["vgg16"]["paper"]


def test_models_table_and_pattern(capsys):
    code, out, _ = run(capsys, "models", "vgg1?")
    assert code == 0
    assert "vgg16 " in out and "138,357,544" in out and "resnet" not in out


def test_unknown_model_suggests_close_names(capsys):
    code, _, err = run(capsys, "summary", "resnet19")
    assert code == 2
    assert "unknown model 'resnet19'" in err and "resnet18" in err


def test_bad_model_file_is_reported_with_its_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: 1x8x8\nlayers:\n  - conv3-8\n  - FC-x\n")
    code, _, err = run(capsys, "summary", str(bad))
    assert code == 2 and f"{bad}:4:" in err and "FC-x" in err


def test_bad_input_shape_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "convkit", "summary", "lenet5", "--input", "32x32"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "expected CxHxW" in result.stderr


def test_console_script_is_installed():
    result = subprocess.run(["convkit", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("convkit ")


def test_summary_of_a_model_file(capsys):
    code, out, _ = run(capsys, "summary", str(EXAMPLES / "lenet5.yaml"), "--json")
    assert code == 0
    assert json.loads(out)["totals"]["parameters"] == 61_706
