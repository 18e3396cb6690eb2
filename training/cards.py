"""Where a model's card comes from (`imagegen.contract.card.ModelCard`): its dataset and its family.

The dataset gives the licence, the attribution and what the data is; the family gives what the
model is for and what it does badly; a seed baseline says it is one. MNIST and Fashion-MNIST are
known by name; the emoji folder (`twemoji/` and `noto/` side by side, as in
$IMAGEGEN_DATA_DIR/emoji and tests/data/emoji) is known by its layout. Any other image folder
needs its licence and attribution from the person exporting it: `card.json` in the folder, or
`imagegen export --license ... --attribution ...`; export refuses it otherwise, naming both ways.
Given fields (flags over the folder's card.json) replace the derived ones for any dataset.

`imagegen export` and scripts/fill_cards.py (the shipped manifests) both call `model_card`.
Torch-free, so the script runs without the [train] extra.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from imagegen.contract.card import CARD_FIELDS, CARD_FILE, ModelCard
from imagegen.contract.datasets import IDX_DATASETS, IMAGE_FOLDER

EMOJI_SETS = ("noto", "twemoji")
NOT_FOR = ("Not for decisions about people, and not to be passed off as real data: every image "
           "is synthetic.")


@dataclass(frozen=True)
class DataCard:
    license: str
    attribution: str
    data: str  # what the images are; the card's training_data adds how many were used
    limitations: str


DATA_CARDS = {
    "mnist": DataCard(
        "CC-BY-SA-3.0",
        "MNIST database by Yann LeCun, Corinna Cortes and Christopher J. C. Burges, licensed under "
        "CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/).",
        "MNIST train split: 28x28 grayscale handwritten digits 0-9",
        "Only centred 28x28 grayscale digits in the style of MNIST's writers; no letters, colour "
        "or other sizes.",
    ),
    "fashion": DataCard(
        "MIT",
        "Fashion-MNIST by Zalando Research (Han Xiao, Kashif Rasul, Roland Vollgraf), "
        "Copyright (c) 2017 Zalando SE, licensed under the MIT License.",
        "Fashion-MNIST train split: 28x28 grayscale product photos of 10 clothing classes",
        "Only 28x28 grayscale catalogue-style shots of 10 clothing classes; fine detail (logos, "
        "texture, text) is lost at this size.",
    ),
    "emoji": DataCard(
        "CC-BY-4.0 AND Apache-2.0",
        "Twemoji graphics by Twitter, Inc. and other contributors, licensed under CC BY 4.0 "
        "(https://creativecommons.org/licenses/by/4.0/); Noto Emoji by Google, licensed under "
        "Apache-2.0 (from the npm packages emoji-datasource-twitter and emoji-datasource-google "
        "16.0.0).",
        "Twemoji 15 and Noto emoji at 64x64 RGB on white, 9 categories",
        "Categories are unbalanced (about 60% people-body); images echo the Twemoji and Noto "
        "designs, so their attribution goes with the images too.",
    ),
}

FAMILY_USE = {
    "label": (
        "The fixed picture of a class (one image per class; the seed changes nothing): demos, "
        "tests and teaching.",
        "Deterministic: one image per class, so no variety (recall is near 0 by construction).",
    ),
    "evaluator": (
        "Varied images of a class from a seed, drawn by a generator an autoencoder critic taught "
        "(energy-based GAN): demos, teaching and synthetic examples for experiments.",
        "Misses part of each class's variety (recall below the real data's) and can draw "
        "artefacts; some classes are drawn worse than others (docs/quality.md).",
    ),
    "gan": (
        "Varied images of a class from a seed, and interpolations between seeds (class-conditional "
        "DCGAN): demos, teaching and synthetic examples for experiments.",
        "Misses part of each class's variety (recall below the real data's) and can draw GAN "
        "artefacts; some classes are drawn worse than others (docs/quality.md).",
    ),
    "vae": (
        "Images sampled from a VAE's prior, and encode-decode reconstructions of an uploaded "
        "image: demos, teaching and latent-space experiments.",
        "Samples are blurrier than the real data; images unlike the training data reconstruct "
        "poorly.",
    ),
}
BASELINE_USE = "A seed baseline: the seed document's own setting, shipped for comparison only."
BASELINE_LIMITS = "Its family's non-baseline model has the better fid_cls (docs/quality.md)."
UNCONDITIONAL = "Unconditional: the class of an image cannot be chosen."


class CardMissing(ValueError):
    """A model's card cannot be made: the message names what to add."""


def known_data_card(kind: str, name: str, folder: Path | None) -> DataCard | None:
    """The card of a dataset we ship or can name: an IDX dataset by name, the emoji folder by
    its layout."""
    if kind in IDX_DATASETS:
        return DATA_CARDS[kind]
    if folder is not None and all((folder / s).is_dir() for s in EMOJI_SETS):
        return DATA_CARDS["emoji"]
    return None


