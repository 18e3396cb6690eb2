"""Give every manifest of a model repository its model card, from the source `imagegen export` uses.

    python scripts/fill_cards.py --data-dir $IMAGEGEN_DATA_DIR            # write the cards
    python scripts/fill_cards.py --data-dir $IMAGEGEN_DATA_DIR --check    # exit 1 where one differs

For models exported before cards existed: the card is `training.cards.model_card` of the
manifest's family, dataset, training image count, baseline flag and inputs; an image-folder dataset is
looked for as `<data-dir>/<dataset>` (the emoji folder is known by its layout, so the small copy
in tests/data serves as well). Only the manifest's `card` changes: the JSON is rewritten in the
form export writes (sorted keys, two-space indent), every other field, sha256 included, as it was;
no ONNX file is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file from a checkout: `training` is the checkout's
    sys.path.insert(0, str(ROOT))

from imagegen.contract.card import ModelCard  # noqa: E402
from imagegen.contract.datasets import IDX_DATASETS, IMAGE_FOLDER  # noqa: E402
from imagegen.contract.manifest import MANIFEST_NAME, Manifest  # noqa: E402
from training.cards import model_card  # noqa: E402


def card_for(manifest: Manifest, data_dir: Path | None) -> ModelCard:
    """The card export would write for this manifest's model."""
    kind = manifest.dataset if manifest.dataset in IDX_DATASETS else IMAGE_FOLDER
    folder = None
    if kind == IMAGE_FOLDER:
        if data_dir is None:
            raise ValueError(f"{manifest.id}: an image folder's model; give --data-dir (holding "
                             f"{manifest.dataset}/)")
        folder = data_dir / manifest.dataset
    if manifest.training is None:
        raise ValueError(f"{manifest.id}: no training record, so no image count for its card")
    return model_card(manifest.family, kind, manifest.dataset, manifest.training.train_images,
                      manifest.baseline, folder, conditional=manifest.conditional)


def fill(model_dir: Path, data_dir: Path | None, check: bool) -> bool:
    """Write (or, with `check`, compare) one model's card; True when it was already current."""
    path = model_dir / MANIFEST_NAME
    raw = json.loads(path.read_text())
    card = card_for(Manifest.read(model_dir), data_dir).model_dump(mode="json")
    if raw.get("card") == card:
        return True
    if not check:
        raw["card"] = card
        path.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
        Manifest.read(model_dir)  # what the service will read must validate
    return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models-dir", type=Path, default=ROOT / "models")
    env = os.environ.get("IMAGEGEN_DATA_DIR")
    p.add_argument("--data-dir", type=Path, default=Path(env) if env else None,
                   help="real data root, for image-folder models (default $IMAGEGEN_DATA_DIR)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when a card differs")
    args = p.parse_args(argv)
    stale = []
    for manifest_path in sorted(args.models_dir.glob(f"*/{MANIFEST_NAME}")):
        if not fill(manifest_path.parent, args.data_dir, args.check):
            stale.append(manifest_path.parent.name)
    verb = "differ" if args.check else "written"
    print(f"cards {verb}: {', '.join(stale) or 'none'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
