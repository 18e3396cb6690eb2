"""Export's quality gate: a new version against the one it would replace, by both reference
classifiers.

The new version is measured (`training.evaluate`, both classifiers) before anything is
written. It is refused, unless `--force`, when by either classifier its class accuracy falls
by more than the sampling noise of the images measured, its fid_cls rises or its recall falls: a
version that gains class accuracy by losing recall (fewer of the real images lie inside what it
draws) is named as such. Near 100% a strict comparison of accuracy decides on noise (at 99.9% on
10,000 images one standard error of the difference between two versions is 4.5 images), so a
fall counts when a pooled two-proportion test puts it beyond 1.96 standard errors (11 images
there); a fall within that is printed, not counted. Recall and fid_cls are held strictly.

A version admitted with `--force` records what the gate found worse (`metrics.gate_overridden`),
so the repository shows which versions were exported past the gate and why they were refused.

The figures of the version now served are used as recorded when they were measured the same way
(samples, first seed and the same classifier files); otherwise that version is measured again
with the gate's settings, so both sides stand on the same footing. The manifest keeps the
replaced version's figures as `previous`.

`imagegen evaluate --compare models/<id>` prints the same comparison for the version now served.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from imagegen.contract.manifest import MANIFEST_NAME, Figures, Manifest, QualityMetrics
from training.evaluate import EvalConfig, Judges, evaluate_model

TABLE_KEYS = (
    "class_accuracy", "worst_class_accuracy", "fid_cls", "fid_cls_matched", "precision", "recall",
    "diversity_ratio",
)


class GateRefusal(Exception):
    """The new version measures worse than the one it would replace."""


def _pct(x: float) -> str:
    # two decimals: on the gate's 10,000 images a hundredth of a point is one image, and one
    # decimal showed a fall of one image (99.85% -> 99.84%) as 99.9% -> 99.8%
    return f"{100 * x:.2f}%"


def figure_text(f: Figures | None, key: str) -> str:
    """One figure as the gate's and the selection's comparison tables print it ("-" when absent)."""
    value = None if f is None else getattr(f, key)
    if value is None:
        return "-"
    return _pct(value) if "accuracy" in key else f"{value:.3f}"


# a fall in class accuracy beyond this many standard errors is not sampling noise (95%, two-sided)
NOISE_Z = 1.96


def _misread(new: float, old: float, samples: int | None) -> str:
    """How many more of the measured images the classifier misread, when their number is known."""
    return f", {round((old - new) * samples)} more of {samples:,} images misread" if samples else ""


@dataclass(frozen=True)
class AccuracyFall:
    text: str  # "class accuracy 99.90% < 99.92% (cnn, 2 more of 10,000 images misread)"
    z: float | None  # standard errors of the difference; None when the sample count is unknown

    @property
    def beyond_noise(self) -> bool:
        return self.z is None or self.z > NOISE_Z


def accuracy_fall(name: str, new: float, old: float, samples: int | None) -> AccuracyFall | None:
    """The fall from `old` to `new` class accuracy, each measured on `samples` images, with its
    size in standard errors (pooled two-proportion test); None when accuracy did not fall."""
    if new >= old:
        return None
    text = f"class accuracy {_pct(new)} < {_pct(old)} ({name}{_misread(new, old, samples)})"
    if not samples:
        return AccuracyFall(text, None)
    error_rate = 1 - (new + old) / 2
    standard_error = math.sqrt(2 * error_rate * (1 - error_rate) / samples)
    return AccuracyFall(text, (old - new) / standard_error)


def _paired_figures(new: QualityMetrics, old: QualityMetrics) -> list[tuple[str, Figures, Figures]]:
    """(classifier, new figures, old figures) for each classifier both were measured with."""
    old_figures = old.classifier_figures()
    pairs = new.classifier_figures().items()
    return [(name, f, old_figures[name]) for name, f in pairs if name in old_figures]


def figure_regressions(name: str, new: Figures, old: Figures, samples: int | None = None) -> list[str]:
    """What one classifier finds worse from `old` to `new` (each measured on `samples` images)."""
    worse = []
    gained = None
    if new.class_accuracy is not None and old.class_accuracy is not None:
        fall = accuracy_fall(name, new.class_accuracy, old.class_accuracy, samples)
        if fall is not None and fall.beyond_noise:
            worse.append(fall.text)
        elif new.class_accuracy > old.class_accuracy:
            gained = f"{_pct(old.class_accuracy)} -> {_pct(new.class_accuracy)}"
    if new.fid_cls > old.fid_cls:
        worse.append(f"fid_cls {new.fid_cls:.2f} > {old.fid_cls:.2f} ({name})")
    if new.recall < old.recall:
        lost = f"recall {new.recall:.3f} < {old.recall:.3f}"
        worse.append(f"gains class accuracy ({gained}) by losing {lost} ({name})" if gained
                     else f"{lost} ({name})")
    return worse


def regressions(new: QualityMetrics, old: QualityMetrics) -> list[str]:
    """What got worse from `old` to `new`, by each classifier both were measured with."""
    samples = new.evaluation.samples
    return [w for name, f, o in _paired_figures(new, old) for w in figure_regressions(name, f, o, samples)]


def falls_within_noise(new: QualityMetrics, old: QualityMetrics) -> list[str]:
    """The falls in class accuracy the gate does not count, each with its size in standard errors."""
    notes = []
    for name, f, o in _paired_figures(new, old):
        if f.class_accuracy is None or o.class_accuracy is None:
            continue
        fall = accuracy_fall(name, f.class_accuracy, o.class_accuracy, new.evaluation.samples)
        if fall is not None and not fall.beyond_noise:
            notes.append(f"{fall.text}: {fall.z:.2f} standard errors, within sampling noise (not counted)")
    return notes


def comparable(m: QualityMetrics, cfg: EvalConfig, judges: Judges) -> bool:
    """Measured with the gate's samples, seed and exactly these classifier files."""
    ev = m.evaluation
    used = {name: ref.sha256 for name, ref in (ev.classifiers or {}).items()}
    wanted = {e.name: e.sha256 for e in judges.extractors}
    return (ev.samples, ev.seed) == (cfg.samples, cfg.seed) and used == wanted