def folder_card(folder: Path | None) -> dict[str, str]:
    """The fields of an image folder's own card.json (none when there is no such file)."""
    if folder is None or not (folder / CARD_FILE).is_file():
        return {}
    path = folder / CARD_FILE
    try:
        fields = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CardMissing(f"{path} is not readable JSON: {exc}") from exc
    unknown = sorted(set(fields) - set(CARD_FIELDS)) if isinstance(fields, dict) else []
    if not isinstance(fields, dict) or unknown or not all(isinstance(v, str) for v in fields.values()):
        raise CardMissing(f"{path} must be an object of strings with keys from {list(CARD_FIELDS)}"
                          + (f"; unknown: {unknown}" if unknown else ""))
    return fields


def model_card(
    family: str,
    kind: str,
    name: str,
    train_images: int,
    baseline: bool = False,
    folder: Path | None = None,
    given: dict[str, str] | None = None,
    conditional: bool = True,
) -> ModelCard:
    """The card of a `family` model trained on `train_images` images of dataset `name` (of `kind`:
    `mnist`, `fashion`, `imagefolder`; `folder` is an image folder's path; `conditional`: the
    model takes a class). `given` fields (from flags) win over the folder's card.json, which
    wins over what is derived."""
    data = known_data_card(kind, name, folder)
    use, limits = FAMILY_USE.get(family, ("Images drawn by a generative model.", "Not measured."))
    derived: dict[str, str] = {
        "intended_use": " ".join([BASELINE_USE] * baseline + [use, NOT_FOR]),
        "limitations": " ".join(
            [BASELINE_LIMITS] * baseline + [UNCONDITIONAL] * (not conditional) + [limits]
        ),
        "training_data": f"{train_images:,} images of the image folder {name!r}",
    }
    if data is not None:
        derived |= {
            "license": data.license,
            "attribution": data.attribution,
            "training_data": f"{data.data} ({train_images:,} images)",
            "limitations": f"{derived['limitations']} {data.limitations}",
        }
    fields = derived | folder_card(folder) | {k: v for k, v in (given or {}).items() if v is not None}
    missing = [f for f in CARD_FIELDS if not fields.get(f, "").strip()]
    if missing:
        flags = " ".join(f"--{f.replace('_', '-')} ..." for f in missing)
        where = f"{folder / CARD_FILE}" if folder is not None else f"<image folder>/{CARD_FILE}"
        raise CardMissing(
            f"dataset {name!r} has no model card: its {' and '.join(missing)} cannot be known here. "
            f"Add {flags} to imagegen export, or write {where} with "
            + json.dumps({f: "..." for f in missing})
        )
    try:
        return ModelCard(**{f: fields[f] for f in CARD_FIELDS})
    except ValidationError as exc:
        raise CardMissing(f"the model card of dataset {name!r} is not valid: {exc}") from exc


def checkpoint_card(
    ckpt: dict[str, Any], conditional: bool, given: dict[str, str] | None = None
) -> ModelCard:
    """The card `imagegen export` writes for a checkpoint: its dataset record and run config
    (an image folder's path is the run's data_dir)."""
    data, run = ckpt["dataset"], ckpt["run_config"]
    kind = data.get("kind") or run["dataset"]
    folder = Path(run["data_dir"]) if kind == IMAGE_FOLDER else None
    baseline = run["variant"] == "seed"
    return model_card(
        ckpt["family"], kind, data["name"], data["train_images"], baseline, folder, given, conditional
    )


def render_cards(cards: list[tuple[str, ModelCard | None]]) -> list[str]:
    """docs/quality.md's "Model cards" section: one row per (model id, card)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["## Model cards", "",
             "Each model's `card` (in its manifest; written by `imagegen export` from the dataset and the",
             "family, `training/cards.py`). The licence is the training data's, as an SPDX expression.", "",
             "| model | license | attribution | training data | intended use | limitations |",
             "|---|---|---|---|---|---|"]
    for model_id, card in cards:
        if card is None:
            lines.append(f"| `{model_id}` | no card (exported before cards: scripts/fill_cards.py) | | | | |")
        else:
            fields = (card.license, card.attribution, card.training_data, card.intended_use, card.limitations)
            lines.append(f"| `{model_id}` | " + " | ".join(cell(f) for f in fields) + " |")
    return lines


def add_card_arguments(parser: argparse.ArgumentParser) -> None:
    """`imagegen export --license ... --attribution ...`: a card's fields given by hand."""
    group = parser.add_argument_group(
        "model card", f"needed for an image folder without {CARD_FILE}; override the derived card otherwise"
    )
    group.add_argument("--license", help="the training data's licence, an SPDX expression, e.g. CC-BY-4.0")
    group.add_argument("--attribution", help="the credit the licence asks for, as it should be shown")
    group.add_argument("--training-data", help="what the model was trained on")
    group.add_argument("--intended-use", help="what the model is for")
    group.add_argument("--limitations", help="what it does badly or must not be used for")


def given_card(args: argparse.Namespace) -> dict[str, str]:
    return {f: getattr(args, f) for f in CARD_FIELDS if getattr(args, f, None) is not None}
