"""Stages of a network, freezing up to a stage, the batch-norm policy and per-stage parameter groups.

The lectures' fine-tuning recipe: a new head trained on a frozen body, then the deepest stages unfrozen with a
smaller learning rate. A *stage* is a group of layers at one depth (a ResNet's ``layer3``, a VGG block between
two max pools); :func:`model_stages` lists them from input to output, the head last. :func:`freeze` makes the
shallow stages untrainable and returns a JSON-able :class:`FreezeRecord`; :func:`apply_bn_policy` puts the
batch-norm layers of frozen stages back in eval mode after every ``model.train()`` (their running statistics
stay the pre-trained ones); :func:`param_groups` gives an optimizer one named group per trainable stage.

>>> model = convkit.create_model("resnet18", num_classes=10)
>>> record = freeze(model, trainable=1)
>>> record.trainable_stages
['layer4', 'head']
>>> [g["name"] for g in param_groups(model, lr=0.1, stage_lrs=0.5)], [g["lr"] for g in param_groups(model, 0.1, 0.5)]
(['layer4', 'head'], [0.05, 0.1])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

from convkit.errors import ConvkitError
from convkit.models.base import _POOLS, pool_blocks

__all__ = ["BN_POLICIES", "FreezeError", "FreezeRecord", "Stage", "apply_bn_policy", "freeze", "model_stages",
           "param_groups"]

BN_POLICIES = ("freeze", "train")


class FreezeError(ValueError, ConvkitError):
    """A stage, a number of stages or a policy that the model does not have."""


@dataclass
class Stage:
    """One stage of a network.

    Attributes:
        name: ``"stem"``, ``"layer3"``, ``"block2"``, ``"head"``...
        modules: qualified names of the modules that make it up (a parameter belongs to the stage whose module
            name is its longest prefix).
        params: qualified names of its parameters, in the model's order.
    """

    name: str
    modules: list[str]
    params: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The stage as JSON-able values."""
        return {"name": self.name, "modules": list(self.modules), "params": list(self.params)}


def _default_layout(model: nn.Module) -> list[tuple[str, list[str]]]:
    """Top-level children with parameters, each a stage (parameterless ones join the next), the last one the head.

    Leaf layers before the first container form the ``stem`` (torchvision's ResNets: conv1, bn1); a
    ``nn.Sequential`` child with pooling layers in it is split after each pool (``features`` of torchvision's
    VGG: ``features.block1``...). For a classifier whose ``classifier_name`` is a top-level child, that child
    is the head and any later children join it.
    """
    head_name = getattr(model, "classifier_name", None)
    head_top = head_name.split(".")[0] if isinstance(head_name, str) else None
    children = list(model.named_children())
    stem = 0  # leading leaf layers, when a container follows them
    while stem < len(children) and not any(True for _ in children[stem][1].children()):
        stem += 1
    if stem == len(children) or not any(True for _, c in children[:stem] for _ in c.parameters()):
        stem = 0
    stages: list[tuple[str, list[str]]] = []
    pending: list[str] = []
    for index, (child_name, child) in enumerate(children):
        has_params = any(True for _ in child.parameters())
        pools = isinstance(child, nn.Sequential) and any(isinstance(m, _POOLS) for m in child.children())
        if child_name == head_top or (stages and stages[-1][0] == "head"):
            if stages and stages[-1][0] == "head":
                stages[-1][1].extend([*pending, child_name])
            else:
                stages.append(("head", [*pending, child_name]))
            pending = []
        elif index < stem:
            pending.append(child_name)
            if index == stem - 1:
                stages.append(("stem", pending))
                pending = []
        elif has_params:
            stages.extend(_child_stages(child_name, child, pools, pending))
            pending = []
        else:
            pending.append(child_name)
    if pending:
        if stages:
            stages[-1][1].extend(pending)
        else:
            stages.append(("head", pending))
    if stages and stages[-1][0] != "head":
        stages[-1] = ("head", stages[-1][1])
    return stages


def _child_stages(name: str, child: nn.Module, pools: bool, pending: list[str]) -> list[tuple[str, list[str]]]:
    if pools:
        blocks = pool_blocks(child, name, name=f"{name}.block")
        blocks[0] = (blocks[0][0], [*pending, *blocks[0][1]])
        return blocks
    return [(name, [*pending, name])]


