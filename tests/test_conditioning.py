"""Conditioning mechanisms (ls.models.conditioning) on their own: maths of modulate/fuse, initialisation,
SoftFiLM masks, temperature and regularisers (checked against hand computations), parameter groups."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ls.config.loader import from_dict
from ls.data.icbhi import full_metadata_spec
from ls.models.conditioning import (
    MIN_MASK_TEMPERATURE,
    FiLM,
    GatedResidualFusion,
    NoConditioning,
    SoftFactorizedFiLM,
    TokenAwareFiLM,
    mask_coverage,
    mask_overlap,
    mask_temperature_at,
    partition_mask_logits,
)
from ls.models.options import FiLMOptions, GRFOptions, SoftFiLMOptions, TAFiLMOptions
from ls.types import MetadataSpec

SPEC = full_metadata_spec()
OPTIONS = {FiLM: FiLMOptions, TokenAwareFiLM: TAFiLMOptions, SoftFactorizedFiLM: SoftFiLMOptions,
           GatedResidualFusion: GRFOptions}
D, DEPTH, B = 12, 4, 3


def _meta(batch: int = B, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "device": torch.randint(0, SPEC.factor("device").size, (batch,), generator=g),
        "site": torch.randint(0, SPEC.factor("site").size, (batch,), generator=g),
        "cont": torch.randn(batch, SPEC.cont_dim, generator=g),
    }


def _cfg(cls: type = SoftFactorizedFiLM, **kw):
    """The options of mechanism ``cls`` (small widths), read as a YAML block would be (aliases included)."""
    options = OPTIONS[cls]
    base = {"dev_emb_dim": 4, "site_emb_dim": 5}
    if options is not GRFOptions:
        base.update(metadata_hidden_dim=8, film_hidden_dim=8, conditioned_layers=[1, 3])
    base.update(kw)
    return from_dict(options, base)


def _soft(**kw) -> SoftFactorizedFiLM:
    torch.manual_seed(0)
    return SoftFactorizedFiLM.from_config(_cfg(**kw), SPEC, D, DEPTH).eval()


# -- SoftFiLM masks -------------------------------------------------------------------------------------------


def test_partition_mask_logits_by_hand():
    # D = 7, three factors: t = 2 -> dev [0, 2), site [2, 4), rest [4, 7)
    s = 0.5
    expected = torch.tensor(
        [
            [s, s, -s, -s, -s, -s, -s],
            [-s, -s, s, s, -s, -s, -s],
            [-s, -s, -s, -s, s, s, s],
        ]
    )
    torch.testing.assert_close(partition_mask_logits(7, 3, s), expected)
    # four factors on D = 10: t = 2, the last one takes the remainder [6, 10)
    four = partition_mask_logits(10, 4, s)
    assert (four > 0).sum(dim=1).tolist() == [2, 2, 2, 4] and (four > 0).sum(dim=0).tolist() == [1] * 10


def test_initial_masks_are_sigmoid_of_plus_minus_scale():
    soft = _soft(mask_init_scale=0.5)
    masks = soft.masks()
    assert list(masks) == ["shared"] and list(masks["shared"]) == ["dev", "site", "rest"]
    hi, lo = 1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(0.5))  # 0.6225, 0.3775
    dev = masks["shared"]["dev"]
    assert dev.shape == (D,)
    torch.testing.assert_close(dev[:4], torch.full((4,), hi))
    torch.testing.assert_close(dev[4:], torch.full((8,), lo))


def test_temperature_sharpens_masks_and_has_a_floor():
    soft = _soft(mask_init_scale=0.5)
    soft.set_mask_temperature(0.25)
    torch.testing.assert_close(soft.masks()["shared"]["dev"][0], torch.tensor(1 / (1 + math.exp(-2.0))))
    soft.set_mask_temperature(0.01)  # below the floor: tau_eff = 0.1
    torch.testing.assert_close(soft.masks()["shared"]["dev"][0], torch.tensor(1 / (1 + math.exp(-5.0))))
    assert soft.mask_stats()["temperature"] == pytest.approx(MIN_MASK_TEMPERATURE)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="mask temperature must be a positive finite number"):
            soft.set_mask_temperature(bad)


def test_temperature_is_a_buffer_saved_in_the_state_dict():
    soft = _soft(mask_temperature=0.7)
    assert "mask_temperature" in dict(soft.named_buffers())
    assert "mask_temperature" not in dict(soft.named_parameters())
    state = soft.state_dict()
    assert state["mask_temperature"].item() == pytest.approx(0.7)
    other = _soft()
    other.load_state_dict(state)
    assert other.mask_temperature.item() == pytest.approx(0.7)


def test_overlap_and_coverage_by_hand():
    w = torch.tensor(
        [
            [1.0, 0.5, 0.0, 0.2],
            [0.0, 0.5, 1.0, 0.2],
            [0.0, 0.0, 0.0, 0.2],
        ]
    )
    # pair means: dev*site = (0 + .25 + 0 + .04)/4 = .0725; dev*rest = .04/4 = .01; site*rest = .01
    assert mask_overlap(w).item() == pytest.approx((0.0725 + 0.01 + 0.01) / 3)
    # 1 - max over factors: [0, .5, 0, .8] -> mean .325
    assert mask_coverage(w).item() == pytest.approx(0.325)


def test_auxiliary_losses_weighted_and_averaged_over_per_layer_masks():
    soft = _soft(per_layer_masks=True, mask_overlap_lambda=0.5, mask_coverage_lambda=2.0)
    assert sorted(soft.mask_logits) == ["layer_1", "layer_3"]
    with torch.no_grad():
        soft.mask_logits["layer_3"].zero_()  # all weights 0.5: overlap 0.25, coverage 0.5
    w1 = torch.sigmoid(partition_mask_logits(D, 3, 0.5))
    losses = soft.auxiliary_losses()
    assert losses["mask_overlap"].item() == pytest.approx(0.5 * (mask_overlap(w1).item() + 0.25) / 2)
    assert losses["mask_coverage"].item() == pytest.approx(2.0 * (mask_coverage(w1).item() + 0.5) / 2)


def test_auxiliary_loss_terms_skipped_when_lambda_not_positive():
    assert set(_soft(mask_overlap_lambda=0.0, mask_coverage_lambda=0.1).auxiliary_losses()) == {"mask_coverage"}
    assert set(_soft(mask_overlap_lambda=0.1, mask_coverage_lambda=-1.0).auxiliary_losses()) == {"mask_overlap"}
    assert _soft(mask_overlap_lambda=0.0, mask_coverage_lambda=0.0).auxiliary_losses() == {}


def test_mask_stats_at_init():
    # D = 12: each factor owns 4 channels at +s -> active (w > .5) and dominant on exactly those
    stats = _soft().mask_stats()
    for k in ("dev", "site", "rest"):
        assert stats[f"shared_{k}_active"] == 4
        assert stats[f"shared_{k}_dominant"] == 4
    hi, lo = torch.sigmoid(torch.tensor(0.5)).item(), torch.sigmoid(torch.tensor(-0.5)).item()
    # per pair: 4 channels hi*lo (one of the two owns it), 4 hi*lo (the other), 4 lo*lo (third owns it)
    assert stats["shared_overlap_dev_site"] == pytest.approx((8 * hi * lo + 4 * lo * lo) / 12)
    assert stats["temperature"] == pytest.approx(1.0)


def test_softfilm_generators_xavier_with_gain_and_zero_bias():
    soft = _soft(film_init_gain=0.1)
    bound = 0.1 * math.sqrt(6 / (8 + 2 * D))
    for k in ("dev", "site", "rest"):
        for layer in ("1", "3"):
            gen = soft.generators[k][layer]
            assert gen.weight.abs().max() <= bound and gen.weight.abs().max() > 0.5 * bound
            assert torch.count_nonzero(gen.bias) == 0


def test_softfilm_gamma_beta_are_mask_weighted_sums_of_factor_deltas():
    soft = _soft(film_init_gain=1.0)
    meta = _meta()
    state = soft.prepare(meta)
    w = torch.sigmoid(partition_mask_logits(D, 3, 0.5))
    d_gamma = torch.zeros(B, D)
    d_beta = torch.zeros(B, D)
    for k, name in enumerate(("dev", "site", "rest")):
        h = soft.factor_encoders[name](meta)
        out = F.linear(h, soft.generators[name]["3"].weight, soft.generators[name]["3"].bias)
        d_gamma += w[k] * out[:, :D]
        d_beta += w[k] * out[:, D:]
    torch.testing.assert_close(state["gamma"][3], 1 + d_gamma)
    torch.testing.assert_close(state["beta"][3], d_beta)
    u = torch.randn(B, 7, D)
    torch.testing.assert_close(soft.modulate(3, u, state), u * (1 + d_gamma)[:, None] + d_beta[:, None])


def test_softfilm_per_layer_masks_weight_each_layer_with_its_own_mask():
    soft = _soft(film_init_gain=1.0, per_layer_masks=True)
    with torch.no_grad():
        for logits in soft.mask_logits.values():
            logits.normal_()  # a different mask per layer
    soft.set_mask_temperature(0.5)
    meta = _meta()
    state = soft.prepare(meta)
    for layer in soft.conditioned_layers:
        w = torch.sigmoid(soft.mask_logits[f"layer_{layer}"] / 0.5)
        d_gamma, d_beta = torch.zeros(B, D), torch.zeros(B, D)
        for k, name in enumerate(("dev", "site", "rest")):
            gen = soft.generators[name][str(layer)]
            out = gen(soft.factor_encoders[name](meta))
            d_gamma += w[k] * out[:, :D]
            d_beta += w[k] * out[:, D:]
        torch.testing.assert_close(state["gamma"][layer], 1 + d_gamma)
        torch.testing.assert_close(state["beta"][layer], d_beta)


def test_softfilm_rest_factor_norm_option():
    paper = _soft()
    fixed = _soft(continuous_norm="none")
    assert isinstance(paper.factor_encoders["rest"][1][0], torch.nn.LayerNorm)
    assert isinstance(fixed.factor_encoders["rest"][1][0], torch.nn.Identity)


def test_softfilm_learns_one_mask_per_declared_factor_plus_the_continuous_part():
    spec = MetadataSpec.build({"site": ["<unknown>", "p1", "p2"], "sex": ["<unknown>", "F", "M"],
                               "dataset": ["<unknown>", "icbhi", "sprsound"]}, ["age", "duration"])
    torch.manual_seed(0)
    soft = SoftFactorizedFiLM.from_config(_cfg(factor_emb_dims={"sex": 2}), spec, D, DEPTH)
    assert soft.factor_keys == ("site", "sex", "dataset", "rest")
    assert soft.mask_logits["shared"].shape == (4, D)
    assert soft.factor_encoders["sex"][0].sex_embedding.weight.shape == (3, 2)  # from factor_emb_dims
    assert soft.factor_encoders["dataset"][0].dataset_embedding.weight.shape == (3, 8)  # factor_emb_dim
    stats = soft.mask_stats()
    pairs = [k for k in stats if "_overlap_" in k]
    assert len(pairs) == 6 and "shared_overlap_sex_dataset" in stats  # every pair of 4 factors
    meta = {"site": torch.tensor([1, 2, 0]), "sex": torch.tensor([2, 1, 0]), "dataset": torch.tensor([1, 1, 2]),
            "cont": torch.randn(3, 2)}
    state = soft.prepare(meta)
    assert state["gamma"][3].shape == (3, D)


def test_softfilm_ablations_and_checks_of_its_factors():
    no_site = _soft(use_site=False)  # the reference's use_* ablations leave a factor out
    assert no_site.factor_keys == ("dev", "rest") and no_site.mask_logits["shared"].shape == (2, D)
    assert _soft(use_continuous=False).factor_keys == ("dev", "site")
    with pytest.raises(ValueError, match="rest_dim is 4 but the data has 3 continuous feature"):
        _soft(rest_dim=4)
    assert _soft(rest_dim=3).factor_keys == ("dev", "site", "rest")
    with pytest.raises(ValueError, match=r"use_factors names \['sex'\], which the data does not declare"):
        _soft(use_factors={"sex": False})
    clash = MetadataSpec.build({"rest": ["<unknown>", "x"]}, ["age"])
    with pytest.raises(ValueError, match="clashes with SoftFiLM's factor key 'rest'"):
        SoftFactorizedFiLM.from_config(_cfg(), clash, D, DEPTH)


def test_softfilm_owns_its_temperature_schedule_and_reports_it():
    soft = _soft(mask_temperature=1.0, mask_temperature_end=0.2, mask_temperature_warmup=5)
    # 0-based epoch -> tau: the reference's annealer (1-based epochs 1-6: 1.0, 10: 0.98, 20: 0.82, 30: 0.56,
    # 40: 0.31, 50: 0.20)
    expected = {0: 1.0, 5: 1.0, 9: 0.98, 19: 0.82, 29: 0.56, 39: 0.31, 49: 0.2}
    for epoch, tau in expected.items():
        soft.start_epoch(epoch, 50)
        assert soft.mask_temperature.item() == pytest.approx(tau, abs=5e-3)
        assert mask_temperature_at(epoch, 50) == pytest.approx(tau, abs=5e-3)
    stats = soft.epoch_stats()
    assert stats["mask_temperature"] == pytest.approx(0.2, abs=5e-3) == soft.mask_temperature.item()
    assert stats["mask/temperature"] == stats["mask_temperature"] and "mask/shared_dev_active" in stats


# -- FiLM / TAFiLM --------------------------------------------------------------------------------------------


def test_film_modulation_is_per_sample_affine_on_all_tokens():
    torch.manual_seed(0)
    film = FiLM.from_config(_cfg(FiLM), SPEC, D, DEPTH).eval()
    meta = _meta()
    state = film.prepare(meta)
    h = film.encoder(film.features(meta))
    out = F.linear(h, film.generators["1"].weight, film.generators["1"].bias)
    gamma, beta = 1 + out[:, :D], out[:, D:]
    torch.testing.assert_close(state["gamma"][1], gamma)
    torch.testing.assert_close(state["beta"][1], beta)
    u = torch.randn(B, 9, D)
    torch.testing.assert_close(film.modulate(1, u, state), gamma[:, None, :] * u + beta[:, None, :])
    assert set(film.info(state)) == {"gamma", "beta"} and sorted(state["gamma"]) == [1, 3]


def test_film_init_default_vs_zero_option():
    torch.manual_seed(0)
    default = FiLM.from_config(_cfg(FiLM), SPEC, D, DEPTH)
    zero = FiLM.from_config(_cfg(FiLM, film_init="zero"), SPEC, D, DEPTH)
    assert default.generators["1"].weight.abs().sum() > 0  # PyTorch default init, as the paper
    bound = 1 / math.sqrt(8)  # kaiming-uniform(a=sqrt 5) bound for fan_in 8
    assert default.generators["1"].weight.abs().max() <= bound
    state = zero.prepare(_meta())
    torch.testing.assert_close(state["gamma"][3], torch.ones(B, D))
    torch.testing.assert_close(state["beta"][3], torch.zeros(B, D))


def test_film_layer_specific_encoding_adds_one_linear_per_layer():
    film = FiLM.from_config(_cfg(FiLM, layer_specific_encoding=True), SPEC, D, DEPTH).eval()
    assert sorted(film.layer_encoders) == ["1", "3"]
    meta = _meta()
    h = film.encoder(film.features(meta))
    h3 = film.layer_encoders["3"](h)
    out = film.generators["3"](h3)
    torch.testing.assert_close(film.prepare(meta)["gamma"][3], 1 + out[:, :D])


def test_film_continuous_encoder_option():
    improved = FiLM.from_config(_cfg(FiLM), SPEC, D, DEPTH)
    raw = FiLM.from_config(_cfg(FiLM, use_improved_continuous_encoder=False), SPEC, D, DEPTH)
    assert improved.features.out_dim == 4 + 5 + 8 // 2  # H_r = film_hidden_dim / 2
    assert raw.features.out_dim == 4 + 5 + 3


def test_tafilm_starts_at_identity_and_splits_prefix_from_patches():
    tafilm = TokenAwareFiLM.from_config(_cfg(FiLM), SPEC, D, DEPTH).eval()
    meta = _meta()
    u = torch.randn(B, 6, D)
    state = tafilm.prepare(meta)
    torch.testing.assert_close(tafilm.modulate(3, u, state), u)  # zero-initialised generators
    with torch.no_grad():  # make the two generators distinguishable: gamma_cls = 2, beta_patch = -1
        tafilm.cls_generators["3"].bias[:D] = 1.0
        tafilm.patch_generators["3"].bias[D:] = -1.0
    state = tafilm.prepare(meta)
    out = tafilm.modulate(3, u, state)
    torch.testing.assert_close(out[:, :2], 2 * u[:, :2])
    torch.testing.assert_close(out[:, 2:], u[:, 2:] - 1)
    assert set(tafilm.info(state)) == {"gamma_cls", "beta_cls", "gamma_patch", "beta_patch"}
    assert isinstance(tafilm.encoder[2], torch.nn.GELU)


@pytest.mark.parametrize(("layers", "message"), [([4], r"out of range: \[4\]"), ([], "is empty")])
def test_conditioned_layers_are_checked_against_depth(layers, message):
    with pytest.raises(ValueError, match=message):
        FiLM.from_config(_cfg(FiLM, conditioned_layers=layers), SPEC, D, DEPTH)


def test_conditioned_variants_need_a_metadata_spec():
    for cls in (GatedResidualFusion, FiLM, TokenAwareFiLM, SoftFactorizedFiLM):
        with pytest.raises(ValueError, match="needs the fitted MetadataSpec"):
            cls.from_config(_cfg(cls), None, D, DEPTH)


# -- GRF ------------------------------------------------------------------------------------------------------


def test_grf_fuses_gated_projection_into_pooled_embedding():
    torch.manual_seed(0)
    grf = GatedResidualFusion.from_config(_cfg(GatedResidualFusion), SPEC, D, DEPTH).eval()
    assert grf.gate_value() == pytest.approx(0.5) and grf.conditioned_layers == ()
    meta = _meta()
    feats = grf.features(meta)
    assert isinstance(grf.features.continuous, torch.nn.LayerNorm)  # paper's rest_norm
    torch.testing.assert_close(feats[:, 9:], F.layer_norm(meta["cont"], (3,), grf.features.continuous.weight,
                                                          grf.features.continuous.bias))
    pooled = torch.randn(B, D)
    state = grf.prepare(meta)
    torch.testing.assert_close(grf.fuse(pooled, state), pooled + 0.5 * grf.projection(feats))
    info = grf.info(state)
    assert info["gate"] == pytest.approx(0.5) and info["metadata_projection"].shape == (B, D)


def test_grf_without_metadata_parts_is_the_identity():
    grf = GatedResidualFusion.from_config(_cfg(GatedResidualFusion, use_device=False, use_site=False,
                                                use_continuous=False), None, D, DEPTH)
    assert not grf.requires_metadata and sum(p.numel() for p in grf.parameters()) == 0
    pooled = torch.randn(B, D)
    assert torch.equal(grf.fuse(pooled, grf.prepare(None)), pooled) and grf.gate_value() == 0.0


def test_grf_continuous_norm_none_feeds_raw_features():
    grf = GatedResidualFusion.from_config(_cfg(GatedResidualFusion, continuous_norm="none"), SPEC, D, DEPTH)
    meta = _meta()
    torch.testing.assert_close(grf.features(meta)[:, 9:], meta["cont"])


# -- groups ---------------------------------------------------------------------------------------------------


def test_param_groups_by_role():
    soft = _soft()
    groups = soft.param_groups()
    assert set(groups) == {"embedding", "encoder", "film", "mask"}
    assert {id(p) for p in groups["mask"]} == {id(p) for p in soft.mask_logits.values()}
    assert len(groups["embedding"]) == 2 and all(p.dim() == 2 for p in groups["embedding"])
    assert len(groups["film"]) == 3 * 2 * 2  # 3 factors x 2 layers x (weight, bias)
    grf = GatedResidualFusion.from_config(_cfg(GatedResidualFusion), SPEC, D, DEPTH)
    assert [p.shape for p in grf.param_groups()["film"]] == [torch.Size([])]  # the gate
    assert NoConditioning().param_groups() == {}


def test_no_weight_decay_names_embeddings_masks_biases_not_generator_weights():
    names = _soft().no_weight_decay()
    assert "mask_logits.shared" in names
    assert "factor_encoders.dev.0.device_embedding.weight" in names
    assert "generators.dev.1.bias" in names and "generators.dev.1.weight" not in names


def test_mask_temperature_schedule_matches_the_reference_with_zero_based_epochs():
    tau = {e: mask_temperature_at(e - 1, 50, 1.0, 0.2, 5) for e in range(1, 51)}  # key: 1-based epoch
    assert all(tau[e] == 1.0 for e in range(1, 7))
    for epoch, value in {10: 0.98, 20: 0.82, 30: 0.56, 40: 0.31, 50: 0.20}.items():
        assert round(tau[epoch], 2) == value, epoch
    # 1-based indexing would not reproduce the reference (epoch 20 would be 0.80)
    assert round(mask_temperature_at(20, 50, 1.0, 0.2, 5), 2) != 0.82
    assert mask_temperature_at(200, 50) == pytest.approx(0.2)  # clamped past the end
