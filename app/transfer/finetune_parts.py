"""Which parts of a timm network train: named blocks, freezing with BatchNorm statistics.

Blocks are timm's own coarse parameter groups (``model.group_matcher(coarse=True)``),
named ``stem``, ``blocks.0`` ... ``blocks.{n-1}`` and, where the architecture has one
after its last stage, ``head`` (the classifier itself is always trained).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from app.errors import InvalidParams


def classifier_param_names(model: nn.Module) -> set[str]:
    classifier = model.get_classifier()  # type: ignore[operator]
    names = {id(p) for p in classifier.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in names}


def block_parameters(model: nn.Module) -> OrderedDict[str, list[str]]:
    """Block name -> its parameter names, input side first (classifier excluded)."""
    from timm.models import group_parameters

    groups = group_parameters(model, model.group_matcher(coarse=True))  # type: ignore[operator]
    classifier = classifier_param_names(model)
    ordered = [[n for n in names if n not in classifier] for _, names in sorted(groups.items())]
    ordered = [names for names in ordered if names]
    out: OrderedDict[str, list[str]] = OrderedDict()
    out["stem"] = ordered[0]
    for i, names in enumerate(ordered[1:]):
        out[f"blocks.{i}"] = names
    return out


def trainable_parameters(model: nn.Module, trainable: str | list[str], n: int) -> set[str]:
    """Names of the parameters that move under ``trainable`` (always the classifier)."""
    blocks = block_parameters(model)
    chosen: list[str]
    if trainable == "head":
        chosen = []
    elif trainable == "all":
        chosen = list(blocks)
    elif trainable == "last_n_blocks":
        chosen = list(blocks)[-n:] if n > 0 else []
    elif isinstance(trainable, list):
        unknown = [b for b in trainable if b not in blocks]
        if unknown:
            raise InvalidParams(
                f"Unknown block(s) {unknown}; this backbone has {list(blocks)}.",
                blocks=list(blocks),
            )
        chosen = list(trainable)
    else:
        raise InvalidParams(f"Unknown trainable {trainable!r}.")
    names = classifier_param_names(model)
    for block in chosen:
        names.update(blocks[block])
    return names


def freeze_except(model: nn.Module, trainable: set[str]) -> list[nn.Module]:
    """Freeze every other parameter; returns the normalisation layers that must stay in eval.

    A BatchNorm layer none of whose parameters train keeps its running statistics frozen
    too: call :func:`set_train_mode` instead of ``model.train()``.
    """
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and not any(p.requires_grad for p in m.parameters(recurse=False))
    ]


def set_train_mode(model: nn.Module, frozen_norms: list[nn.Module]) -> None:
    model.train()
    for m in frozen_norms:
        m.eval()
