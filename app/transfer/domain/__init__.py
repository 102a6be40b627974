"""Unsupervised domain adaptation: labeled source images, unlabeled target images.

Algorithms (one module each, one call shape, see :mod:`.base`): ``source_only`` (the
baseline), ``coral``, ``dann``, ``self_training``, and AdaBN (:mod:`.adabn`: BatchNorm
statistics re-estimated per domain) alone (``adabn``) or under CORAL and self-training
(``adabn_coral``, ``adabn_self_training``). Measures: the proxy A-distance (:mod:`.gap`)
and label-free selection by reverse validation (:mod:`.reverse_validation`).
"""

from app.transfer.domain.adabn import DomainStatistics, on_adabn
from app.transfer.domain.base import Adapted, Algorithm, Pool, Task, source_only
from app.transfer.domain.coral import coral
from app.transfer.domain.dann import dann
from app.transfer.domain.self_training import self_training

#: The AdaBN algorithms, each by the algorithm it runs on the AdaBN features.
ON_ADABN: dict[str, str] = {
    "adabn": "source_only",
    "adabn_coral": "coral",
    "adabn_self_training": "self_training",
}

_PLAIN: dict[str, Algorithm] = {
    "source_only": source_only,
    "coral": coral,
    "dann": dann,
    "self_training": self_training,
}

#: Every algorithm by its API name (``params.algorithm``).
ALGORITHMS: dict[str, Algorithm] = {
    **_PLAIN,
    **{name: on_adabn(_PLAIN[inner]) for name, inner in ON_ADABN.items()},
}

__all__ = ["ALGORITHMS", "ON_ADABN", "Adapted", "Algorithm", "DomainStatistics", "Pool", "Task"]