def _owner(name: str, prefixes: Mapping[str, int]) -> int | None:
    """Index of the stage whose module name is the longest prefix of ``name`` (a dotted name), or None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        index = prefixes.get(".".join(parts[:end]))
        if index is not None:
            return index
    return None


def model_stages(model: nn.Module) -> list[Stage]:
    """The stages of ``model`` from input to output, the head (the classifier) last.

    Zoo classifiers say what their stages are (``ClassifierNet.stage_layout``): ResNets ``stem`` (conv1, bn1),
    ``layer1``... ``layer4``, ``head`` (fc); VGG, AlexNet, ZFNet and LeNet-5 their conv body split after each
    pooling layer (``block1``...) and the whole classifier (the FC layers) as ``head``; GoogLeNet ``stem``,
    ``inception3``-``inception5``, ``head`` (fc and the auxiliary classifiers); NiN one stage per mlpconv
    block and its final 1x1 convolution as ``head``; fastcnn its ``stage1``...; ``convkit.Sequential`` and
    model files their spatial layers split after each pool, then each dense layer, the last as ``head``.
    Other modules: each top-level child with parameters is a stage (named after it), the last one the head.
    Parameters directly on the model (not in a child) join the first stage, any others a layout leaves out the
    head.

    Args:
        model: any ``nn.Module``.

    Returns:
        A list of :class:`Stage`; every parameter is in exactly one stage.

    Raises:
        FreezeError: the model has no parameters, or its ``stage_layout`` names a module it does not have.

    >>> [s.name for s in model_stages(convkit.create_model("lenet5"))]
    ['block1', 'block2', 'block3', 'head']
    """
    layout = None
    method = getattr(model, "stage_layout", None)
    if callable(method):
        layout = method()
    if not layout:
        layout = _default_layout(model)
    stages = [Stage(name, list(modules)) for name, modules in layout]
    known = {n for n, _ in model.named_modules()}
    missing = [m for s in stages for m in s.modules if m not in known]
    if missing:
        raise FreezeError(f"{type(model).__name__}'s stage layout names modules it does not have: "
                          f"{', '.join(missing[:5])}")
    prefixes: dict[str, int] = {}
    for i, stage in enumerate(stages):
        for module_name in stage.modules:
            prefixes[module_name] = i
    for name, _ in model.named_parameters():
        index = _owner(name, prefixes)
        if index is None:
            index = 0 if "." not in name else len(stages) - 1
        stages[index].params.append(name)
    stages = [s for s in stages if s.params or s.name == "head"]
    if not any(s.params for s in stages):
        raise FreezeError(f"{type(model).__name__} has no parameters to freeze or train")
    return stages


@dataclass
class FreezeRecord:
    """What :func:`freeze` did: JSON-able, for the run folder.

    Attributes:
        trainable: the request (``"head"``, ``"all"``, ``"none"``, a stage name, or a number of stages).
        bn: the batch-norm policy, ``"freeze"`` or ``"train"``.
        stages: the stage names, from input to output.
        trainable_stages, frozen_stages: the stage names of each kind.
        trainable_params, frozen_params: parameter names of each kind.
        frozen_bn: qualified names of the batch-norm layers kept in eval mode (empty with ``bn="train"``).
        stage_sizes: parameter elements (weights) per stage.
    """

    trainable: str | int
    bn: str
    stages: list[str]
    trainable_stages: list[str]
    frozen_stages: list[str]
    trainable_params: list[str]
    frozen_params: list[str]
    frozen_bn: list[str]
    stage_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def trainable_size(self) -> int:
        """Parameter elements that train."""
        return sum(self.stage_sizes.get(s, 0) for s in self.trainable_stages)

    @property
    def frozen_size(self) -> int:
        """Parameter elements that are frozen."""
        return sum(self.stage_sizes.get(s, 0) for s in self.frozen_stages)

    @property
    def text(self) -> str:
        """One line: which stages train and which are frozen."""
        frozen = ", ".join(self.frozen_stages) or "nothing"
        trained = ", ".join(self.trainable_stages) or "nothing"
        bn = f"; {len(self.frozen_bn)} batch-norm layers keep their statistics" if self.frozen_bn else ""
        return (f"frozen: {frozen} ({self.frozen_size:,} weights); trained: {trained} ({self.trainable_size:,} "
                f"weights){bn}")

    def to_dict(self) -> dict:
        """The record as JSON-able values."""
        return {"trainable": self.trainable, "bn": self.bn, "stages": list(self.stages),
                "trainable_stages": list(self.trainable_stages), "frozen_stages": list(self.frozen_stages),
                "trainable_params": list(self.trainable_params), "frozen_params": list(self.frozen_params),
                "frozen_bn": list(self.frozen_bn), "stage_sizes": dict(self.stage_sizes)}

    @classmethod
    def from_dict(cls, data: Mapping) -> FreezeRecord:
        """The inverse of :meth:`to_dict` (a record read back from a run folder)."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _trainable_indices(stages: list[Stage], trainable: str | int) -> list[int]:
    names = [s.name for s in stages]
    n = len(stages)
    if isinstance(trainable, bool):
        raise FreezeError(f"trainable={trainable!r}: expected 'head', 'all', 'none', a stage name or a number")
    if isinstance(trainable, int):
        if trainable < 0:
            raise FreezeError(f"trainable={trainable}: the number of stages to train besides the head must be >= 0")
        return list(range(max(0, n - 1 - trainable), n))
    if trainable == "all":
        return list(range(n))
    if trainable == "none":
        return []
    if trainable == "head":
        return [n - 1]
    if trainable in names:
        return list(range(names.index(trainable), n))
    raise FreezeError(f"trainable={trainable!r} is not a stage of this model; expected 'head', 'all', 'none', "
                      f"a number of stages or one of: {', '.join(names)}")


