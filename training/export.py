"""`imagegen export`: a training run's checkpoint -> the ONNX model repository.

    imagegen export runs/gan-mnist --models-dir models/ [--id gan-mnist] [--grid docs/grids/gan-mnist.png]
    imagegen export runs/gan-emoji --set truncation=0.7   # a sampling setting, no retraining

Writes `models/<id>/<version>/model.onnx` (plus e.g. `encoder.onnx` for the VAE) and
`models/<id>/manifest.json` (docs/design.md; validated by `imagegen.contract.manifest.Manifest`). Each graph
is exported in eval mode with a dynamic batch axis, then run through ONNX Runtime and compared
with torch on random inputs; a graph that differs by more than the tolerance, depends on its
batch, or leaves [0, 1] is refused and nothing is written.

Beside the ONNX files, `training.safetensors` keeps every net's weights and the run's progress,
so `imagegen train --resume-from models/<id>` can continue the shipped model. The quality gate
(`training.gate`) measures the new version with both reference classifiers before anything is
written, and refuses one that either classifier finds worse than the version it would replace
(class accuracy, fid_cls, recall: no accuracy bought with recall) unless `--force`; the manifest
keeps the replaced version's metrics as `previous`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import onnxruntime as ort

from imagegen.contract.manifest import (
    MANIFEST_NAME,
    Manifest,
    OnnxSpec,
    TrainingRecord,
    default_model_id,
    sha256_file,
)
from imagegen.contract.triton_config import write_config
from training.cards import add_card_arguments, checkpoint_card, given_card
from training.checkpoint import build_model, load_checkpoint
from training.cli_help import DefaultsHelpFormatter
from training.data import DatasetError, given_data_dir
from training.evaluate import EvalConfig, EvaluationError
from training.families import get_family, parse_overrides
from training.families.base import ExportSpec, FamilyModel
from training.gate import GateRefusal, quality_gate
from training.grid import grid_inputs, save_grid
from training.onnx_graph import OPSET, TOLERANCE, ExportError, check_parity, export_graph
from training.weights import WEIGHTS_NAME, save_weights

MAX_BYTES = 10 * 1024 * 1024
FILE_NAMES = {"model": "model.onnx"}


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    if (model_dir / MANIFEST_NAME).exists():
        try:
            versions.append(Manifest.read(model_dir).version)
        except ValueError:
            pass
    return max(versions, default=0) + 1


def build_manifest(
    model: FamilyModel,
    ckpt: dict[str, Any],
    model_id: str,
    version: int,
    files: dict[str, tuple[str, str]],
    specs: dict[str, ExportSpec],
) -> Manifest:
    cfg, data, run = model.config, ckpt["dataset"], ckpt["run_config"]
    main_spec = specs["model"]
    extra = {
        role: OnnxSpec(
            file=files[role][0],
            sha256=files[role][1],
            opset=OPSET,
            inputs={n: [-1, *s] for n, s in spec.input_shapes.items()},
            outputs={n: [-1, *s] for n, s in spec.output_shapes.items()},
        )
        for role, spec in specs.items()
        if role != "model"
    }
    variant = run["variant"]
    return Manifest(
        id=model_id,
        family=ckpt["family"],
        dataset=data["name"],
        version=version,
        image={"channels": cfg.channels, "height": cfg.image_size, "width": cfg.image_size},
        latent_dim=cfg.latent_dim if "z" in model.inputs else 0,
        num_classes=len(data["class_names"]),
        class_names=list(data["class_names"]),
        inputs={n: [-1, *s] for n, s in main_spec.input_shapes.items()},
        outputs={"image": [-1, cfg.channels, cfg.image_size, cfg.image_size]},
        onnx=OnnxSpec(file=files["model"][0], sha256=files["model"][1], opset=OPSET),
        extra_onnx=extra,
        baseline=variant == "seed",
        variant=variant,
        training=TrainingRecord(
            epochs=ckpt["epoch"],
            seed=run["seed"],
            duration_s=round(ckpt["duration_s"], 1),
            device=ckpt.get("device", "cpu"),
            threads=ckpt.get("threads") or 0,
            commit=git_commit(),
            steps=ckpt["step"],
            batch_size=run["batch_size"],
            train_images=data["train_images"],
            torch=ckpt.get("torch") or "",
            guidance=getattr(cfg, "guidance", None),
            init_from=run.get("resume_from") or run.get("init_from") or None,
            config=ckpt["model_config"],
        ),
    )


def with_sampling_settings(
    model: FamilyModel, ckpt: dict[str, Any], settings: list[str]
) -> tuple[FamilyModel, dict[str, Any]]:
    """The checkpoint's weights under changed sampling settings (`--set truncation=0.7`); the
    manifest records the config actually exported."""
    family = ckpt["family"]
    values = parse_overrides(family, settings)
    allowed = get_family(family).SAMPLING_FIELDS
    refused = sorted(set(values) - set(allowed))
    if refused:
        raise ValueError(
            f"--set {refused}: only sampling settings change at export; the {family} family has "
            f"{list(allowed) or 'none'} (other fields need training: imagegen train --set)"
        )
    return resampled(model, ckpt, values)


def resampled(
    model: FamilyModel, ckpt: dict[str, Any], values: dict[str, Any]
) -> tuple[FamilyModel, dict[str, Any]]:
    """The same weights under sampling settings `values` (already checked to be such)."""
    ckpt = {**ckpt, "model_config": {**ckpt["model_config"], **values}}
    rebuilt = build_model(ckpt["family"], ckpt["model_config"])
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt, ckpt


def export_run(
    run_dir: Path,
    models_dir: Path,
    model_id: str | None = None,
    grid: Path | None = None,
    tolerance: float = TOLERANCE,
    settings: list[str] | None = None,
    gate: EvalConfig | None = None,
    force: bool = False,
    card: dict[str, str] | None = None,
) -> Manifest:
    """Export a run as the next version of its model id. With `gate`, the new version is
    measured first and refused (ExportError naming the figures) when either reference
    classifier finds it worse than the version it would replace, unless `force`. A model whose
    card cannot be made (an image folder without a licence and attribution, in `card` or the
    folder's card.json) is refused first (training.cards.CardMissing, naming what to add)."""
    model, ckpt = load_checkpoint(run_dir)
    if settings:
        model, ckpt = with_sampling_settings(model, ckpt, settings)
    model.eval()
    run = ckpt["run_config"]
    model_card = checkpoint_card(ckpt, "label" in model.inputs, card)
    model_id = model_id or default_model_id(ckpt["family"], ckpt["dataset"]["name"], run["variant"])
    specs = model.export_specs()
    num_classes = model.config.num_classes
    model_dir = models_dir / model_id
    version = next_version(model_dir)
    files: dict[str, tuple[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)  # laid out like model_dir, so the candidate can be measured in place
        (staged / str(version)).mkdir()
        for role, spec in specs.items():
            name = FILE_NAMES.get(role, f"{role}.onnx")
            path = staged / str(version) / name
            export_graph(spec, path)
            size = path.stat().st_size
            if size > MAX_BYTES:
                raise ExportError(f"{name} is {size / 2**20:.1f} MiB (limit {MAX_BYTES / 2**20:.0f} MiB)")
            diff = check_parity(spec, path, num_classes, tolerance=tolerance)
            print(f"{model_id} v{version} {name}: {size / 1024:.0f} KiB, max |onnx - torch| = {diff:.1e}")
            files[role] = (f"{version}/{name}", sha256_file(path))
        manifest = build_manifest(model, ckpt, model_id, version, files, specs)
        manifest.card = model_card
        weights = save_weights(
            staged / str(version) / WEIGHTS_NAME, model, ckpt, beside=manifest.onnx_path(staged)
        )
        manifest.training = manifest.training.model_copy(
            update={"weights_file": f"{version}/{WEIGHTS_NAME}", "weights_sha256": sha256_file(weights)}
        )
        if gate is not None:
            try:
                manifest.metrics = quality_gate(manifest, staged, model_dir, gate, force)
            except GateRefusal as exc:
                raise ExportError(str(exc)) from exc
        shutil.copytree(staged / str(version), model_dir / str(version))
    manifest.write(model_dir)
    write_config(model_dir, manifest)  # Triton's config.pbtxt, so Triton/KServe can serve models/ too
    Manifest.read(model_dir)  # what the service will read must validate
    if grid is not None:
        render_grid(model_dir, manifest, grid)
    return manifest


def render_grid(model_dir: Path, manifest: Manifest, path: Path) -> Path:
    """The documentation grid, drawn by ONNX Runtime from the exported file (what is served)."""
    session = ort.InferenceSession(str(manifest.onnx_path(model_dir)), providers=["CPUExecutionProvider"])
    feeds, cols = grid_inputs(tuple(manifest.inputs), manifest.latent_dim, manifest.num_classes)
    (images,) = session.run(["image"], feeds)
    return save_grid(images, cols, path, scale=2 if manifest.image.height <= 32 else 1)


def gate_config(args: argparse.Namespace) -> EvalConfig:
    data_dir = given_data_dir(args.data_dir)
    if data_dir is None:
        raise ExportError(
            "the quality gate measures the new version on real data: give --data-dir or set "
            "IMAGEGEN_DATA_DIR (or --no-gate to export unmeasured)"
        )
    return EvalConfig(args.models_dir, args.classifiers_dir, data_dir, samples=args.eval_samples)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imagegen export",
        description="Export a training run to ONNX.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("run", type=Path, help="run directory (holds checkpoint.pt) or a checkpoint file")
    p.add_argument("--models-dir", type=Path, default=Path("models"), help="the model repository")
    p.add_argument("--id", default=None, help="model id (default <family>-<dataset>[-seed])")
    p.add_argument("--grid", type=Path, default=None, help="also write a sample grid PNG here")
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a sampling setting, e.g. --set truncation=0.7 (gan) or --set temperature=0.6 (vae)",
    )
    p.add_argument("--force", action="store_true",
                   help="export even when the new version measures worse than the one it replaces")
    p.add_argument("--no-gate", action="store_true",
                   help="skip measuring the new version (no metrics written; evaluate it later)")
    p.add_argument("--classifiers-dir", type=Path, default=Path("classifiers"),
                   help="the reference classifiers the quality gate measures with")
    p.add_argument("--data-dir", type=Path, default=None, help="real data root (default $IMAGEGEN_DATA_DIR)")
    p.add_argument("--eval-samples", type=int, default=10_000, help="images the quality gate measures")
    add_card_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        gate = None if args.no_gate else gate_config(args)
        manifest = export_run(
            args.run, args.models_dir, args.id, args.grid,
            settings=args.settings, gate=gate, force=args.force, card=given_card(args),
        )
    except (ExportError, EvaluationError, DatasetError, FileNotFoundError, ValueError) as exc:
        print(f"imagegen export: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.models_dir / manifest.id / MANIFEST_NAME} (version {manifest.version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
