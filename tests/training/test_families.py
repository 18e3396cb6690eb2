"""The four families: registry, config presets, shapes, and a few real training steps that
lower each family's loss on a fixed batch of the committed subset."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch

from imagegen.contract.families import FAMILIES as FAMILY_NAMES
from tests.training.conftest import TINY
from training.data import load_dataset
from training.families import FAMILIES, get_family
from training.families.base import Family, FamilyModel, upsample_plan

CASES = [(f, v) for f in ("label", "evaluator", "gan", "vae") for v in ("default", "seed")]


def tiny_model(
    family: str, variant: str = "default", channels: int = 1, image_size: int = 28, num_classes: int = 10
):
    module = get_family(family)
    overrides = dict(TINY[family])
    if family == "vae" and variant == "seed":
        overrides.pop("latent_dim")
    cfg = module.Config.create(
        variant, channels=channels, image_size=image_size, num_classes=num_classes, **overrides
    )
    torch.manual_seed(0)
    return module.Model(cfg)


def test_registry_names_the_four_families():
    assert sorted(FAMILIES) == ["evaluator", "gan", "label", "vae"]
    with pytest.raises(ValueError, match="unknown family 'diffusion'"):
        get_family("diffusion")


def test_every_family_module_is_a_family_named_as_in_the_contract():
    assert tuple(FAMILIES) == FAMILY_NAMES
    for module in FAMILIES.values():
        assert isinstance(module, Family)
        assert issubclass(module.Model, FamilyModel) and dataclasses.is_dataclass(module.Config)
        assert set(module.SAMPLING_FIELDS) <= {f.name for f in dataclasses.fields(module.Config)}
    # the check can fail: a module without the sampling fields is not a family
    assert not isinstance(types.SimpleNamespace(Config=FAMILIES["gan"].Config, Model=FamilyModel), Family)


def test_config_is_frozen_and_presets_apply():
    gan = get_family("gan").Config.create("seed")
    assert (gan.loss, gan.lr, gan.spectral_norm) == ("bce", 1e-3, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        gan.lr = 1.0  # type: ignore[misc]
    assert get_family("evaluator").Config.create(guidance="reference").variant == "seed"
    vae_seed = get_family("vae").Config.create("seed")
    assert not vae_seed.conditional and vae_seed.latent_dim == 2
    with pytest.raises(ValueError, match="unknown config fields"):
        get_family("vae").Config.create(width_typo=3)
    with pytest.raises(ValueError, match="unknown variant"):
        get_family("label").Config.create("best")


def test_upsample_plan():
    assert upsample_plan(28) == (7, 2)
    assert upsample_plan(64) == (8, 3)
    with pytest.raises(ValueError):
        upsample_plan(7)


@pytest.mark.parametrize(("family", "variant"), CASES)
def test_sampler_inputs_shape_and_range(family, variant):
    model = tiny_model(family, variant)
    spec = model.export_specs()["model"]
    assert spec.input_names == model.inputs
    expected_inputs = {"label": ("label",), "vae": ("z",) if variant == "seed" else ("z", "label")}
    assert model.inputs == expected_inputs.get(family, ("z", "label"))
    with torch.no_grad():
        image = spec.module(*spec.example_inputs)
    assert image.shape == (3, 1, 28, 28)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def _lowers_loss(model, x, y, steps: int) -> tuple[float, float]:
    opts = model.configure_optimizers()
    probe = x[:64], y[:64]
    before = model.probe_loss(*probe, torch.Generator().manual_seed(1))
    for i in range(steps):
        idx = torch.arange(i * 32, (i + 1) * 32) % len(x)
        model.train_step(x[idx], y[idx], opts)
    after = model.probe_loss(*probe, torch.Generator().manual_seed(1))
    return before, after


@pytest.mark.parametrize(("family", "variant"), CASES)
@pytest.mark.parametrize("dataset", ["mnist", "fashion"])
def test_a_few_steps_on_real_images_lower_the_loss(data_dir, family, variant, dataset):
    ds = load_dataset(dataset, data_dir)
    x, y = torch.from_numpy(ds.as_float()), torch.from_numpy(ds.labels)
    model = tiny_model(family, variant)
    before, after = _lowers_loss(model, x, y, steps=20)
    assert after < before, f"{family}/{variant} on {dataset}: probe loss {before:.4f} -> {after:.4f}"


@pytest.mark.parametrize("family", ["gan", "vae", "evaluator"])
def test_emoji_64x64_rgb_steps_lower_the_loss(emoji_dir, family):
    ds = load_dataset("imagefolder", emoji_dir)
    x, y = torch.from_numpy(ds.as_float()), torch.from_numpy(ds.labels)
    model = tiny_model(family, channels=3, image_size=64, num_classes=9)
    spec = model.export_specs()["model"]
    with torch.no_grad():
        assert spec.module(*spec.example_inputs).shape == (3, 3, 64, 64)
    before, after = _lowers_loss(model, x, y, steps=12)
    assert after < before, f"{family} on emoji: probe loss {before:.4f} -> {after:.4f}"


def test_unconditional_when_one_class():
    model = tiny_model("gan", num_classes=1)
    assert model.inputs == ("z",)
    spec = model.export_specs()["model"]
    assert spec.input_names == ("z",)


def test_vae_exports_its_encoder_too():
    specs = tiny_model("vae").export_specs()
    assert set(specs) == {"model", "encoder"}
    enc = specs["encoder"]
    assert enc.input_names == ("image", "label") and enc.output_names == ("mu", "logvar")
    mu, logvar = enc.module(*enc.example_inputs)
    assert mu.shape == logvar.shape == (3, 4)


def test_vae_label_every_stage_feeds_the_label_to_each_decoder_stage(emoji_dir):
    module = get_family("vae")
    overrides = {**TINY["vae"], "label_every_stage": True}
    cfg = module.Config.create(channels=3, image_size=64, num_classes=9, **overrides)
    torch.manual_seed(0)
    model = module.Model(cfg)
    convs = [m for m in model.decoder.net if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) == 3 and all(c.in_channels % 2 == 1 for c in convs)  # even width + 9 label planes
    ds = load_dataset("imagefolder", emoji_dir)
    x, y = torch.from_numpy(ds.as_float()), torch.from_numpy(ds.labels)
    before, after = _lowers_loss(model, x, y, steps=12)
    assert after < before
    sampler = model.sampler()
    z = torch.randn(1, cfg.latent_dim).expand(9, -1)
    with torch.no_grad():
        images = sampler(z, torch.arange(9))
    assert images.shape == (9, 3, 64, 64)
    assert (images[1:] - images[:1]).abs().amax(dim=(1, 2, 3)).min() > 0  # one z, nine different images


def test_vae_class_prior_separates_classes_and_the_exported_encoder_speaks_the_sampler_z(emoji_dir):
    module = get_family("vae")
    overrides = {**TINY["vae"], "label_every_stage": True, "class_prior": True, "temperature": 0.6}
    cfg = module.Config.create(channels=3, image_size=64, num_classes=9, **overrides)
    torch.manual_seed(0)
    model = module.Model(cfg)
    ds = load_dataset("imagefolder", emoji_dir)
    x, y = torch.from_numpy(ds.as_float()), torch.from_numpy(ds.labels)
    before, after = _lowers_loss(model, x, y, steps=12)
    assert after < before
    assert model.prior.mu.weight.abs().sum() > 0  # the class means moved off N(0, I)
    encoder = model.export_specs()["encoder"].module
    with torch.no_grad():
        mu, _ = encoder(x[:4], y[:4])
        code_mu, _ = model.encoder(x[:4], y[:4])
        prior_mu, prior_logvar = model.prior(y[:4])
        # the sampler maps z back to the code: mu_y + sigma_y * temperature * z
        torch.testing.assert_close(prior_mu + torch.exp(0.5 * prior_logvar) * 0.6 * mu, code_mu)
        assert torch.allclose(
            model.sampler()(mu, y[:4]), torch.sigmoid(model.decoder(code_mu, y[:4])), atol=1e-5
        )


def test_vae_temperature_scales_the_prior_sample():
    module = get_family("vae")
    fields = {**TINY["vae"], "class_prior": True}
    torch.manual_seed(0)
    hot = module.Model(module.Config.create(channels=3, image_size=64, num_classes=9, **fields))
    cold = module.Model(
        module.Config.create(channels=3, image_size=64, num_classes=9, temperature=0.5, **fields)
    )
    cold.load_state_dict(hot.state_dict())
    z, label = torch.randn(4, 4), torch.arange(4)
    with torch.no_grad():
        torch.testing.assert_close(cold.sampler()(z, label), hot.sampler()(0.5 * z, label))
        assert not torch.allclose(cold.sampler()(z, label), hot.sampler()(z, label))


@pytest.mark.parametrize("family", ["gan", "evaluator"])
def test_ema_generator_is_sampled_and_can_be_switched_on_when_resuming(data_dir, family):
    ds = load_dataset("mnist", data_dir)
    x, y = torch.from_numpy(ds.as_float()), torch.from_numpy(ds.labels)
    module = get_family(family)
    plain = tiny_model(family)
    averaged = module.Model(dataclasses.replace(plain.config, ema=0.9))
    averaged.load_state_dict(plain.state_dict())  # no generator_ema keys: the average starts here
    for a, b in zip(averaged.generator_ema.parameters(), plain.generator.parameters(), strict=True):
        assert torch.equal(a, b)
    before, after = _lowers_loss(averaged, x, y, steps=10)
    assert after < before
    live = dict(averaged.generator.named_parameters())
    moved = [n for n, p in averaged.generator_ema.named_parameters() if not torch.equal(p, live[n])]
    assert moved, "the average never lagged the live generator"
    assert averaged.sampler().generator is averaged.generator_ema
    assert not any(p.requires_grad for p in averaged.generator_ema.parameters())