def served_metrics(model_dir: Path, cfg: EvalConfig, judges: Judges) -> QualityMetrics | None:
    """The figures of the version now served, measured as the gate measures (again if need be)."""
    if not (model_dir / MANIFEST_NAME).exists():
        return None
    current = Manifest.read(model_dir)
    m = current.metrics
    if m is not None and m.evaluation.onnx_sha256 == current.onnx.sha256 and comparable(m, cfg, judges):
        return m
    print(f"{current.id} v{current.version}: measuring the version now served as the gate measures")
    return QualityMetrics.model_validate(evaluate_model(current, model_dir, judges, cfg))


def quality_gate(
    candidate: Manifest, staged: Path, model_dir: Path, cfg: EvalConfig, force: bool
) -> QualityMetrics:
    """The candidate's metrics (its files under `staged`), with the replaced version's kept as
    `previous`; raises GateRefusal when they are worse and `force` is not set."""
    judges = Judges.reference(candidate.dataset, cfg)
    new = QualityMetrics.model_validate(evaluate_model(candidate, staged, judges, cfg))
    old = served_metrics(model_dir, cfg, judges)
    worse: list[str] = []
    if old is not None:
        worse = regressions(new, old)
        print(comparison_table([(f"v{old.evaluation.model_version} (current)", old),
                                (f"v{candidate.version} (new)", new)]))
        for note in falls_within_noise(new, old):
            print(note)
        if worse and not force:
            raise GateRefusal(
                f"{candidate.id} v{candidate.version} is worse than v{old.evaluation.model_version}: "
                f"{'; '.join(worse)}. Nothing was written; --force exports it anyway"
            )
    if worse:  # forced: the manifest says so, and what was overridden
        print(f"--force: exported past the gate: {'; '.join(worse)}")
    kept = old.model_copy(update={"previous": None}) if old else None
    return new.model_copy(update={"previous": kept, "gate_overridden": worse or None})


def comparison_table(rows: list[tuple[str, QualityMetrics | None]]) -> str:
    """Versions side by side, one column per (name, metrics), one line per figure and classifier."""
    names = list(dict.fromkeys(n for _, m in rows if m is not None for n in m.classifier_figures()))
    width = max(12, *(len(label) for label, _ in rows))
    lines = [f"{'':<30}" + "".join(f"{label:>{width + 2}}" for label, _ in rows)]
    for name in names:
        figs = [None if m is None else m.classifier_figures().get(name) for _, m in rows]
        for key in TABLE_KEYS:
            if all(figure_text(f, key) == "-" for f in figs):
                continue
            cells = "".join(f"{figure_text(f, key):>{width + 2}}" for f in figs)
            lines.append(f"{f'{key} ({name})':<30}" + cells)
    worst = [f"{label}: {m.worst_class}" for label, m in rows if m is not None and m.worst_class]
    if worst:
        lines.append("worst class (held): " + ", ".join(worst))
    return "\n".join(lines)


def compare(model_dir: Path, cfg: EvalConfig) -> str:
    """`imagegen evaluate --compare models/<id>`: the current version measured now beside the
    figures recorded for it and for the version it replaced."""
    manifest = Manifest.read(model_dir)
    now = QualityMetrics.model_validate(
        evaluate_model(manifest, model_dir, Judges.reference(manifest.dataset, cfg), cfg)
    )
    recorded = manifest.metrics
    previous = recorded.previous if recorded is not None else None
    rows = [
        (f"v{previous.evaluation.model_version} (previous)" if previous else "previous", previous),
        (f"v{manifest.version} (recorded)", recorded),
        (f"v{manifest.version} (now)", now),
    ]
    return f"{manifest.id}\n" + comparison_table(rows)
