"""The model wrapper and factory (ls.models.build_model): shapes and info per variant, parity of the
zero-initialised conditioned models with the baseline, gradients, parameter counts against the paper,
parameter groups, freezing, registry and metadata errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ls.models.weights
from ls.config.loader import from_dict
from ls.data.icbhi import full_metadata_spec
from ls.models import ConditionedAST, ModelConfig, build_model, get_variant, register_variant
from ls.models.backbone import ASTBackbone, ViTArch
from ls.models.conditioning import NoConditioning
from ls.models.heads import ClassifierHead, HeadSpec
from ls.models.meta import MetadataError
from ls.models.model import PARAM_GROUPS
from ls.models.options import FiLMOptions, MetadataOptions, SoftFiLMOptions
from ls.models.variants import Variant

SPEC = full_metadata_spec()
VARIANTS = ("ast", "ast_fus", "ast_film", "ast_tafilm", "ast_film_soft")
#: The common head of the parity tests (every variant the same head).
COMMON_HEAD = {"head_hidden_dim": 64, "head_activation": "relu"}
T, FREQ, B = 64, 32, 2  # tiny input: a 2 x 5 patch grid
#: A 12-block ViT a few thousand parameters wide: most tests are about wiring, not width, and building or
#: running tiny224 dominates their cost. Shapes per variant are also checked with the real tiny224 preset.
MICRO = ViTArch(embed_dim=24, num_heads=2, depth=12, mlp_ratio=2.0)


def _cfg(variant: str, **kw) -> ModelConfig:
    """The variant's options as a ``models.<variant>`` block would give them (aliases accepted)."""
    entry = get_variant(variant)
    base = {"model_size": "tiny224", "input_fdim": FREQ, "input_tdim": T, "label_dim": 2}
    if "conditioned_layers" in {f.name for f in dataclasses.fields(entry.options)}:
        base["conditioned_layers"] = [0, 11]
    base.update(kw)
    cfg = from_dict(entry.options, base)
    cfg.variant = entry.name
    return cfg


def _build(variant: str, seed: int = 0, **kw) -> ConditionedAST:
    """A model on the MICRO backbone (12 blocks, D = 24) through build_model."""
    torch.manual_seed(seed)
    return build_model(_cfg(variant, **kw), SPEC, backbone=ASTBackbone(MICRO, input_fdim=FREQ, input_tdim=T))


