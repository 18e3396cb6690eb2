"""The quality issue's targets checked against the figures held in the models' manifests, and
the versions exported past the quality gate (`--force`): what docs/quality.md and
`python -m training.report` say was met, missed or overridden."""

from __future__ import annotations

from dataclasses import dataclass

from imagegen.contract.manifest import Manifest, QualityMetrics

# The third quality round's targets for our conditional models (overall class accuracy, worst
# class), both reference classifiers: MNIST 98% / 94%, Fashion 93% / 75%, emoji 75% / 40%.
CLASS_TARGETS = {"mnist": (0.98, 0.94), "fashion": (0.93, 0.75), "emoji": (0.75, 0.40)}


@dataclass
class Row:
    manifest: Manifest

    @property
    def m(self) -> QualityMetrics:
        if self.manifest.metrics is None:
            raise ValueError(f"{self.manifest.id} has no metrics: run imagegen evaluate")
        return self.manifest.metrics

    @property
    def evaluated(self) -> bool:
        """Metrics present and measured on the ONNX file the manifest now names (a re-export
        makes a new version, whose quality is unknown until it is evaluated again)."""
        m = self.manifest.metrics
        return m is not None and m.evaluation.onnx_sha256 == self.manifest.onnx.sha256


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def check_targets(rows: list[Row]) -> list[tuple[bool | None, str]]:
    """(met, sentence) per target of the issue, with the numbers; met is None where the
    comparison cannot be made."""
    results: list[tuple[bool | None, str]] = []
    for r in rows:
        man = r.manifest
        if man.baseline or man.dataset not in CLASS_TARGETS or not man.conditional or not r.evaluated:
            continue
        m = r.m
        overall_t, worst_t = CLASS_TARGETS[man.dataset]
        ok = (m.class_accuracy or 0.0) >= overall_t and (m.worst_class_accuracy or 0.0) >= worst_t
        results.append(
            (
                ok,
                (
                    f"`{man.id}` class accuracy {pct(m.class_accuracy)} (target >= {pct(overall_t)}), "
                    f"worst class {m.worst_class} {pct(m.worst_class_accuracy)} (target >= {pct(worst_t)})"
                ),
            )
        )
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        if r.evaluated:
            groups.setdefault((r.manifest.dataset, r.manifest.family), []).append(r)
    for (dataset, family), group in sorted(groups.items()):
        ours = [r for r in group if not r.manifest.baseline]
        seeds = [r for r in group if r.manifest.baseline]
        if ours and not seeds:
            results.append((None, f"{dataset} `{family}`: no seed baseline shipped, fid_cls not compared"))
        if not ours or not seeds:
            continue
        best = min(ours, key=lambda r: r.m.fid_cls)
        base = min(seeds, key=lambda r: r.m.fid_cls)
        ok = best.m.fid_cls < base.m.fid_cls
        results.append(
            (
                ok,
                (
                    f"{dataset} `{family}`: ours `{best.manifest.id}` fid_cls {best.m.fid_cls:.2f} vs seed "
                    f"baseline `{base.manifest.id}` {base.m.fid_cls:.2f} (lower is better)"
                ),
            )
        )
    return results


def forced_past_gate(rows: list[Row]) -> list[str]:
    """`<id>` v<n>: what the gate found worse, for each version `--force` admitted."""
    return [
        f"`{r.manifest.id}` v{r.manifest.version}: {'; '.join(r.m.gate_overridden or [])}"
        for r in rows
        if r.evaluated and r.m.gate_overridden
    ]
