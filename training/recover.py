"""Training weights for a served gan or evaluator that was exported before export kept them.

    python -m training.recover models/gan-emoji --out runs/gan-emoji-v4.safetensors
    imagegen train --family gan ... --resume-from runs/gan-emoji-v4.safetensors --set d_warmup=1200
    python -m training.recover models/gan-emoji --attach runs/gan-emoji-more/epoch_010.pt

The ONNX file holds the sampled generator, weight for weight (`training.weights.generator_weights`
reads it back). The critic is not in the file, so it starts fresh: continue with `d_warmup`
steps in which it learns alone before it teaches the generator. The written file says so
(`recovered_from`), and the recovered sampler must draw what the ONNX file draws.

`--attach CHECKPOINT` keeps such a run's weights beside the served version itself, once its
critic has learnt and while its generator has not moved (the checkpoint's sampler must still
draw what the served ONNX file draws): the version then ships with training weights and the
same images, and `--resume-from models/<id>` continues it with a critic that has judged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from imagegen.contract.manifest import Manifest, sha256_file
from training.checkpoint import build_model, load_checkpoint
from training.export import resampled
from training.families import get_family
from training.families.adversarial import GeneratorCritic
from training.weights import WEIGHTS_NAME, WeightsError, copy_weights, generator_weights, save_weights


def load_generator(model: GeneratorCritic, path: Path) -> None:
    """Copy the generator's weights from the ONNX file at `path` into the trained generator and
    its average."""
    copy_weights(model.generator, generator_weights(model, path))
    if model.generator_ema is not None:
        model.generator_ema.load_state_dict(model.generator.state_dict())


def parameter_drift(model: GeneratorCritic, path: Path) -> float:
    """How far the sampled generator's parameters lie from the ONNX file's (its batch-norm
    statistics aside: every epoch's sample grid recomputes them)."""
    found = generator_weights(model, path)
    params = model.sampled_generator.named_parameters()
    return max(float(np.abs(p.detach().numpy() - found[name]).max()) for name, p in params)


def largest_gap(model: GeneratorCritic, onnx_path: Path) -> float:
    """Largest pixel difference between the recovered sampler's images and the ONNX file's."""
    c = model.config
    z = np.random.default_rng(0).standard_normal((16, c.latent_dim)).astype(np.float32)
    feeds: dict[str, Any] = {"z": z}
    if c.conditional:
        feeds["label"] = np.arange(16, dtype=np.int64) % c.num_classes
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    drawn = session.run(["image"], feeds)[0]
    with torch.no_grad():
        mine = model.sampler()(*(torch.from_numpy(feeds[name]) for name in model.inputs)).numpy()
    return float(np.abs(mine - drawn).max())


def recover(model_dir: Path, out: Path) -> float:
    manifest = Manifest.read(model_dir)
    training = manifest.training
    if training is None or manifest.family not in ("gan", "evaluator"):
        raise WeightsError(
            f"{model_dir}: a {manifest.family} model; only a gan's or an evaluator's generator, "
            "with its training record in the manifest, can be recovered"
        )
    model = build_model(manifest.family, training.config)
    if not isinstance(model, GeneratorCritic):
        raise WeightsError(f"{model_dir}: a {manifest.family} model has no generator to recover")
    onnx_path = manifest.onnx_path(model_dir)
    load_generator(model, onnx_path)
    model.eval()
    gap = largest_gap(model, onnx_path)
    if gap > 1e-4:
        raise WeightsError(f"{model_dir}: the recovered generator draws {gap:.2e} away from {onnx_path}")
    record = {"family": manifest.family, "dataset": manifest.dataset, "recovered_from": str(onnx_path)}
    checkpoint = {
        "family": manifest.family,
        "model_config": training.config,
        "run_config": record,
        "dataset": {"name": manifest.dataset, "class_names": list(manifest.class_names)},
        "epoch": 0,
        "step": 0,
        "duration_s": 0.0,
        "torch": torch.__version__,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(out, model, checkpoint)
    return gap


def attach(model_dir: Path, checkpoint_path: Path) -> float:
    """Write the checkpoint's weights beside the served version, whose images its sampler must
    still draw, and name them in the manifest; return the largest pixel gap."""
    manifest = Manifest.read(model_dir)
    if manifest.training is None:
        raise WeightsError(f"{model_dir}: the manifest has no training record to name the weights in")
    model, ckpt = load_checkpoint(checkpoint_path)
    if ckpt["family"] != manifest.family or not isinstance(model, GeneratorCritic):
        raise WeightsError(f"{checkpoint_path} is a {ckpt['family']} run, {model_dir} a {manifest.family}")
    # the served version's sampling settings (export --set truncation=1.2), not the run's
    served = {k: manifest.training.config[k] for k in get_family(manifest.family).SAMPLING_FIELDS
              if k in manifest.training.config}
    model, ckpt = resampled(model, ckpt, served)
    assert isinstance(model, GeneratorCritic)
    onnx_path = manifest.onnx_path(model_dir)
    drift = parameter_drift(model, onnx_path)
    if drift > 1e-6:
        raise WeightsError(
            f"{checkpoint_path}: its generator's weights lie {drift:.2e} from the served version's; "
            "it has trained on, so export it as a new version (imagegen export) instead"
        )
    # the served batch-norm statistics, so it draws the same (the trained generator, when an
    # average is kept, stays as the run left it)
    copy_weights(model.sampled_generator, generator_weights(model, onnx_path))
    model.eval()
    gap = largest_gap(model, onnx_path)
    if gap > 1e-4:
        raise WeightsError(f"{checkpoint_path}: its sampler draws {gap:.2e} away from {onnx_path}")
    relative = f"{manifest.version}/{WEIGHTS_NAME}"
    # the version's progress: a warm-up run counted its epochs from the recovered file's zero
    progress = {"epoch": manifest.training.epochs, "step": manifest.training.steps}
    path = save_weights(model_dir / relative, model, {**ckpt, **progress}, beside=onnx_path)
    training = manifest.training.model_copy(
        update={"weights_file": relative, "weights_sha256": sha256_file(path)}
    )
    manifest.model_copy(update={"training": training}).write(model_dir)
    return gap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recover", description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path, help="models/<id> (its current version)")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--out", type=Path, help="write the recovered weights to this file")
    action.add_argument("--attach", type=Path, help="keep its weights beside the served version")
    args = parser.parse_args(argv)
    try:
        if args.out:
            gap, wrote = recover(args.model_dir, args.out), args.out
        else:
            gap = attach(args.model_dir, args.attach)
            wrote = args.model_dir / str(Manifest.read(args.model_dir).version) / WEIGHTS_NAME
    except (WeightsError, OSError) as exc:
        print(f"recover: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"wrote": str(wrote), "largest_gap_to_onnx": gap}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
