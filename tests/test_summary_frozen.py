"""`convkit summary` with frozen parameters (issue 12): trainable and frozen counts per layer and in total, and a
finetune run folder summarised as its phase froze it (finetune.json)."""

import json
import shutil

import pytest

import convkit
from convkit.cli.main import main
from convkit.inspect.summary import FINETUNE_FILE, apply_run_freeze
from convkit.reuse import freeze
from convkit.reuse.freeze import FreezeError


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def counts_by_module(model):
    """Independent truth: {module name: (trainable, frozen)} from named_parameters, by requires_grad."""
    counts = {}
    for name, p in model.named_parameters():
        module = name.rpartition(".")[0]
        trainable, frozen = counts.get(module, (0, 0))
        counts[module] = (trainable + p.numel(), frozen) if p.requires_grad else (trainable, frozen + p.numel())
    return counts


def totals(model):
    params = list(model.parameters())
    return (sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params if not p.requires_grad))


# -- the table and the totals ------------------------------------------------------------------------------


def test_frozen_resnet18_rows_and_totals_match_named_parameters():
    model = convkit.create_model("resnet18")
    freeze(model, "layer4")
    trainable, frozen = totals(model)
    assert frozen == 2_782_784 and trainable == 8_906_728  # FreezeRecord's figures (tests/test_reuse_freeze.py)
    result = convkit.summary(model)
    truth = counts_by_module(model)
    rows = {r.name: r for r in result.rows if not r.repeat}
    assert set(truth) <= set(rows)
    for name, row in rows.items():
        assert (row.trainable_params, row.frozen_params) == truth.get(name, (0, 0)), name
        assert row.params == row.trainable_params + row.frozen_params
    assert (result.trainable_parameters, result.frozen_parameters) == (trainable, frozen)
    assert sum(r.frozen_params for r in result.rows) == frozen
    assert sum(r.trainable_params for r in result.rows) == trainable
    data = result.to_dict()
    assert (data["totals"]["trainable_parameters"], data["totals"]["frozen_parameters"]) == (trainable, frozen)
    assert data["layers"][0]["name"] == "conv1" and data["layers"][0]["frozen_params"] == 9408

    lines = str(result).splitlines()
    header = next(line for line in lines if line.startswith("Layer"))
    assert header.split()[4:7] == ["Params", "Trainable", "Frozen"]
    conv1 = next(line for line in lines if line.startswith("conv1 "))
    assert conv1.split()[4:7] == ["9,408", "-", "9,408"]  # all frozen
    fc = next(line for line in lines if line.startswith("fc "))
    assert fc.split()[3:6] == ["513,000", "513,000", "-"]  # all trainable (Linear has no Kernel/S/P cell)
    assert f"Trainable params: {trainable:,}" in lines
    assert f"Non-trainable params: {frozen:,}" in lines


def test_partly_frozen_layer_shows_both_counts():
    model = convkit.create_model("lenet5")
    model.features.c1.weight.requires_grad_(False)  # the bias (6) trains, the weight (150) does not
    row = convkit.summary(model)["features.c1"]
    assert (row.params, row.trainable_params, row.frozen_params) == (156, 6, 150)
    line = next(x for x in str(convkit.summary(model)).splitlines() if x.startswith("features.c1 "))
    assert line.split()[4:7] == ["156", "6", "150"]


def test_a_model_without_frozen_parameters_keeps_its_table():
    model = convkit.create_model("lenet5")
    text = str(convkit.summary(model))
    header = next(line for line in text.splitlines() if line.startswith("Layer"))
    assert header.split() == ["Layer", "Type", "Kernel/S/P", "Output", "Params", "MACs", "Act.", "Saved", "RF",
                              "size/jump/start"]
    assert "Trainable params:" not in text and "Non-trainable params:" not in text
    assert "Parameters:       61,706 (61,706 trainable, 0 frozen)" in text
    assert apply_run_freeze(model, "lenet5") is None


# -- a finetune run folder ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real run folder (fastcnn, one epoch on 64 images) and its model's parameter sizes by name."""
    result = convkit.train(model="fastcnn", epochs=1, limit=64, test_limit=32, quiet=True,
                           runs_dir=str(tmp_path_factory.mktemp("runs")))
    sizes = {n: p.numel() for n, p in result.model.named_parameters()}
    return result.run_dir, sizes


def finetune_run(trained, tmp_path, phases=None, text=None):
    """A copy of the trained run folder with a finetune.json: `phases`, or the raw `text`."""
    src, sizes = trained
    run_dir = tmp_path / "ft"
    shutil.copytree(src, run_dir)
    names = list(sizes)
    if phases is None:
        phases = [
            {"name": "head", "epochs": [1, 2], "frozen_params": names[:-2], "trainable_params": names[-2:],
             "frozen_stages": ["stage1", "stage2", "stage3"], "trainable_stages": ["head"]},
            {"name": "finetune", "epochs": [3, 4], "frozen_params": names[:3], "trainable_params": names[3:],
             "frozen_stages": ["stage1"], "trainable_stages": ["stage2", "stage3", "head"]},
        ]
    if isinstance(text, bytes):
        (run_dir / FINETUNE_FILE).write_bytes(text)
    else:
        (run_dir / FINETUNE_FILE).write_text(text if text is not None else json.dumps({"phases": phases}))
    return run_dir


