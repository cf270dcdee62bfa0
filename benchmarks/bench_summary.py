"""Time ``convkit.summary`` against ``torchinfo.summary`` on the same models, in one run; print JSON.

convkit traces the model on the meta device (no arithmetic, no memory); torchinfo runs a real
forward pass. Both get the same ``nn.Module`` with real weights (torchinfo needs them; built once with
``weights=None``, construction not timed), and convkit is also timed from the zoo name, building the
model on the meta device. After one warm-up call of each, the two are timed alternately, ``--repeat``
rounds (convkit, then torchinfo, then convkit, ...), and each figure is the median of its rounds, so
a change of machine load touches both. ``--all`` runs every torchvision classifier
(``torchvision.models.list_models(module=torchvision.models)``); the report ends with the median,
minimum and maximum speed-up, and the load average before and after (``os.getloadavg``).

With ``--memory`` and a CUDA device, it also compares convkit's predicted training memory for one
step (weights + gradients + optimizer state + saved activations + input) with
``torch.cuda.max_memory_allocated`` over one real training step, for LeNet-5, VGG-16 and ResNet-50
at batch 32 and 64.

Usage::

    python benchmarks/bench_summary.py                    # resnet152 vgg16 resnet50 alexnet at 224x224
    python benchmarks/bench_summary.py --models resnet18 --repeat 3
    python benchmarks/bench_summary.py --all --out benchmarks/results/summary_speed.json
    python benchmarks/bench_summary.py --memory           # on a machine with a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings

import torch
from torch import nn

DEFAULT_MODELS = ["resnet152", "vgg16", "resnet50", "alexnet"]
# classifiers that cannot take 224x224 in training mode (convkit traces in training mode): their minimum
MIN_SIZE = {"inception_v3": (3, 299, 299)}  # the auxiliary head's 5x5 convolution needs 17x17 at Mixed_6e
MEMORY_MODELS = [("lenet5", (1, 32, 32)), ("vgg16", (3, 224, 224)), ("resnet50", (3, 224, 224))]


def _best(fn, repeat: int) -> float:
    fn()  # warm-up: imports, first-call caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _alternate(fns: list, repeat: int) -> list[float]:
    """Median seconds of each function, called in turn ``repeat`` times after one warm-up call of each."""
    for fn in fns:
        fn()  # warm-up: imports, first-call caches
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - start)
    return [statistics.median(ts) for ts in times]


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(name: str, torchvision_only: bool = False) -> tuple[nn.Module, str]:
    """A real (CPU, initialised) model: convkit's zoo when it has the name, else torchvision's (``weights=None``)."""
    try:
        if torchvision_only:
            raise ImportError
        from convkit.models import create_model, list_models

        if name in list_models():
            return create_model(name), "convkit"
    except ImportError:
        pass
    import torchvision

    return torchvision.models.get_model(name, weights=None), "torchvision"


def bench_speed(names: list[str], input_size: tuple[int, ...], repeat: int, log=None,
                torchvision_only: bool = False) -> dict:
    import torchinfo

    from convkit.inspect import summary

    results = {}
    for name in names:
        try:
            model, source = _build(name, torchvision_only)
        except Exception as err:  # noqa: BLE001 - a model that cannot be built is reported, not fatal
            results[name] = {"error": f"{type(err).__name__}: {err}"}
            continue
        model.eval()
        own_size = input_size
        if input_size == (3, 224, 224):
            own_size = MIN_SIZE.get(name, input_size)
        size = (1, *own_size)

        def ours(m=model, own_size=own_size):
            return summary(m, own_size)

        def theirs(m=model, size=size):
            with torch.no_grad():
                return torchinfo.summary(m, input_size=size, verbose=0)

        try:
            convkit_s, torchinfo_s = _alternate([ours, theirs], repeat)
            a, b = ours(), theirs()
        except Exception as err:  # noqa: BLE001
            results[name] = {"error": f"{type(err).__name__}: {err}"}
            del model
            continue
        by_name_s = None
        if source == "convkit":
            by_name_s = _alternate([lambda n=name, s=own_size: summary(n, s)], repeat)[0]
        results[name] = {
            "source": source,
            "input": "x".join(map(str, own_size)),
            "convkit_s": round(convkit_s, 4),
            "convkit_from_name_s": round(by_name_s, 4) if by_name_s is not None else None,
            "torchinfo_s": round(torchinfo_s, 4),
            "speedup": round(torchinfo_s / convkit_s, 2),
            "parameters": a.totals["parameters"],
            "parameters_equal": a.totals["parameters"] == b.total_params,
            "macs_convkit": a.totals["macs"],
            "macs_torchinfo": b.total_mult_adds,
        }
        if log is not None:
            print(f"{name}: convkit {convkit_s * 1e3:.1f} ms, torchinfo {torchinfo_s * 1e3:.1f} ms, "
                  f"{torchinfo_s / convkit_s:.2f}x", file=log, flush=True)
        del model, a, b
    return results


def _overall(results: dict) -> dict:
    ratios = {n: r["speedup"] for n, r in results.items() if "speedup" in r}
    if not ratios:
        return {}
    times = [r["convkit_s"] for r in results.values() if "convkit_s" in r]
    slowest = min(ratios, key=ratios.get)
    return {
        "models": len(ratios),
        "failed": sorted(n for n, r in results.items() if "error" in r),
        "median_speedup": round(statistics.median(ratios.values()), 2),
        "min_speedup": ratios[slowest],
        "min_speedup_model": slowest,
        "max_speedup": max(ratios.values()),
        "slower_than_torchinfo": sorted(n for n, v in ratios.items() if v < 1),
        "convkit_median_s": round(statistics.median(times), 4),
        "convkit_max_s": max(times),
    }


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
    parser.add_argument("--all", action="store_true", help="every torchvision classifier (overrides --models)")
    parser.add_argument("--input", default="3x224x224", help="per-sample input CxHxW")
    parser.add_argument("--repeat", type=int, default=3, help="alternating timed rounds (the median is kept)")
    parser.add_argument("--out", help="also write the JSON report to this file")
    parser.add_argument("--progress", action="store_true", help="one line per model on stderr")
    parser.add_argument("--memory", action="store_true", help="also compare predicted and CUDA peak memory")
    args = parser.parse_args(argv)
    input_size = tuple(int(s) for s in args.input.lower().split("x"))
    names = args.models
    if args.all:
        import torchvision

        names = torchvision.models.list_models(module=torchvision.models)
    warnings.simplefilter("ignore")  # ShapeWarnings and torchinfo's own chatter are not what is measured
    load_before = os.getloadavg()
    import sys

    models = bench_speed(names, input_size, args.repeat, log=sys.stderr if args.progress else None,
                         torchvision_only=args.all)
    report = {
        "input": args.input,
        "repeat": args.repeat,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu": _cpu(),
        "cores": os.cpu_count(),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "overall": _overall(models),
        "models": models,
    }
    if args.memory:
        report["memory"] = bench_memory()
    text = json.dumps(report, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