def _batch(seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    spec = torch.randn(B, T, FREQ, generator=g)
    meta = {
        "device": torch.tensor([1, 4]),
        "site": torch.tensor([7, 2]),
        "cont": torch.randn(B, 3, generator=g),
    }
    return spec, meta


def _trainable(module: nn.Module) -> set[int]:
    return {id(p) for p in module.parameters() if p.requires_grad}


# -- forward and info -----------------------------------------------------------------------------------------

INFO_KEYS = {
    "ast": set(),
    "ast_fus": {"gate", "metadata_projection"},
    "ast_film": {"gamma", "beta"},
    "ast_tafilm": {"gamma_cls", "beta_cls", "gamma_patch", "beta_patch"},
    "ast_film_soft": {"gamma", "beta", "masks", "mask_stats"},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_shapes_and_info_keys_per_variant(variant):
    torch.manual_seed(0)
    model = build_model(_cfg(variant), SPEC).eval()  # the real tiny224 preset
    spec, meta = _batch()
    logits = model(spec, meta)
    assert logits.shape == (B, 2) and torch.isfinite(logits).all()
    logits2, info = model(spec, meta, return_info=True)
    torch.testing.assert_close(logits2, logits)
    assert set(info) == {"embedding", "backbone_embedding"} | INFO_KEYS[variant]
    assert info["embedding"].shape == info["backbone_embedding"].shape == (B, 192)
    torch.testing.assert_close(model.classifier(info["embedding"]), logits)  # the head reads `embedding`
    for key in INFO_KEYS[variant] & {"gamma", "beta", "gamma_cls", "beta_cls", "gamma_patch", "beta_patch"}:
        assert sorted(info[key]) == [0, 11] and info[key][11].shape == (B, 192)
    if variant == "ast_film_soft":
        assert set(info["masks"]["shared"]) == {"dev", "site", "rest"}
        assert info["masks"]["shared"]["rest"].shape == (192,)
        assert info["mask_stats"]["shared_dev_active"] == 64
    if variant == "ast_fus":
        assert info["gate"] == pytest.approx(0.5)
        torch.testing.assert_close(info["embedding"], info["backbone_embedding"] + 0.5 * info["metadata_projection"])
    else:
        torch.testing.assert_close(info["embedding"], info["backbone_embedding"])


@pytest.mark.parametrize("model_size", ["tiny224", "small224", "base224", "base384"])
def test_every_size_builds_with_matching_conditioning_width(model_size):
    width = {"tiny224": 192, "small224": 384, "base224": 768, "base384": 768}[model_size]
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = build_model(_cfg("ast_film_soft", model_size=model_size, input_fdim=128, input_tdim=1024), SPEC)
    assert model.backbone.embed_dim == width
    assert model.conditioning.generators["dev"]["11"].out_features == 2 * width
    assert model.conditioning.mask_logits["shared"].shape == (3, width)
    assert model.classifier[0].normalized_shape == (width,)


def test_unknown_device_and_site_id_zero_works():
    model = _build("ast_film_soft").eval()
    spec, meta = _batch()
    meta["device"] = torch.zeros(B, dtype=torch.long)
    meta["site"] = torch.zeros(B, dtype=torch.long)
    assert torch.isfinite(model(spec, meta)).all()


def test_baseline_ignores_meta_and_conditioned_models_need_it():
    spec, meta = _batch()
    baseline = _build("ast").eval()
    torch.testing.assert_close(baseline(spec), baseline(spec, meta))
    film = _build("ast_film").eval()
    with pytest.raises(MetadataError, match="got meta=None"):
        film(spec)
    with pytest.raises(ValueError, match=r"meta\['device'\] has shape \(3,\) but spec has batch size 2"):
        film(spec, {**meta, "device": torch.tensor([1, 2, 3])})
    with pytest.raises(MetadataError, match=r"meta\['site'\] has ids in \[1, 8\]"):
        film(spec, {**meta, "site": torch.tensor([8, 1])})


def test_metadata_changes_the_output_of_conditioned_models():
    spec, meta = _batch()
    other = {**meta, "device": torch.tensor([2, 3]), "site": torch.tensor([1, 1])}
    for variant in ("ast_fus", "ast_film", "ast_film_soft"):  # TAFiLM starts at identity, see below
        model = _build(variant).eval()
        assert not torch.allclose(model(spec, meta), model(spec, other)), variant


def test_float64_model_accepts_float32_cont():
    model = _build("ast_film").double().eval()
    spec, meta = _batch()
    assert model(spec.double(), meta).dtype == torch.float64


# -- parity of identity-initialised conditioning with the baseline --------------------------------------------


@pytest.mark.parametrize(
    ("variant", "options"),
    [("ast_tafilm", {}), ("ast_film", {"film_init": "zero"}), ("ast_film_soft", {"film_init_gain": 0.0})],
)
def test_zero_initialised_generators_reproduce_the_baseline(variant, options):
    conditioned = _build(variant, **COMMON_HEAD, **options).eval()
    baseline = _build("ast", **COMMON_HEAD).eval()
    baseline.backbone.load_state_dict(conditioned.backbone.state_dict())
    baseline.classifier.load_state_dict(conditioned.classifier.state_dict())
    spec, meta = _batch()
    with torch.no_grad():
        diff = (conditioned(spec, meta) - baseline(spec)).abs().max().item()
    assert diff <= 1e-6


def test_default_film_init_is_not_the_identity():
    conditioned = _build("ast_film", **COMMON_HEAD).eval()
    baseline = _build("ast", **COMMON_HEAD).eval()
    baseline.backbone.load_state_dict(conditioned.backbone.state_dict())
    baseline.classifier.load_state_dict(conditioned.classifier.state_dict())
    spec, meta = _batch()
    with torch.no_grad():
        assert (conditioned(spec, meta) - baseline(spec)).abs().max() > 1e-4


# -- gradients ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["ast_fus", "ast_film", "ast_tafilm", "ast_film_soft"])
def test_gradients_reach_conditioning_from_the_first_step(variant):
    model = _build(variant).train()
    spec, meta = _batch()
    loss = F.binary_cross_entropy_with_logits(model(spec, meta), torch.ones(B, 2))
    loss = loss + sum(model.auxiliary_losses().values(), torch.zeros(()))
    loss.backward()
    cond = model.conditioning
    watched = {
        "ast_fus": lambda: [cond.gate, cond.projection[0].weight],
        "ast_film": lambda: [cond.generators["11"].weight, cond.generators["0"].bias],
        "ast_tafilm": lambda: [cond.cls_generators["11"].weight, cond.patch_generators["0"].weight],
        "ast_film_soft": lambda: [cond.mask_logits["shared"], cond.generators["rest"]["11"].weight],
    }[variant]()
    for p in watched:
        assert p.grad is not None and p.grad.abs().sum() > 0
    emb = [m.weight for m in cond.modules() if isinstance(m, nn.Embedding)]
    if variant == "ast_tafilm":
        # zero generators pass no gradient back to the metadata encoder until they have moved once
        assert all(w.grad is None or w.grad.abs().sum() == 0 for w in emb)
    else:
        assert emb and all(w.grad is not None and w.grad.abs().sum() > 0 for w in emb)


def test_auxiliary_losses_only_for_softfilm():
    for variant in ("ast", "ast_fus", "ast_film", "ast_tafilm"):
        assert _build(variant).auxiliary_losses() == {}
    assert set(_build("ast_film_soft").auxiliary_losses()) == {"mask_overlap", "mask_coverage"}


# -- parameter counts (the paper's, base384) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "options", "paper_extra"),
    [
        ("ast", {"label_dim": 2}, 50_882),  # the baseline head
        ("ast_fus", {"label_dim": 2}, 639_979),
        ("ast_film", {"label_dim": 1, "conditioned_layers": list(range(12))}, 1_259_047),
        ("ast_tafilm", {"label_dim": 1, "conditioned_layers": list(range(12))}, 2_457_127),
        ("ast_film_soft", {"label_dim": 2, "conditioned_layers": [10, 11]}, 666_678),
    ],
)
def test_extra_parameters_match_the_paper(variant, options, paper_extra):
    with torch.device("meta"):
        model = build_model(_cfg(variant, model_size="base384", input_fdim=128, input_tdim=1024, **options), SPEC)
    total = sum(p.numel() for p in model.parameters())
    backbone = sum(p.numel() for p in model.backbone.parameters())
    # the reserved unknown id adds one row to each embedding table: 8 (device) + 14 (site)
    unknown_rows = 0 if variant == "ast" else 8 + 14
    assert total - backbone == paper_extra + unknown_rows


def test_film_generator_size_is_the_papers():
    with torch.device("meta"):
        model = build_model(_cfg("ast_film", input_fdim=128, input_tdim=1024, model_size="base384"), SPEC)
    assert sum(p.numel() for p in model.conditioning.generators["11"].parameters()) == 99_840


# -- heads ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "hidden", "act"),
    [("ast", 64, nn.ReLU), ("ast_fus", 32, nn.GELU), ("ast_film", 64, nn.ReLU), ("ast_tafilm", 64, nn.GELU),
     ("ast_film_soft", 64, nn.ReLU)],
)
def test_paper_heads_per_variant_from_the_table_and_a_chosen_head(variant, hidden, act):
    with torch.device("meta"):
        paper = build_model(_cfg(variant), SPEC)
        common = build_model(_cfg(variant, head_hidden_dim=48, head_activation="gelu"), SPEC)
    assert get_variant(variant).head == HeadSpec(hidden, "relu" if act is nn.ReLU else "gelu")
    assert paper.classifier[2].out_features == hidden and isinstance(paper.classifier[3], act)
    assert common.classifier[2].out_features == 48 and isinstance(common.classifier[3], nn.GELU)


