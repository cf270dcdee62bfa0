"""torchrun with 2 processes (gloo, CPU) gives the weights of 1 process on the same global batch.

The model has no BatchNorm and no dropout: with them, each rank's statistics and masks are its own and the
two runs differ by design. The batch of 63 splits unevenly (32 + 31) to check the gradient weighting.
"""

import torch
from helpers import one_and_two_processes

MODEL = "name: plain\ninput: 1x28x28\nlayers: [conv3-8, maxpool, conv3-16, maxpool, FC-10]\n"


def test_two_processes_match_one_process(tmp_path):
    (tmp_path / "plain.yaml").write_text(MODEL)
    args = ["train", "plain.yaml", "--limit", "630", "--test-limit", "100", "--epochs", "2", "--batch-size", "63",
            "--threads", "1", "--quiet", "--runs-dir", "runs", "--lr", "0.05", "--augment",
            "horizontal_flip=1,crop_padding=2"]
    runs = one_and_two_processes(tmp_path, args)
    assert "cpu x2" in runs["stdout"]  # both processes took part
    a, b = runs["one"], runs["two"]
    assert a.keys() == b.keys()
    for key in a:
        assert not torch.equal(a[key], torch.zeros_like(a[key]))
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    # only rank 0 wrote the run folder, and its metrics are the global batch's
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["one", "two"]
    rows_one, rows_two = runs["rows_one"], runs["rows_two"]
    assert [r.split(",")[:4] for r in rows_one] == [r.split(",")[:4] for r in rows_two]