def freeze(model: nn.Module, trainable: str | int = "head", bn: str = "freeze") -> FreezeRecord:
    """Freezes the shallow stages of ``model``: their parameters get ``requires_grad=False``.

    Args:
        model: any ``nn.Module`` (stages as :func:`model_stages` finds them).
        trainable: what stays trainable: ``"head"`` (the default), an int K (the deepest K stages and the
            head), ``"all"`` (nothing frozen), ``"none"`` (everything frozen: a feature extractor), or a stage
            name (that stage and every deeper one).
        bn: ``"freeze"`` (default): the batch-norm layers of frozen stages stay in eval mode, so training does
            not move their running statistics (see :func:`apply_bn_policy`); ``"train"``: they update them.

    Returns:
        A :class:`FreezeRecord`. Parameters of trainable stages get ``requires_grad=True``, so calling
        ``freeze`` again with a larger ``trainable`` unfreezes (gradual unfreezing).

    Raises:
        FreezeError: an unknown stage name, a negative count, or an unknown ``bn`` policy.

    >>> model = convkit.create_model("resnet18")
    >>> record = freeze(model, "layer4")
    >>> record.frozen_stages, model.layer3[0].conv1.weight.requires_grad, model.fc.weight.requires_grad
    (['stem', 'layer1', 'layer2', 'layer3'], False, True)
    >>> print(record.text)
    frozen: stem, layer1, layer2, layer3 (2,782,784 weights); trained: layer4, head (8,906,728 weights); 15 batch-norm layers keep their statistics
    """
    if bn not in BN_POLICIES:
        raise FreezeError(f"bn={bn!r}: expected one of {', '.join(BN_POLICIES)}")
    stages = model_stages(model)
    keep = set(_trainable_indices(stages, trainable))
    params = dict(model.named_parameters())
    for i, stage in enumerate(stages):
        for name in stage.params:
            params[name].requires_grad_(i in keep)
    frozen_bn: list[str] = []
    if bn == "freeze":
        prefixes = {m: i for i, s in enumerate(stages) for m in s.modules}
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                index = _owner(name, prefixes)
                if index is not None and index not in keep:
                    frozen_bn.append(name)
    record = FreezeRecord(
        trainable=trainable, bn=bn, stages=[s.name for s in stages],
        trainable_stages=[s.name for i, s in enumerate(stages) if i in keep],
        frozen_stages=[s.name for i, s in enumerate(stages) if i not in keep],
        trainable_params=[n for i, s in enumerate(stages) if i in keep for n in s.params],
        frozen_params=[n for i, s in enumerate(stages) if i not in keep for n in s.params],
        frozen_bn=frozen_bn, stage_sizes={s.name: sum(params[n].numel() for n in s.params) for s in stages})
    apply_bn_policy(model, record)
    return record