def test_classifier_head_matches_hand_computation_and_reference_layout():
    torch.manual_seed(0)
    head = ClassifierHead(6, 2, HeadSpec(4, "relu"), dropout=0.4).eval()
    assert sorted(head.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight", "5.bias", "5.weight"]
    x = torch.randn(3, 6)
    z = F.layer_norm(x, (6,), head[0].weight, head[0].bias)
    z = F.relu(F.linear(z, head[2].weight, head[2].bias))
    torch.testing.assert_close(head(x), F.linear(z, head[5].weight, head[5].bias))
    assert head[1].p == head[4].p == 0.4


# -- parameter groups and weight decay ------------------------------------------------------------------------

GROUPS = {
    "ast": {"backbone", "classifier"},
    "ast_fus": {"backbone", "embedding", "encoder", "film", "classifier"},
    "ast_film": {"backbone", "embedding", "encoder", "film", "classifier"},
    "ast_tafilm": {"backbone", "embedding", "encoder", "film", "classifier"},
    "ast_film_soft": {"backbone", "embedding", "encoder", "film", "mask", "classifier"},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_param_groups_partition_trainable_parameters(variant):
    model = _build(variant)
    groups = model.param_groups()
    # the model's own groups, and the mechanism's (SoftFiLM's mask), before the classifier
    assert set(groups) == GROUPS[variant] and set(groups) - {"mask"} <= set(PARAM_GROUPS)
    assert next(iter(groups)) == "backbone" and list(groups)[-1] == "classifier"
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids)) and set(ids) == _trainable(model)
    assert {id(p) for p in groups["classifier"]} == {id(p) for p in model.classifier.parameters()}
    model.freeze("all", freeze_conditioning=True)
    ids = [id(p) for params in model.param_groups().values() for p in params]
    assert set(ids) == _trainable(model) and "mask" not in model.param_groups()


