"""Classifier heads on top of backbone features: one interface, a registry by type.

Every head maps features ``(N, D)`` to class probabilities ``(N, C)`` in ``forward`` and
round-trips through plain tensors (safetensors) plus a small JSON config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

_HEADS: dict[str, type[Head]] = {}


@dataclass(frozen=True)
class TaskSpec:
    """A task a head predicts besides its primary classes: a project label set."""

    name: str
    classes: list[str]
    multi_label: bool  # sigmoid per tag (several labels per image) instead of one softmax


class Head(nn.Module):
    head_type: ClassVar[str]
    #: Tensors that are not the model's own but the same in many models (derived from the
    #: backbone or from fixed texts): artifacts store them once per installation, by content.
    shared_buffers: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _HEADS[cls.head_type] = cls

    def config(self) -> dict[str, Any]:
        return {}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()}

    def log_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(N, C)`` whose softmax is ``forward(x)``: log-probabilities here,
        the logits for heads that have them (localization and distillation use these)."""
        return self(x).clamp_min(1e-12).log()

    def extra_tasks(self, x: torch.Tensor) -> list[tuple[TaskSpec, torch.Tensor]]:
        """Probabilities ``(N, C_t)`` of the other tasks the head predicts (multi-task
        heads); none for a single-task head."""
        return []

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

    def log_scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)

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

    def votes(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised class votes ``(N, C)``."""
        sims = F.normalize(x, dim=-1) @ self.bank.T  # type: ignore[operator]
        top, idx = sims.topk(self.k, dim=-1)
        weights = ((top - 1.0) / self.temperature).exp()  # shift by the max cosine (1) for range
        votes = torch.zeros(x.shape[0], self.num_classes, dtype=weights.dtype, device=x.device)
        votes.scatter_add_(1, self.bank_labels[idx], weights)  # type: ignore[index]
        return votes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        votes = self.votes(x)
        return votes / votes.sum(dim=-1, keepdim=True)

    def log_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the unnormalised votes: unlike log-probabilities they keep a gradient
        when every neighbour votes for one class."""
        return self.votes(x).clamp_min(1e-12).log()

    def config(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "k": self.k, "temperature": self.temperature}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Head:
        return cls(
            tensors["bank"], tensors["bank_labels"], int(config["num_classes"]),
            int(config["k"]), float(config["temperature"]),
        )  # fmt: skip


def _imagenet_probs(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """The backbone's own ImageNet classifier on its pre-logits features, its logits divided
    by ``temperature``: ``(N, 1000)``."""
    return (F.linear(x, weight, bias) / temperature).softmax(dim=-1)


class ConSEHead(Head):
    r"""Convex combination of semantic embeddings (ConSE, Norouzi et al. 2014).

    The backbone's ImageNet classifier gives :math:`p = \mathrm{softmax}((W x + b) / \kappa)` over
    the 1000 ImageNet classes with text vectors :math:`s_i` (``imagenet_temperature`` :math:`\kappa`,
    1: the classifier's own posterior); the image's text-space vector is

    .. math:: f(x) = \frac{\sum_{i \in \mathrm{top}_T(p)} p_i s_i}{\sum_{i \in \mathrm{top}_T(p)} p_i},
              \qquad P(c \mid x) = \mathrm{softmax}_c\big(\hat f(x)^\top u_c / \tau\big)

    with :math:`\hat f = f / \lVert f \rVert`. Plain ConSE uses the class-name vectors
    :math:`u_c = e_c` (cosine similarity); a learned bilinear compatibility :math:`M`
    is folded in as :math:`u_c = M^\top e_c`. With a WordNet cover :math:`A_{ci} \in \{0, 1\}`
    (the ImageNet classes a class name owns) and weight :math:`w > 0`, the scores gain
    the log of the cover's summed probability; ``calibration`` :math:`\lambda` subtracts each
    class's mean cosine with the 1000 ImageNet vectors, its expected score when the image is a
    uniformly drawn ImageNet class (calibrated stacking, Chao et al. 2016), so a name close to
    every ImageNet text does not take every image:

    .. math:: P(c \mid x) = \mathrm{softmax}_c\big((\hat f(x)^\top u_c - \lambda\,\bar s^\top u_c)
              / \tau + w \log(\textstyle\sum_i A_{ci} p_i + \epsilon)\big),
              \qquad \bar s = \tfrac{1}{1000}\textstyle\sum_i s_i, \quad \epsilon = 10^{-4}.

    ``imagenet_weight``: ``(1000, D)``, ``imagenet_bias``: ``(1000,)``, ``source``:
    ``(1000, E)``, ``codes``: ``(C, E)``, ``membership``: ``(C, 1000)`` uint8 (or none).
    """

    head_type = "conse"
    shared_buffers = ("imagenet_weight", "imagenet_bias", "source")

    def __init__(
        self, imagenet_weight: torch.Tensor, imagenet_bias: torch.Tensor, source: torch.Tensor,
        codes: torch.Tensor, top_t: int, temperature: float,
        membership: torch.Tensor | None = None, hierarchy_weight: float = 0.0,
        calibration: float = 0.0, imagenet_temperature: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.register_buffer("imagenet_weight", imagenet_weight.float())
        self.register_buffer("imagenet_bias", imagenet_bias.float())
        self.register_buffer("source", source.float())
        self.register_buffer("codes", codes.float())
        self.top_t = min(top_t, source.shape[0])
        self.temperature = temperature
        hierarchy = membership is not None and hierarchy_weight > 0
        self.register_buffer("membership", membership.to(torch.uint8) if hierarchy else None)  # type: ignore[union-attr]
        self.hierarchy_weight = hierarchy_weight if hierarchy else 0.0
        self.calibration = calibration
        self.imagenet_temperature = imagenet_temperature
        offset = calibration * self.source.mean(dim=0) @ self.codes.T  # type: ignore[operator]
        self.register_buffer("offset", offset, persistent=False)  # λ s̄ᵀu_c, (C,)

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        return _imagenet_probs(
            x, self.imagenet_weight, self.imagenet_bias, self.imagenet_temperature
        )  # type: ignore[arg-type]

    def _embed(self, p: torch.Tensor) -> torch.Tensor:
        top, idx = p.topk(self.top_t, dim=-1)
        f = torch.einsum("nt,nte->ne", top / top.sum(dim=-1, keepdim=True), self.source[idx])  # type: ignore[index]
        return F.normalize(f, dim=-1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\hat f(x)`, shape ``(N, E)``."""
        return self._embed(self._probs(x))

    def log_scores(self, x: torch.Tensor) -> torch.Tensor:
        p = self._probs(x)
        scores = (self._embed(p) @ self.codes.T - self.offset) / self.temperature  # type: ignore[operator]
        if self.membership is not None:
            mass = p @ self.membership.to(p.dtype).T  # type: ignore[operator]
            scores = scores + self.hierarchy_weight * (mass + 1e-4).log()
        return scores

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_scores(x).softmax(dim=-1)

    def config(self) -> dict[str, Any]:
        return {
            "top_t": self.top_t,
            "temperature": self.temperature,
            "hierarchy_weight": self.hierarchy_weight,
            "calibration": self.calibration,
            "imagenet_temperature": self.imagenet_temperature,
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Head:
        return cls(
            tensors["imagenet_weight"], tensors["imagenet_bias"], tensors["source"],
            tensors["codes"], int(config["top_t"]), float(config["temperature"]),
            tensors.get("membership"), float(config.get("hierarchy_weight", 0.0)),
            float(config.get("calibration", 0.0)), float(config.get("imagenet_temperature", 1.0)),
        )  # fmt: skip


class ImageNetSumHead(Head):
    r"""Class probabilities summed from the ImageNet classes each class name covers.

    With :math:`p = \mathrm{softmax}(W x + b)` and the 0/1 membership :math:`A_{ci}`
    (ImageNet class :math:`i` is a kind of class :math:`c`),
    :math:`P(c \mid x) = \sum_i A_{ci} p_i / \sum_{c'} \sum_i A_{c'i} p_i`.
    ``imagenet_weight``: ``(1000, D)``, ``imagenet_bias``: ``(1000,)``, ``membership``: ``(C, 1000)``.
    """

    head_type = "imagenet_sum"
    shared_buffers = ("imagenet_weight", "imagenet_bias")

    def __init__(
        self, imagenet_weight: torch.Tensor, imagenet_bias: torch.Tensor, membership: torch.Tensor
    ) -> None:
        super().__init__()
        self.register_buffer("imagenet_weight", imagenet_weight.float())
        self.register_buffer("imagenet_bias", imagenet_bias.float())
        self.register_buffer("membership", membership.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = _imagenet_probs(x, self.imagenet_weight, self.imagenet_bias)  # type: ignore[arg-type]
        mass = p @ self.membership.T + 1e-12  # type: ignore[operator]
        return mass / mass.sum(dim=-1, keepdim=True)

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Head:
        return cls(tensors["imagenet_weight"], tensors["imagenet_bias"], tensors["membership"])


class AttributeHead(Head):
    r"""Direct attribute prediction (DAP, Lampert et al. 2009).

    Per-attribute probabilities :math:`q_m(x) = \sigma(w_m^\top x + b_m)`; a class with
    attribute vector :math:`a^c \in [0, 1]^M` scores

    .. math:: \log P(c \mid x) \propto \frac1\tau \sum_m \Big[a^c_m \log \frac{q_m(x)}{\pi_m}
              + (1 - a^c_m) \log \frac{1 - q_m(x)}{1 - \pi_m}\Big]

    where :math:`\pi_m` is the attribute's prior. ``weight``: ``(M, D)``, ``bias``: ``(M,)``,
    ``class_attributes``: ``(C, M)``, ``prior``: ``(M,)``.
    """

    head_type = "attributes"

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor, class_attributes: torch.Tensor,
        prior: torch.Tensor, temperature: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.register_buffer("weight", weight.float())
        self.register_buffer("bias", bias.float())
        self.register_buffer("class_attributes", class_attributes.float())
        self.register_buffer("prior", prior.float().clamp(1e-3, 1 - 1e-3))
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.sigmoid(F.linear(x, self.weight, self.bias)).clamp(1e-4, 1 - 1e-4)  # type: ignore[arg-type]
        pos = (q / self.prior).log()  # type: ignore[operator]
        neg = ((1 - q) / (1 - self.prior)).log()  # type: ignore[operator]
        a = self.class_attributes
        scores = pos @ a.T + neg @ (1 - a).T  # type: ignore[operator,union-attr]
        return (scores / self.temperature).softmax(dim=-1)

    def config(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Head:
        return cls(
            tensors["weight"], tensors["bias"], tensors["class_attributes"], tensors["prior"],
            float(config["temperature"]),
        )  # fmt: skip


class MLPHead(Head):
    r"""One hidden layer: :math:`p = \mathrm{softmax}(W_2\, h(x) + b_2)`,
    :math:`h(x) = \mathrm{relu}(W_1 x + b_1)` — a bottleneck and a linear classifier, as DANN
    serves them. ``hidden.weight``: ``(H, D)``, ``output.weight``: ``(C, H)``.
    """

    head_type = "mlp"

    def __init__(
        self, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
    ) -> None:
        super().__init__()
        self.hidden = nn.Linear(w1.shape[1], w1.shape[0])
        self.output = nn.Linear(w2.shape[1], w2.shape[0])
        with torch.no_grad():
            for layer, w, b in ((self.hidden, w1, b1), (self.output, w2, b2)):
                layer.weight.copy_(w)
                layer.bias.copy_(b)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck features :math:`h(x)`, shape ``(N, H)``."""
        return self.hidden(x).relu()

    def log_scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.embed(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_scores(x).softmax(dim=-1)

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Head:
        return cls(
            tensors["hidden.weight"], tensors["hidden.bias"],
            tensors["output.weight"], tensors["output.bias"],
        )  # fmt: skip


class MultiTaskHead(Head):
    r"""One shared layer, one output per task (hard parameter sharing, Caruana 1997).

    :math:`h(x) = \mathrm{relu}(W_s x + b_s)`; task :math:`t` scores
    :math:`z_t = W_t h(x) + b_t`, with :math:`p_t = \mathrm{softmax}(z_t)` for a
    single-label task and :math:`p_t = \sigma(z_t)` per tag for a multi-label one. Task 0
    is the primary one (the images' ``label``): ``forward`` gives its probabilities, the
    others come from :meth:`extra_tasks`. ``shared.weight``: ``(H, D)``,
    ``outputs.{t}.weight``: ``(C_t, H)``.
    """

    head_type = "multitask"

    def __init__(self, shared: nn.Linear, outputs: list[nn.Linear], tasks: list[TaskSpec]) -> None:
        super().__init__()
        if len(outputs) != len(tasks) + 1:
            raise ValueError("one output per task, the primary one first")
        self.shared = shared
        self.outputs = nn.ModuleList(outputs)
        self.tasks = tasks

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The shared features :math:`h(x)`, shape ``(N, H)``."""
        return self.shared(x).relu()

    def task_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """:math:`z_t` for every task, the primary one first."""
        h = self.embed(x)
        return [out(h) for out in self.outputs]

    def log_scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs[0](self.embed(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_scores(x).softmax(dim=-1)

    def extra_tasks(self, x: torch.Tensor) -> list[tuple[TaskSpec, torch.Tensor]]:
        logits = self.task_logits(x)[1:]
        return [
            (t, z.sigmoid() if t.multi_label else z.softmax(dim=-1))
            for t, z in zip(self.tasks, logits, strict=True)
        ]

    def config(self) -> dict[str, Any]:
        return {
            "tasks": [
                {"name": t.name, "classes": t.classes, "multi_label": t.multi_label}
                for t in self.tasks
            ]
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Head:
        tasks = [TaskSpec(t["name"], list(t["classes"]), bool(t["multi_label"])) for t in config["tasks"]]  # fmt: skip
        layers = [
            _linear(tensors[f"{prefix}.weight"], tensors[f"{prefix}.bias"])
            for prefix in ["shared"] + [f"outputs.{i}" for i in range(len(tasks) + 1)]
        ]
        return cls(layers[0], layers[1:], tasks)


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer
