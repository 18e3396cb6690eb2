"""Resolving a model name: an id, or a family resolved with a dataset to that family's own model.

Pure lookups over the models the store knows (no file is read, nothing is hashed), so the
registry and `imagegen sample` resolve a name the same way. A family request (`model=gan&
dataset=emoji`) resolves to that family's model for the dataset (`gan-emoji`) or fails naming
why; it is never served by a `-seed` baseline or another dataset's model in its place.
"""

from __future__ import annotations

from collections.abc import Mapping

from imagegen.contract.manifest import FAMILIES, default_model_id
from service.errors import InvalidParameter, ModelUnavailable, UnknownModel
from service.store.served import ServedModel


def find_model(
    models: Mapping[str, ServedModel], model: str, dataset: str | None, default_dataset: str
) -> ServedModel:
    """`model` is an id (checked against `dataset` when given), or a family resolved with
    `dataset` (default `default_dataset`) to its non-baseline model; whatever its state."""
    if model in models:
        served = models[model]
        if dataset is not None and served.manifest is not None and served.manifest.dataset != dataset:
            raise InvalidParameter(
                f"model {model!r} is trained on {served.manifest.dataset!r}, not {dataset!r}",
                parameter="dataset",
                allowed=[served.manifest.dataset],
            )
        return served
    return family_default(models, model, dataset or default_dataset)


def family_default(models: Mapping[str, ServedModel], family: str, dataset: str) -> ServedModel:
    """The family's own model for `dataset`: `<family>-<dataset>` when the repository has that
    folder (whatever its state, so a broken one is reported, not replaced), else another
    non-baseline model of that family and dataset. Never a `-seed` baseline."""
    expected = default_model_id(family, dataset)
    if expected in models:
        return models[expected]
    ids = sorted(models)
    family_models = [m for m in models.values() if m.manifest is not None and m.manifest.family == family]
    if not family_models:
        known = sorted({m.manifest.family for m in models.values() if m.manifest is not None})
        hint = (
            "no model of that family is loaded" if family in FAMILIES else "expected a model id or a family"
        )
        raise UnknownModel(f"unknown model {family!r}: {hint}", models=ids, families=known)
    matches = sorted(
        (m for m in family_models if m.require_manifest().dataset == dataset),
        key=lambda m: (m.require_manifest().baseline, m.id),
    )
    if matches and not matches[0].require_manifest().baseline:
        return matches[0]
    if matches:  # only baselines: they answer to their ids, never in place of the family's model
        baselines = [m.id for m in matches]
        raise ModelUnavailable(
            f"family {family!r} has no model for dataset {dataset!r}: {expected} is not in the "
            f"repository (the seed baseline {baselines[0]} is served only by its id)",
            model=expected,
            baselines=baselines,
        )
    raise UnknownModel(
        f"family {family!r} has no model for dataset {dataset!r}",
        models=ids,
        datasets=sorted({m.require_manifest().dataset for m in family_models}),
    )
