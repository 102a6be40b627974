"""The methods registry: each method module registers itself under its API name.

Adding a method is adding one module here and importing it below.
"""

from __future__ import annotations

from app.errors import UnknownMethod
from app.transfer.methods.base import Method

_METHODS: dict[str, Method] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if cls.name in _METHODS:
        raise ValueError(f"method {cls.name!r} registered twice")
    _METHODS[cls.name] = cls()
    return cls


def get_method(name: str) -> Method:
    try:
        return _METHODS[name]
    except KeyError:
        raise UnknownMethod(
            f"Unknown method {name!r}; available: {sorted(_METHODS)}.", method=name
        ) from None


def list_methods() -> list[Method]:
    return list(_METHODS.values())


# Registration happens on import; keep this list sorted.
from app.transfer.methods import (  # noqa: E402, F401
    attributes,
    auto,
    distill,
    domain_adaptation,
    finetune,
    knn,
    linear_probe,
    multitask,
    pretrain,
    zero_shot,
)
