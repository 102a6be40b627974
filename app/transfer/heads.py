"""Classifier heads on top of backbone features: one interface, a registry by type.

Every head maps features ``(N, D)`` to class probabilities ``(N, C)`` in ``forward`` and
round-trips through plain tensors (safetensors) plus a small JSON config.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

_HEADS: dict[str, type[Head]] = {}


class Head(nn.Module):
    head_type: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _HEADS[cls.head_type] = cls

    def config(self) -> dict[str, Any]:
        return {}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Head:
        raise NotImplementedError


def build_head(head_type: str, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Head:
    return _HEADS[head_type].from_tensors(tensors, config).eval()


class LinearHead(Head):
    r"""Softmax regression: :math:`p = \mathrm{softmax}(W \tilde x + b)`.

    :math:`\tilde x = x / \lVert x \rVert` when ``normalize`` else :math:`x`.
    ``weight``: ``(C, D)``, ``bias``: ``(C,)``.
    """

    head_type = "linear"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, normalize: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)
        self.normalize = normalize

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(F.normalize(x, dim=-1) if self.normalize else x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).softmax(dim=-1)

    def config(self) -> dict[str, Any]:
        return {"normalize": self.normalize}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Head:
        return cls(tensors["linear.weight"], tensors["linear.bias"], bool(config["normalize"]))


class KNNHead(Head):
    r"""Weighted cosine k-nearest-neighbour vote (as in Wu et al. 2018, DINO's kNN eval).

    With :math:`s_i = \cos(x, m_i)` over the memory bank :math:`m` and :math:`N_k(x)` the
    ``k`` most similar entries, :math:`p_c \propto \sum_{i \in N_k(x),\, y_i = c}
    \exp(s_i / T)`. ``bank``: ``(M, D)`` (L2-normalised), ``bank_labels``: ``(M,)`` int64.
    """

    head_type = "knn"

    def __init__(
        self, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int, k: int,
        temperature: float,
    ) -> None:  # fmt: skip
        super().__init__()
        self.register_buffer("bank", F.normalize(bank.float(), dim=-1))
        self.register_buffer("bank_labels", bank_labels.long())
        self.num_classes = num_classes
        self.k = min(k, bank.shape[0])
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sims = F.normalize(x, dim=-1) @ self.bank.T  # type: ignore[operator]
        top, idx = sims.topk(self.k, dim=-1)
        weights = ((top - 1.0) / self.temperature).exp()  # shift by the max cosine (1) for range
        votes = torch.zeros(x.shape[0], self.num_classes, dtype=weights.dtype, device=x.device)
        votes.scatter_add_(1, self.bank_labels[idx], weights)  # type: ignore[index]
        return votes / votes.sum(dim=-1, keepdim=True)

    def config(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "k": self.k, "temperature": self.temperature}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Head:
        return cls(
            tensors["bank"], tensors["bank_labels"], int(config["num_classes"]),
            int(config["k"]), float(config["temperature"]),
        )  # fmt: skip