def test_run_folder_summary_is_frozen_as_its_last_phase(trained, tmp_path, capsys):
    run_dir = finetune_run(trained, tmp_path)
    _, sizes = trained
    names = list(sizes)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    last = sum(sizes[n] for n in names[:3])
    code, out, err = run(capsys, "summary", run_dir)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"frozen as in phase 'finetune' of {run_dir} (finetune.json): {last:,} of "
                               f"{sum(sizes.values()):,} parameters (3 tensors)")
    assert f"Non-trainable params: {last:,}" in lines
    assert f"Trainable params: {sum(sizes.values()) - last:,}" in lines
    conv = next(line for line in lines if line.startswith("features.stage1.0.conv "))
    assert conv.split()[4:7] == [f"{sizes['features.stage1.0.conv.weight']:,}", "-",
                                 f"{sizes['features.stage1.0.conv.weight']:,}"]
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before  # nothing written

    head = sum(sizes[n] for n in names[:-2])
    code, out, err = run(capsys, "summary", run_dir, "--phase", "head", "--json")
    assert code == 0, err
    data = json.loads(out)  # stdout stays one JSON document; the line goes to stderr and into the JSON
    assert data["totals"]["frozen_parameters"] == head
    assert data["totals"]["trainable_parameters"] == sizes["fc.weight"] + sizes["fc.bias"]
    assert sum(r["frozen_params"] for r in data["layers"]) == head
    assert data["frozen_as"].startswith("frozen as in phase 'head' of") and data["frozen_as"] in err
    assert "stages ['stage1', 'stage2', 'stage3']" in data["frozen_as"]


def test_run_folder_without_finetune_json_is_unchanged(trained, capsys):
    code, out, _ = run(capsys, "summary", trained[0])
    assert code == 0
    assert "frozen as in phase" not in out and "Non-trainable params:" not in out
    assert f"({sum(trained[1].values()):,} trainable, 0 frozen)" in out


def test_apply_run_freeze_sets_exactly_the_phase(trained, tmp_path):
    run_dir = finetune_run(trained, tmp_path)
    model = convkit.resolve_model(run_dir, meta=True)
    assert all(p.requires_grad for p in model.parameters())  # checkpoints load trainable
    line = apply_run_freeze(model, run_dir, phase="head")
    assert "phase 'head'" in line
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == set(list(trained[1])[:-2])
    apply_run_freeze(model, run_dir)  # the last phase unfreezes what it trains
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == set(list(trained[1])[:3])


def one_line_error(capsys, *argv):
    code, out, err = run(capsys, "summary", *argv)
    assert code == 2 and out == ""
    assert err.startswith("convkit: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_unknown_phase_lists_the_phases(trained, tmp_path, capsys):
    run_dir = finetune_run(trained, tmp_path)
    err = one_line_error(capsys, run_dir, "--phase", "body")
    assert "'body'" in err and str(run_dir / FINETUNE_FILE) in err and "['head', 'finetune']" in err


def test_phase_for_a_model_that_is_not_a_finetune_run(trained, capsys):
    err = one_line_error(capsys, "lenet5", "--phase", "head")
    assert "'head'" in err and "'lenet5' is not a finetune run folder" in err
    err = one_line_error(capsys, trained[0], "--phase", "head")  # a plain training run has no phases
    assert "not a finetune run folder" in err


@pytest.mark.parametrize("text, expected", [
    ("{\"phases\": [", "not JSON (line 1, column 13"),
    (b"\xff\xfe{}", "not UTF-8 text (byte 0)"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("[1, 2]", "expected an object {\"phases\": [...], ...}, found [1, 2]"),
    ("{\"epochs\": 3}", "\"phases\" must be a non-empty list of phases, found no \"phases\""),
    ("{\"phases\": []}", "\"phases\" must be a non-empty list of phases, found []"),
    ("{\"phases\": {\"name\": \"head\"}}", "\"phases\" must be a non-empty list of phases, found {'name': 'head'}"),
    ("{\"phases\": [\"head\"]}", "phases[0] must be an object with name and frozen_params, found 'head'"),
    ("{\"phases\": [{\"name\": 3, \"frozen_params\": []}]}", "phases[0].name must be a string, found 3"),
    ("{\"phases\": [{\"name\": \"a\", \"frozen_params\": []}, {\"name\": \"b\"}]}",
     "phases[1].frozen_params must be a list of parameter names, found None"),
    ("{\"phases\": [{\"name\": \"a\", \"frozen_params\": \"fc.weight\"}]}",
     "phases[0].frozen_params must be a list of parameter names, found 'fc.weight'"),
    ("{\"phases\": [{\"name\": \"a\", \"frozen_params\": [1, 2]}]}",
     "phases[0].frozen_params must be a list of parameter names, found [1, 2]"),
    ("{\"phases\": [{\"name\": \"a\", \"frozen_params\": [\"fc.weight\", \"layer9.weight\"]}]}",
     "phase 'a' freezes 1 parameters the model does not have: ['layer9.weight']"),
])
def test_malformed_finetune_json_is_one_line_naming_the_file(trained, tmp_path, capsys, text, expected):
    run_dir = finetune_run(trained, tmp_path, text=text)
    err = one_line_error(capsys, run_dir)
    assert err.startswith(f"convkit: error: {run_dir / FINETUNE_FILE}: ")
    assert expected in err
    with pytest.raises(FreezeError):  # the same from Python
        apply_run_freeze(convkit.resolve_model(run_dir, meta=True), run_dir)


def test_huge_list_of_unknown_names_is_cut(trained, tmp_path, capsys):
    names = [f"nope{i}." + "x" * 1000 for i in range(2000)]
    run_dir = finetune_run(trained, tmp_path, phases=[{"name": "a", "frozen_params": names}])
    err = one_line_error(capsys, run_dir)
    assert "freezes 2000 parameters the model does not have" in err and len(err) < 1000
