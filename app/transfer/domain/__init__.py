"""Unsupervised domain adaptation: labeled source images, unlabeled target images.

Algorithms (one module each, one call shape, see :mod:`.base`): ``source_only`` (the
baseline), ``coral``, ``dann``, ``self_training``. Measures: the proxy A-distance
(:mod:`.gap`) and label-free selection by reverse validation (:mod:`.reverse_validation`).
"""

from app.transfer.domain.base import Adapted, Algorithm, Pool, Task, source_only
from app.transfer.domain.coral import coral
from app.transfer.domain.dann import dann
from app.transfer.domain.self_training import self_training

#: Every algorithm by its API name (``params.algorithm``).
ALGORITHMS: dict[str, Algorithm] = {
    "source_only": source_only,
    "coral": coral,
    "dann": dann,
    "self_training": self_training,
}

__all__ = ["ALGORITHMS", "Adapted", "Algorithm", "Pool", "Task"]
