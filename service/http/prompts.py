"""A prompt in words -> one of a model's classes, for the OpenAI-compatible route.

Understood, case- and article-insensitive: a class name ("Ankle boot", "t-shirt/top"), a digit or
a number word ("3", "three"), a plural or a part of a class name ("bags", "boot", "smileys"), and
a few everyday words for each shipped dataset's classes ("smiling face" -> smileys-emotion,
"jeans" -> Trouser). Anything else is refused with the model's classes listed: a prompt is never
silently mapped to an arbitrary class.
"""

from __future__ import annotations

import re

from service.errors import InvalidParameter
from service.store.served import ServedModel

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Words that carry no class: articles and what people write around the thing they want.
_FILLER = {
    "a", "an", "the", "of", "some", "picture", "image", "photo", "drawing", "draw", "me", "please",
    "digit", "number", "handwritten", "emoji", "icon", "with",
}  # fmt: skip
# Everyday words for the shipped datasets' classes (class name -> words beyond its own parts).
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "t-shirt/top": ("tee", "tshirt", "shirt top", "blouse"),
    "trouser": ("trousers", "pants", "jeans"),
    "pullover": ("sweater", "jumper", "hoodie"),
    "coat": ("jacket", "parka"),
    "sandal": ("flip flop",),
    "sneaker": ("trainer", "running shoe"),
    "bag": ("handbag", "purse", "backpack"),
    "ankle boot": ("boot", "boots"),
    "smileys-emotion": ("smiling", "smile", "smiley", "face", "laughing", "happy", "emotion", "heart"),
    "people-body": ("person", "man", "woman", "hand", "people", "body"),
    "animals-nature": ("animal", "cat", "dog", "plant", "flower", "tree", "nature"),
    "food-drink": ("food", "drink", "fruit", "meal", "coffee"),
    "travel-places": ("car", "vehicle", "train", "plane", "building", "place", "travel"),
    "activities": ("sport", "ball", "game", "activity", "party"),
    "objects": ("object", "tool", "phone", "book"),
    "symbols": ("symbol", "sign", "arrow"),
    "flags": ("flag",),
}
_WORD = re.compile(r"[a-z0-9]+")


def prompt_class(served: ServedModel, prompt: str) -> int:
    """The class index a prompt names, for a conditional model; InvalidParameter otherwise."""
    manifest = served.require_manifest()
    words = [w for w in _WORD.findall(prompt.lower()) if w not in _FILLER]
    text = " ".join(words)
    index = served.lookup_class(prompt.strip()) if prompt.strip() else None
    if index is None and text:
        index = served.lookup_class(text)
    if index is None and len(words) == 1 and words[0] in NUMBER_WORDS:
        index = served.lookup_class(str(NUMBER_WORDS.index(words[0])))
    if index is None and words:
        index = _by_words(manifest.class_names, text)
    if index is None:
        raise InvalidParameter(
            f"the prompt {prompt[:80]!r} names none of model {served.id!r}'s classes; "
            f"say one of: {', '.join(manifest.class_names)}",
            parameter="prompt",
            classes=list(manifest.class_names),
        )
    return index


def _by_words(class_names: list[str], text: str) -> int | None:
    """The one class whose name parts or everyday words the prompt contains (plurals folded)."""
    padded = f" {' '.join(_singular(w) for w in text.split())} "
    scores = []
    for name in class_names:
        key = name.lower()
        parts = [p for p in re.split(r"[-/ ]", key) if p]
        phrases = {key.replace("-", " ").replace("/", " "), *parts, *_SYNONYMS.get(key, ())}
        hits = sum(f" {_singular_phrase(p)} " in padded for p in phrases)
        scores.append(hits)
    best = max(scores, default=0)
    if best == 0 or scores.count(best) > 1:
        return None
    return scores.index(best)


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _singular_phrase(phrase: str) -> str:
    return " ".join(_singular(w) for w in phrase.split())
