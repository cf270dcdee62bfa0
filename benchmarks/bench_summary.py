"""Time ``convkit.summary`` against ``torchinfo.summary`` on the same models, in one run; print JSON.

convkit traces the model on the meta device (no arithmetic, no memory); torchinfo runs a real
forward pass. Both get the same ``nn.Module`` with real weights (torchinfo needs them), and convkit
is also timed from the zoo name, building the model on the meta device. Each figure is the best of
``--repeat`` runs after one warm-up, so one-time imports are not counted.

With ``--memory`` and a CUDA device, it also compares convkit's predicted training memory for one
step (weights + gradients + optimizer state + saved activations + input) with
``torch.cuda.max_memory_allocated`` over one real training step, for LeNet-5, VGG-16 and ResNet-50
at batch 32 and 64.

Usage::

    python benchmarks/bench_summary.py                    # resnet152 vgg16 resnet50 alexnet at 224x224
    python benchmarks/bench_summary.py --models resnet18 --repeat 3
    python benchmarks/bench_summary.py --memory           # on a machine with a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import torch
from torch import nn

DEFAULT_MODELS = ["resnet152", "vgg16", "resnet50", "alexnet"]
MEMORY_MODELS = [("lenet5", (1, 32, 32)), ("vgg16", (3, 224, 224)), ("resnet50", (3, 224, 224))]


def _best(fn, repeat: int) -> float:
    fn()  # warm-up: imports, first-call caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _build(name: str) -> tuple[nn.Module, str]:
    """A real (CPU, initialised) model: convkit's zoo when it has the name, else torchvision's."""
    try:
        from convkit.models import create_model, list_models

        if name in list_models():
            return create_model(name), "convkit"
    except ImportError:
        pass
    import torchvision

    return getattr(torchvision.models, name)(), "torchvision"


def bench_speed(names: list[str], input_size: tuple[int, ...], repeat: int, torchinfo_repeat: int) -> dict:
    import torchinfo

    from convkit.inspect import summary

    results = {}
    for name in names:
        model, source = _build(name)
        model.eval()
        ours = summary(model, input_size)
        convkit_s = _best(lambda m=model: summary(m, input_size), repeat)
        by_name_s = _best(lambda n=name: summary(n, input_size), repeat) if source == "convkit" else None
        with torch.no_grad():
            theirs = torchinfo.summary(model, input_size=(1, *input_size), verbose=0)
            torchinfo_s = _best(lambda m=model: torchinfo.summary(m, input_size=(1, *input_size), verbose=0),
                                torchinfo_repeat)
        results[name] = {
            "source": source,
            "convkit_s": round(convkit_s, 4),
            "convkit_from_name_s": round(by_name_s, 4) if by_name_s is not None else None,
            "torchinfo_s": round(torchinfo_s, 4),
            "speedup": round(torchinfo_s / convkit_s, 1),
            "parameters": ours.totals["parameters"],
            "parameters_equal": ours.totals["parameters"] == theirs.total_params,
            "macs_convkit": ours.totals["macs"],
            "macs_torchinfo": theirs.total_mult_adds,
        }
        del model
    return results


def _step_peak(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> int:
    """``torch.cuda.max_memory_allocated`` over one training step, after a warm-up step."""
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    step()  # warm-up: optimizer state, cuDNN algorithm choice
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def bench_memory(batches=(32, 64), optimizer: str = "momentum") -> dict:
    """Predicted vs measured peak of one training step on CUDA (SGD with momentum, cross-entropy)."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    from convkit.inspect import summary

    device = torch.device("cuda")
    results = {}
    for name, size in MEMORY_MODELS:
        model = _build(name)[0].to(device).train()
        classes = 10 if name == "lenet5" else 1000
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        for batch in batches:
            x = torch.randn(batch, *size, device=device)
            y = torch.randint(0, classes, (batch,), device=device)
            measured = _step_peak(model, opt, x, y)
            predicted = summary(model, size, batch_size=batch, optimizer=optimizer).memory["training"]["total"]
            results[f"{name}@{batch}"] = {
                "predicted_bytes": predicted,
                "measured_bytes": measured,
                "ratio": round(predicted / measured, 4),
            }
        model.cpu()
        torch.cuda.empty_cache()
    results["device"] = torch.cuda.get_device_name()
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--input", default="3x224x224", help="per-sample input CxHxW")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of convkit (best is kept)")
    parser.add_argument("--torchinfo-repeat", type=int, default=2, help="timed runs of torchinfo")
    parser.add_argument("--memory", action="store_true", help="also compare predicted and CUDA peak memory")
    args = parser.parse_args(argv)
    input_size = tuple(int(s) for s in args.input.lower().split("x"))
    warnings.simplefilter("ignore")  # ShapeWarnings and torchinfo's own chatter are not what is measured
    report = {
        "input": args.input,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "models": bench_speed(args.models, input_size, args.repeat, args.torchinfo_repeat),
    }
    if args.memory:
        report["memory"] = bench_memory()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