def test_no_weight_decay_names_are_real_parameters():
    model = _build("ast_film_soft")
    names = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert names <= set(params)
    for expected in ("backbone.pos_embed", "backbone.cls_token", "conditioning.mask_logits.shared",
                     "classifier.0.weight", "classifier.2.bias", "backbone.blocks.0.norm1.weight"):
        assert expected in names
    for decayed in ("classifier.2.weight", "backbone.blocks.0.attn.qkv.weight", "conditioning.generators.dev.0.weight"):
        assert decayed not in names


# -- freezing -------------------------------------------------------------------------------------------------


def _frozen_blocks(model: ConditionedAST) -> list[int]:
    return [i for i, blk in enumerate(model.backbone.blocks) if not any(p.requires_grad for p in blk.parameters())]


@pytest.mark.parametrize("variant", VARIANTS)
def test_freezing_strategies_work_for_every_variant(variant):
    model = _build(variant)
    bb = model.backbone
    model.freeze("all")
    assert _frozen_blocks(model) == list(range(12))
    assert not bb.patch_embed.weight.requires_grad and not bb.pos_embed.requires_grad
    assert bb.norm.weight.requires_grad and _trainable(model.classifier) == {id(p) for p in model.classifier.parameters()}
    assert _trainable(model.conditioning) == {id(p) for p in model.conditioning.parameters()}
    model.freeze("until_block", until_block=3)
    assert _frozen_blocks(model) == [0, 1, 2, 3]
    model.freeze("until_block")  # reference default: 9
    assert _frozen_blocks(model) == list(range(10))
    model.freeze("trainable_blocks", trainable_blocks=8)  # the paper configs' value
    assert _frozen_blocks(model) == [0, 1, 2, 3]
    model.freeze("trainable_blocks", trainable_blocks=12)
    assert _frozen_blocks(model) == [] and bb.pos_embed.requires_grad
    model.freeze("trainable_blocks", trainable_blocks=0)
    assert _frozen_blocks(model) == list(range(12))
    model.freeze("none", freeze_conditioning=True)
    assert _frozen_blocks(model) == [] and _trainable(model.conditioning) == set()
    model.freeze("none")
    assert _trainable(model) == {id(p) for p in model.parameters()}


def test_freeze_rejects_bad_arguments():
    model = _build("ast")
    with pytest.raises(ValueError, match="unknown freeze strategy 'some'"):
        model.freeze("some")
    with pytest.raises(ValueError, match=r"until_block=12 must be a block index in 0..11"):
        model.freeze("until_block", until_block=12)
    with pytest.raises(ValueError, match="trainable_blocks=-1 must be >= 0"):
        model.freeze("trainable_blocks", trainable_blocks=-1)


# -- analysis methods exposed per variant ---------------------------------------------------------------------


