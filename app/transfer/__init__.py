"""Dovecote's transfer-learning library.

Usable on its own, from a notebook: it knows images, labels, backbones and heads, and
nothing of HTTP, databases or queues.

    >>> from app.transfer import TrainingData, Sample, get_method
    >>> data = TrainingData.from_arrays(images, labels)          # doctest: +SKIP
    >>> model = get_method("linear_probe").fit(data, progress=print)  # doctest: +SKIP
    >>> model.metrics["accuracy"]                                  # doctest: +SKIP
"""

from app.transfer.artifacts import TrainedModel
from app.transfer.backbones import list_backbones, load_backbone
from app.transfer.data import Sample, TrainingData
from app.transfer.methods import get_method, list_methods
from app.transfer.predictor import Predictor

__all__ = [
    "Predictor",
    "Sample",
    "TrainedModel",
    "TrainingData",
    "get_method",
    "list_backbones",
    "list_methods",
    "load_backbone",
]