def apply_bn_policy(model: nn.Module, record: FreezeRecord) -> nn.Module:
    """Puts the batch-norm layers of frozen stages in eval mode; call it after every ``model.train()``.

    ``model.train()`` sets every layer to training mode, in which batch norm normalises with the batch's
    statistics and updates its running ones. A frozen stage should compute what it computed when it was
    trained, so its batch-norm layers use and keep their running statistics (the default ``bn="freeze"``).

    Args:
        model: the model :func:`freeze` was applied to.
        record: its :class:`FreezeRecord` (with ``bn="train"`` nothing changes).

    Returns:
        ``model``.

    >>> model = convkit.create_model("resnet18")
    >>> record = freeze(model, "head")
    >>> _ = apply_bn_policy(model.train(), record)
    >>> model.bn1.training, model.fc.training
    (False, True)
    """
    if model.training:
        for name in record.frozen_bn:
            model.get_submodule(name).eval()
    return model


def param_groups(model: nn.Module, lr: float, stage_lrs: float | Mapping[str, float] | None = None
                 ) -> list[dict]:
    """Optimizer parameter groups, one per stage with trainable parameters, named after the stage.

    Args:
        model: the model (frozen parameters, ``requires_grad=False``, are left out).
        lr: the learning rate of the deepest stage (the head), and of every stage when ``stage_lrs`` is None.
        stage_lrs: None (one rate), a float ``d`` (discriminative rates: the head gets ``lr``, the stage below
            ``lr * d``, the next ``lr * d**2``...), or ``{stage name: lr}`` (stages not named get ``lr``).

    Returns:
        ``[{"name": stage, "params": [...], "lr": rate}, ...]`` from input to output, for ``torch.optim``
        (extra keys such as ``"name"`` are kept by torch's optimizers and their ``state_dict``).

    Raises:
        FreezeError: ``stage_lrs`` names a stage the model does not have, a rate is not positive, or no
            parameter is trainable.

    >>> model = convkit.create_model("lenet5")
    >>> groups = param_groups(model, 0.1, {"block1": 0.01})
    >>> [(g["name"], g["lr"], len(g["params"])) for g in groups]
    [('block1', 0.01, 2), ('block2', 0.1, 2), ('block3', 0.1, 2), ('head', 0.1, 4)]
    """
    stages = model_stages(model)
    names = [s.name for s in stages]
    if isinstance(stage_lrs, Mapping):
        unknown = [k for k in stage_lrs if k not in names]
        if unknown:
            raise FreezeError(f"stage_lrs names {', '.join(map(repr, unknown))}, not a stage of this model; "
                              f"its stages are: {', '.join(names)}")
        rates = [float(stage_lrs.get(n, lr)) for n in names]
    elif stage_lrs is None:
        rates = [float(lr)] * len(stages)
    elif isinstance(stage_lrs, (int, float)) and not isinstance(stage_lrs, bool):
        if not 0 < stage_lrs <= 1:
            raise FreezeError(f"stage_lrs={stage_lrs}: a decay per stage must be in (0, 1]")
        rates = [float(lr) * float(stage_lrs) ** (len(stages) - 1 - i) for i in range(len(stages))]
    else:
        raise FreezeError(f"stage_lrs={stage_lrs!r}: expected None, a decay per stage, or {{stage: lr}}")
    bad = [(n, r) for n, r in zip(names, rates) if not r > 0]
    if bad:
        raise FreezeError(f"learning rates must be > 0; got {', '.join(f'{n}={r}' for n, r in bad)}")
    params = dict(model.named_parameters())
    groups = []
    for stage, rate in zip(stages, rates):
        trainable = [params[n] for n in stage.params if params[n].requires_grad]
        if trainable:
            groups.append({"name": stage.name, "params": trainable, "lr": rate})
    if not groups:
        raise FreezeError("no parameter is trainable: every stage is frozen")
    return groups