def test_variant_specific_methods_are_exposed_only_where_they_exist():
    soft, grf, film = _build("ast_film_soft"), _build("ast_fus"), _build("ast_film")
    assert hasattr(soft, "set_mask_temperature") and not hasattr(film, "set_mask_temperature")
    assert hasattr(grf, "gate_value") and not hasattr(soft, "gate_value")
    soft.set_mask_temperature(0.3)
    assert soft.state_dict()["conditioning.mask_temperature"].item() == pytest.approx(0.3)
    assert soft.mask_stats()["temperature"] == pytest.approx(0.3)
    assert grf.gate_value() == pytest.approx(0.5)
    with pytest.raises(AttributeError):
        film.mask_stats()


# -- variant table and factory --------------------------------------------------------------------------------


def test_variant_table_resolves_aliases_and_rejects_unknown_names():
    assert get_variant("tafilm").name == "ast_tafilm"
    assert get_variant("ast_meta_proj").name == "ast_fus"
    assert get_variant("softfilm").name == "ast_film_soft"
    with pytest.raises(ValueError, match="unknown model variant 'ast_filmpp'.*ast_film_soft"):
        get_variant("ast_filmpp")
    with pytest.raises(ValueError, match="unknown model variant 'cnn6'"):
        build_model(ModelConfig(variant="cnn6", label_dim=2), SPEC)
    with pytest.raises(ValueError, match="has no variant"):
        build_model(ModelConfig(label_dim=2), SPEC)
    with pytest.raises(ValueError, match="'ast' is already registered"):
        register_variant(Variant("ast", "AST", ModelConfig, NoConditioning))
    with pytest.raises(ValueError, match="'softfilm' is already registered"):
        register_variant(Variant("my_soft", "Mine", SoftFiLMOptions, NoConditioning, aliases=("softfilm",)))
    with pytest.raises(TypeError, match="options must be a subclass of ls.models.ModelConfig"):
        register_variant(Variant("my_soft", "Mine", dict, NoConditioning))  # type: ignore[arg-type]


def test_build_model_needs_a_derived_label_dim_and_input_size():
    cfg = _cfg("ast")
    cfg.label_dim = None
    with pytest.raises(ValueError, match="label_dim is unset: load the config through ls.config"):
        build_model(cfg, SPEC)
    with torch.device("meta"):
        assert build_model(cfg, SPEC, label_dim=3).classifier[5].out_features == 3
    cfg.input_tdim = None
    with pytest.raises(ValueError, match="the input size is unset"):
        build_model(cfg, SPEC, label_dim=3)


def test_alias_variant_builds_the_canonical_model():
    with torch.device("meta"):
        model = build_model(_cfg("tafilm"), SPEC)
    assert model.variant == "ast_tafilm"


def test_conditioned_variants_require_a_metadata_spec():
    with pytest.raises(ValueError, match="'ast_film' is conditioned on metadata"):
        build_model(_cfg("ast_film"), None)
    with torch.device("meta"):
        assert build_model(_cfg("ast"), None).variant == "ast"


def test_conditioned_layers_beyond_depth_are_rejected():
    with pytest.raises(ValueError, match=r"conditioned_layers=\[3, 12\].*0..11"):
        build_model(_cfg("ast_film", conditioned_layers=[3, 12]), SPEC)


def test_pretrained_weights_are_loaded_through_ls_models_weights(monkeypatch):
    calls = []
    monkeypatch.setattr(ls.models.weights, "load_pretrained", lambda bb, w, variant: calls.append((w.source, variant)))
    cfg = _cfg("ast_tafilm")
    cfg.weights.source, cfg.weights.path = "audioset", "/nonexistent.pth"
    with torch.device("meta"):
        build_model(cfg, SPEC)
        build_model(_cfg("ast"), SPEC)  # source none: not called
    assert calls == [("audioset", "ast_tafilm")]


@pytest.mark.parametrize(
    ("options", "field", "value", "message"),
    [(ModelConfig, "dropout", 1.0, "dropout must be in"),
     (MetadataOptions, "factor_emb_dims", {"device": 0}, "factor embedding widths must be >= 1"),
     (FiLMOptions, "conditioned_layers", [1, 1], "distinct"),
     (SoftFiLMOptions, "mask_temperature", 0.0, "mask temperatures must be > 0")],
)
def test_model_options_reject_bad_values(options, field, value, message):
    with pytest.raises(ValueError, match=message):
        options(**{field: value})
