"""Rank a run's checkpoints (or exported versions) without touching what reports them.

A model picked by a classifier's figures learns that classifier's taste (gan-mnist v2, picked
by the reference classifier's epoch figures, scored 4.5 points lower by an independent one).
So selection here uses only what the reported figures never use:

- the selection classifier `classifiers/<dataset>/select/` (role `selection`: its own
  architecture width, seed 2 and training run; neither reference classifier, `cnn` nor `resnet`,
  is ever loaded here);
- seeds from 1,000,000 up (`--seed`, refused below: seeds 0..999,999 are kept for reported
  figures, which use 0..9,999), so a checkpoint is never picked on the images that then report it.

Each candidate is a checkpoint (a run directory, a `.pt` file, a `training.safetensors` file or
a version folder `models/<id>/<version>/` holding one: its generator is exported to a temporary
ONNX file, exactly as `imagegen export` would) or a model folder (`models/<id>`, its current
version as served). The same figures as `imagegen evaluate` are measured with
the selection classifier (class accuracy, worst class, fid_cls, precision/recall, within-class
diversity), and the candidates are printed best first by `--by` (default fid_cls, which moves
with both fidelity and variety). Nothing is written; export the chosen checkpoint, and its
reported figures come from the two reference classifiers on seeds 0..9,999.

    python -m training.selection runs/gan-mnist/epoch-*.pt models/gan-mnist --data-dir $IMAGEGEN_DATA_DIR
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from imagegen.contract.classifier import SELECTION_SEED
from imagegen.contract.manifest import MANIFEST_NAME, Figures, Manifest, sha256_file
from training.cli_help import DefaultsHelpFormatter
from training.data import DatasetError
from training.evaluate import EvalConfig, Judges, add_measure_options, generate, judge, measure_config
from training.gate import figure_text
from training.reference import EvaluationError, selection_extractor

LOWER_IS_BETTER = {"fid_cls", "fid_cls_matched"}
RANK_KEYS = ("fid_cls", "class_accuracy", "worst_class_accuracy", "recall", "precision", "diversity_ratio")


def candidate_manifest(path: Path, work: Path) -> tuple[Manifest, Path]:
    """(manifest, folder its files are under) of a model folder, or of a checkpoint or training
    weights exported to `work`."""
    if (path / MANIFEST_NAME).exists():
        return Manifest.read(path), path
    from training.checkpoint import load_checkpoint  # torch only for checkpoints
    from training.export import build_manifest
    from training.onnx_graph import export_graph
    from training.weights import WEIGHTS_NAME, load_weights

    if path.suffix == ".safetensors" or (path / WEIGHTS_NAME).exists():
        model, ckpt = load_weights(path)  # an exported version's (or a kept run's) training weights
    else:
        model, ckpt = load_checkpoint(path)
    model.eval()
    spec = model.export_specs()["model"]
    (work / "1").mkdir(parents=True)
    onnx_path = work / "1" / "model.onnx"
    export_graph(spec, onnx_path)
    files = {"model": ("1/model.onnx", sha256_file(onnx_path))}
    return build_manifest(model, ckpt, "candidate", 1, files, {"model": spec}), work


def measure_candidates(paths: list[Path], cfg: EvalConfig) -> list[tuple[str, Figures]]:
    """Each candidate's figures by the selection classifier, on the selection seeds."""
    if cfg.seed < SELECTION_SEED:
        raise EvaluationError(
            f"--seed {cfg.seed}: seeds below {SELECTION_SEED:,} are kept for reported figures; "
            f"selection draws from {SELECTION_SEED:,} up"
        )
    judges: dict[str, Judges] = {}
    measured = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(paths):
            manifest, files = candidate_manifest(path, Path(tmp) / str(i))
            if manifest.dataset not in judges:
                extractor = selection_extractor(cfg.classifiers_dir, manifest.dataset, cfg.threads)
                judges[manifest.dataset] = Judges.build([extractor], manifest.dataset, cfg)
            images, labels = generate(manifest, files, cfg.samples, cfg.seed, cfg.threads)
            (figures,) = judge(manifest, images, labels, judges[manifest.dataset]).values()
            measured.append((str(path), Figures.model_validate(figures)))
            print(f"measured {path}", flush=True)
    return measured


def ranked(measured: list[tuple[str, Figures]], by: str) -> list[tuple[str, Figures]]:
    """Best first by `by`; candidates without that figure last."""
    def key(item: tuple[str, Figures]) -> tuple[bool, float]:
        value = getattr(item[1], by)
        if value is None:
            return (True, 0.0)
        return (False, value if by in LOWER_IS_BETTER else -value)

    return sorted(measured, key=key)


def table(rows: list[tuple[str, Figures]]) -> str:
    width = max(len(name) for name, _ in rows)
    lines = [f"{'candidate':<{width}}  " + "  ".join(f"{k:>20}" for k in RANK_KEYS) + "  worst class"]
    for name, f in rows:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{figure_text(f, k):>20}" for k in RANK_KEYS)
                     + f"  {f.worst_class or '-'}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.selection",
        description="Rank checkpoints or exported versions by the selection classifier on selection seeds "
        "(never the reference classifiers or the reported seeds).",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("candidates", nargs="+", type=Path,
                   help="run directories, checkpoint files or model folders (models/<id>)")
    p.add_argument("--by", choices=RANK_KEYS, default="fid_cls", help="the figure to rank by")
    # seeds from SELECTION_SEED up; lower ones are refused (kept for reported figures)
    add_measure_options(p, "holds <dataset>/select/, the selection classifier", 5_000, SELECTION_SEED)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = measure_config(args, "select", Path("."))
    if cfg is None:
        return 2
    try:
        measured = measure_candidates(args.candidates, cfg)
    except (EvaluationError, DatasetError, FileNotFoundError) as exc:
        print(f"select: error: {exc}", file=sys.stderr)
        return 2
    seeds = f"{args.seed:,}..{args.seed + args.samples - 1:,}"
    print(f"by the selection classifier, seeds {seeds}; best {args.by} first")
    print(table(ranked(measured, args.by)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
