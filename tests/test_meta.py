"""Metadata encoders (ls.models.meta): embeddings, continuous encoders, the metadata MLP, input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ls.data.icbhi import full_metadata_spec
from ls.models.meta import (
    MetadataError,
    MetadataFeatures,
    MetadataMLP,
    PerFeatureContinuousEncoder,
    continuous_encoder,
)
from ls.types import MetadataSpec

SPEC = full_metadata_spec()
BOTH = ("device", "site")


def _features(spec: MetadataSpec = SPEC, factors=BOTH, dev: int = 8, site: int = 14, **kw) -> MetadataFeatures:
    return MetadataFeatures(spec, factors=factors, emb_dims={"device": dev, "site": site}, **kw)


def _meta(batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "device": torch.randint(0, SPEC.factor("device").size, (batch,), generator=g),
        "site": torch.randint(0, SPEC.factor("site").size, (batch,), generator=g),
        "cont": torch.randn(batch, SPEC.cont_dim, generator=g),
    }


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_per_feature_encoder_matches_hand_computation():
    torch.manual_seed(0)
    enc = PerFeatureContinuousEncoder(num_features=3, hidden_dim=32, dropout=0.2).eval()
    cont = torch.randn(5, 3)
    # reference from the module's weights with functional ops: k = 32 // 3 = 10 per feature
    parts = []
    for i, seq in enumerate(enc.feature_encoders):
        lin, ln = seq[0], seq[1]
        assert lin.out_features == 10
        z = F.linear(cont[:, i : i + 1], lin.weight, lin.bias)
        parts.append(F.relu(F.layer_norm(z, (10,), ln.weight, ln.bias, ln.eps)))
    z = torch.cat(parts, dim=-1)
    lin1, ln, lin2 = enc.mix[0], enc.mix[1], enc.mix[4]
    z = F.relu(F.layer_norm(F.linear(z, lin1.weight, lin1.bias), (32,), ln.weight, ln.bias, ln.eps))
    expected = F.linear(z, lin2.weight, lin2.bias)
    torch.testing.assert_close(enc(cont), expected)


def test_per_feature_encoder_parameter_count_is_the_papers():
    # spec 3.2 with H_r = 32, k = 10: 3 x (Linear(1,10) 20 + LN(10) 20) + Linear(30,32) 992 + LN 64 + Linear 1056
    assert _n_params(PerFeatureContinuousEncoder(3, 32, 0.0)) == 3 * 40 + 992 + 64 + 1056


def test_per_feature_width_is_at_least_one():
    enc = PerFeatureContinuousEncoder(num_features=5, hidden_dim=4, dropout=0.0)
    assert enc.feature_encoders[0][0].out_features == 1
    assert enc(torch.randn(2, 5)).shape == (2, 4)


def test_continuous_encoder_kinds():
    cont = torch.randn(6, 3) * 5 + 2
    raw, width = continuous_encoder("raw", 3)
    assert width == 3 and torch.equal(raw(cont), cont)
    ln, width = continuous_encoder("layernorm", 3)
    out = ln(cont)
    assert width == 3
    torch.testing.assert_close(out.mean(-1), torch.zeros(6), atol=1e-5, rtol=0)
    enc, width = continuous_encoder("per_feature", 3, hidden_dim=16)
    assert width == 16 and enc(cont).shape == (6, 16)
    with pytest.raises(ValueError, match="unknown continuous encoding 'zscore'"):
        continuous_encoder("zscore", 3)  # type: ignore[arg-type]


def test_features_concatenate_device_site_and_continuous_in_order():
    feats = _features(continuous="raw")
    meta = _meta()
    out = feats(meta)
    assert feats.out_dim == 8 + 14 + 3 and out.shape == (4, 25)
    torch.testing.assert_close(out[:, :8], feats.device_embedding.weight[meta["device"]])
    torch.testing.assert_close(out[:, 8:22], feats.site_embedding.weight[meta["site"]])
    torch.testing.assert_close(out[:, 22:], meta["cont"])


def test_vocabulary_sizes_come_from_the_spec_including_unknown_row():
    feats = _features()
    assert feats.device_embedding.num_embeddings == 5  # 4 devices + unknown
    assert feats.site_embedding.num_embeddings == 8  # 7 sites + unknown
    vocab = SPEC.vocabularies()
    wider = MetadataSpec.build({"device": vocab["device"] + ["NewDevice"], "site": vocab["site"]},
                               SPEC.cont_names + ("age_missing",))
    feats = _features(wider, continuous="raw")
    assert feats.device_embedding.num_embeddings == 6 and feats.out_dim == 8 + 14 + 4


def test_any_declared_factors_are_embedded_under_their_own_names():
    spec = MetadataSpec.build({"site": ["<unknown>", "p1", "p2"], "sex": ["<unknown>", "F", "M"]}, ["age"])
    feats = MetadataFeatures(spec, factors=("sex", "site"), emb_dims={"site": 3, "sex": 2}, continuous="raw")
    assert feats.factors == ("site", "sex")  # the data's order, whatever order they were asked in
    assert [n for n, _ in feats.named_parameters()] == ["site_embedding.weight", "sex_embedding.weight"]
    out = feats({"site": torch.tensor([2]), "sex": torch.tensor([1]), "cont": torch.tensor([[0.5]])})
    torch.testing.assert_close(out[:, 3:5], feats.sex_embedding.weight[1:2])
    with pytest.raises(ValueError, match=r"factors \['device'\] are not in the metadata spec"):
        MetadataFeatures(spec, factors=("device",), emb_dims={"device": 2})


def test_unknown_id_zero_is_a_valid_input():
    feats = _features(dev=4, site=4, continuous="per_feature", continuous_hidden_dim=8)
    meta = {"device": torch.zeros(3, dtype=torch.long), "site": torch.zeros(3, dtype=torch.long),
            "cont": torch.zeros(3, 3)}
    out = feats(meta)
    assert out.shape == (3, 4 + 4 + 8) and torch.isfinite(out).all()


def test_ablation_flags_drop_parts_and_keys():
    feats = _features(factors=("site",), use_continuous=False)
    assert not hasattr(feats, "device_embedding") and feats.continuous is None and feats.out_dim == 14
    # only the keys a part uses are required
    assert feats({"site": torch.tensor([1, 2])}).shape == (2, 14)
    with pytest.raises(ValueError, match="no metadata part enabled"):
        MetadataFeatures(SPEC, use_continuous=False)
    empty = MetadataSpec.build(SPEC.vocabularies(), ())
    with pytest.raises(ValueError, match="no continuous features"):
        _features(empty, dev=2, site=2)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (None, "got meta=None"),
        ({"site": torch.tensor([1]), "cont": torch.zeros(1, 3)}, "no key 'device'.*cont, site"),
        ({"device": torch.tensor([5]), "site": torch.tensor([1]), "cont": torch.zeros(1, 3)},
         r"meta\['device'\] has ids in \[5, 5\] but the vocabulary has 5 entries"),
        ({"device": torch.tensor([1]), "site": torch.tensor([-1]), "cont": torch.zeros(1, 3)},
         r"meta\['site'\] has ids in \[-1, -1\]"),
        ({"device": torch.tensor([1.0]), "site": torch.tensor([1]), "cont": torch.zeros(1, 3)},
         r"meta\['device'\] must be an integer id tensor \[B\], got torch.float32"),
        ({"device": torch.tensor([[1]]), "site": torch.tensor([1]), "cont": torch.zeros(1, 3)},
         r"integer id tensor \[B\].*\(1, 1\)"),
        ({"device": torch.tensor([1]), "site": torch.tensor([1]), "cont": torch.zeros(1, 4)},
         r"meta\['cont'\] must be a float tensor \[B, 3\].*\(1, 4\)"),
        ({"device": [1], "site": torch.tensor([1]), "cont": torch.zeros(1, 3)}, "must be a torch.Tensor, got list"),
    ],
)
def test_bad_metadata_raises_naming_key_and_expectation(meta, message):
    feats = _features(dev=2, site=2, continuous="raw")
    with pytest.raises(MetadataError, match=message):
        feats(meta)


def test_metadata_mlp_matches_hand_computation():
    torch.manual_seed(1)
    mlp = MetadataMLP(6, 5, 4, activation="gelu", dropout=0.3).eval()
    x = torch.randn(3, 6)
    ln, l1, l2 = mlp[0], mlp[1], mlp[4]
    z = F.gelu(F.linear(F.layer_norm(x, (6,), ln.weight, ln.bias, ln.eps), l1.weight, l1.bias))
    torch.testing.assert_close(mlp(x), F.gelu(F.linear(z, l2.weight, l2.bias)))
    assert isinstance(mlp[3], nn.Dropout) and mlp[3].p == 0.3


def test_metadata_mlp_without_input_norm_and_relu():
    mlp = MetadataMLP(3, 8, 8, activation="relu", input_norm=False).eval()
    assert isinstance(mlp[0], nn.Identity)
    x = torch.randn(2, 3) * 100
    l1, l2 = mlp[1], mlp[4]
    torch.testing.assert_close(mlp(x), F.relu(F.linear(F.relu(F.linear(x, l1.weight, l1.bias)), l2.weight, l2.bias)))
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        MetadataMLP(3, 8, 8, activation="tanh")
