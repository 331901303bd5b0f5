"""Pretrained weights: pos-embed adaptation, DeiT / original AST / Hugging Face formats, parity, errors.

Parity: a randomly initialised small transformers AST (hidden 192, 3 heads) saved with ``save_pretrained``
and loaded into ls gives the same pooled embedding and logits within 1e-4 (fp32), also through the original
AST checkpoint layout. References are computed independently (transformers, timm, numpy).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ls.models.backbone import ASTBackbone, ViTArch
from ls.models.options import WeightsConfig
from ls.models.weights import (
    WeightsError,
    adapt_pos_embed,
    backbone_from_hf,
    hf_to_original,
    load_pretrained,
    load_pretrained_head,
    original_to_hf,
    read_state_dict,
    resample_pos_embed,
)

transformers = pytest.importorskip("transformers")  # test-only dependency
TOL = {"atol": 1e-4, "rtol": 1e-4}
HF_T, HF_F = 100, 64  # HF config: max_length 100 frames, 64 mel bins


def _hf_config(layers: int = 2, fstride: int = 12, tstride: int = 8, eps: float = 1e-12):
    return transformers.ASTConfig(
        hidden_size=192,
        num_attention_heads=3,
        num_hidden_layers=layers,
        intermediate_size=768,
        max_length=HF_T,
        num_mel_bins=HF_F,
        frequency_stride=fstride,
        time_stride=tstride,
        layer_norm_eps=eps,
        num_labels=5,
    )


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """(model, directory): a random 2-layer ASTForAudioClassification with non-default strides, saved."""
    torch.manual_seed(0)
    model = transformers.ASTForAudioClassification(_hf_config()).eval()
    out = tmp_path_factory.mktemp("hf_ast")
    model.save_pretrained(out)
    return model, out


@pytest.fixture(scope="module")
def spec():
    torch.manual_seed(1)
    return torch.randn(3, HF_T, HF_F)


def _hf_reference(model, spec):
    with torch.no_grad():
        return model.audio_spectrogram_transformer(spec).pooler_output, model(spec).logits


# -- positional-embedding adaptation ------------------------------------------------------------------------


def _np_linear_resize(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Half-pixel-centre linear resize along one axis, edges clamped (align_corners=False), by np.interp."""
    n = a.shape[axis]
    x = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    return np.apply_along_axis(lambda v: np.interp(x, np.arange(n), v), axis, a)


@pytest.mark.parametrize(
    "src",
    [(14, 14), (24, 24), (12, 101)],  # DeiT-224, DeiT-384, AudioSet AST
)
@pytest.mark.parametrize(
    "dst",
    [(12, 101), (12, 25), (12, 5), (6, 40), (30, 200), (1, 1)],  # shorter and longer than the sources
)
def test_resampled_pos_embed_has_the_target_grid(src, dst):
    pos = torch.randn(1, src[0] * src[1], 8)
    assert resample_pos_embed(pos, src, dst).shape == (1, dst[0] * dst[1], 8)


def test_centre_cut_keeps_the_middle_rows_and_columns():
    src, dst = (24, 24), (12, 5)
    grid = torch.randn(24, 24, 4)  # [f, t, D]
    out = resample_pos_embed(grid.reshape(1, -1, 4), src, dst).reshape(12, 5, 4)
    # rows 12 - 6 = 6 .. 17 (as the reference: 128 mel, stride 10 keeps rows 6..17), columns 12 - 2 = 10 .. 14
    torch.testing.assert_close(out, grid[6:18, 10:15])


def test_audioset_grid_cut_for_short_inputs():
    grid = torch.randn(12, 101, 3)
    out = resample_pos_embed(grid.reshape(1, -1, 3), (12, 101), (12, 25)).reshape(12, 25, 3)
    torch.testing.assert_close(out, grid[:, 50 - 12 : 50 - 12 + 25])


def test_interpolation_matches_an_independent_linear_resize():
    grid = torch.randn(12, 101, 3, dtype=torch.float64)
    out = resample_pos_embed(grid.reshape(1, -1, 3), (12, 101), (20, 160)).reshape(20, 160, 3)
    want = _np_linear_resize(_np_linear_resize(grid.numpy(), 160, axis=1), 20, axis=0)
    np.testing.assert_allclose(out.numpy(), want, atol=1e-10)


def test_time_interpolated_then_frequency_cut():
    grid = torch.randn(24, 24, 2, dtype=torch.float64)
    out = resample_pos_embed(grid.reshape(1, -1, 2), (24, 24), (12, 101)).reshape(12, 101, 2)
    want = _np_linear_resize(grid.numpy(), 101, axis=1)[6:18]
    np.testing.assert_allclose(out.numpy(), want, atol=1e-10)


def test_special_token_embeddings_are_kept():
    pos = torch.randn(1, 2 + 14 * 14, 4)
    out = adapt_pos_embed(pos, (14, 14), (5, 9))
    assert out.shape == (1, 2 + 45, 4)
    torch.testing.assert_close(out[:, :2], pos[:, :2])


def test_pos_embed_not_fitting_the_source_grid_is_an_error():
    with pytest.raises(WeightsError, match="12x101"):
        resample_pos_embed(torch.randn(1, 100, 4), (12, 101), (12, 5))


# -- Hugging Face -------------------------------------------------------------------------------------------


def test_hf_parity_pooled_embedding_and_logits(hf_model, spec):
    model, path = hf_model
    pooled, logits = _hf_reference(model, spec)
    backbone = backbone_from_hf(path).eval()
    assert backbone.grid == (5, 11) and backbone.patch_embed.stride == (12, 8)
    head = load_pretrained_head(WeightsConfig(source="hf", path=str(path))).eval()
    with torch.no_grad():
        emb = backbone(spec)
        torch.testing.assert_close(emb, pooled, **TOL)
        torch.testing.assert_close(head(emb), logits, **TOL)


def test_hf_12_layer_model_loads_into_the_tiny224_preset_and_adopts_its_eps(tmp_path, spec):
    torch.manual_seed(2)
    model = transformers.ASTModel(_hf_config(layers=12, fstride=10, tstride=10)).eval()
    model.save_pretrained(tmp_path)
    backbone = ASTBackbone("tiny224", input_fdim=HF_F, input_tdim=HF_T).eval()  # eps 1e-6 by default
    load_pretrained(backbone, WeightsConfig(source="hf", path=str(tmp_path / "model.safetensors")))
    assert backbone.norm.eps == 1e-12 and backbone.blocks[5].norm2.eps == 1e-12
    with torch.no_grad():
        torch.testing.assert_close(backbone(spec), model(spec).pooler_output, **TOL)
    with pytest.raises(WeightsError, match="no AST classifier head|classifier head keys"):
        load_pretrained_head(WeightsConfig(source="hf", path=str(tmp_path)))


def test_hf_in_memory_names_of_transformers_5_load_too(hf_model, spec, tmp_path):
    model, path = hf_model
    state = model.state_dict()
    assert any(".q_proj." in k for k in state)  # transformers >= 5 names
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with torch.no_grad():
        torch.testing.assert_close(
            backbone_from_hf(tmp_path).eval()(spec), _hf_reference(model, spec)[0], **TOL
        )


def test_hf_weights_adapt_to_another_input_length_and_stride(hf_model):
    _, path = hf_model
    backbone = ASTBackbone(ViTArch(192, 3, 2), input_fdim=HF_F, input_tdim=300, fstride=10, tstride=10)
    load_pretrained(backbone, WeightsConfig(source="hf", path=str(path)))
    hf_pos = read_state_dict(path / "model.safetensors")[
        "audio_spectrogram_transformer.embeddings.position_embeddings"
    ]
    torch.testing.assert_close(backbone.pos_embed.data, adapt_pos_embed(hf_pos, (5, 11), backbone.grid))


def test_hf_size_mismatch_names_the_config_values(hf_model):
    _, path = hf_model
    with pytest.raises(WeightsError, match=r"num_hidden_layers=2.*models\.ast\.model_size"):
        load_pretrained(ASTBackbone("tiny224", HF_F, HF_T), WeightsConfig(source="hf", path=str(path)), "ast")


# -- original AST (AudioSet) format -------------------------------------------------------------------------


def test_hf_original_converters_round_trip(hf_model):
    _, path = hf_model
    state = read_state_dict(path / "model.safetensors")
    original = hf_to_original(state)
    assert "module.v.blocks.0.attn.qkv.weight" in original and "module.mlp_head.1.weight" in original
    assert original["module.v.patch_embed.proj.weight"].shape == (192, 1, 16, 16)
    back = original_to_hf(original)
    assert set(back) == set(state)
    for k, v in state.items():
        torch.testing.assert_close(back[k], v, rtol=0, atol=0)


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_original_format_gives_the_same_numbers_as_hf(hf_model, spec, tmp_path, prefix):
    model, path = hf_model
    original = hf_to_original(read_state_dict(path / "model.safetensors"))
    original = {prefix + k.removeprefix("module."): v for k, v in original.items()}
    original["module.v.head.weight" if prefix else "v.head.weight"] = torch.zeros(
        1000, 192
    )  # timm's unused head
    ckpt = tmp_path / "ast_like.pth"
    torch.save(original, ckpt)
    cfg = WeightsConfig(source="audioset", path=str(ckpt), source_grid=[5, 11])
    backbone = ASTBackbone(ViTArch(192, 3, 2), HF_F, HF_T, fstride=12, tstride=8, layer_norm_eps=1e-12).eval()
    load_pretrained(backbone, cfg)
    head = load_pretrained_head(cfg)
    head[0].eps = 1e-12  # the original format carries no eps; this HF model used 1e-12
    pooled, logits = _hf_reference(model, spec)
    with torch.no_grad():
        torch.testing.assert_close(backbone(spec), pooled, **TOL)
        torch.testing.assert_close(head.eval()(backbone(spec)), logits, **TOL)


def test_audioset_grid_is_inferred_and_strides_other_than_10_still_load(tmp_path):
    """A 12x101 (AudioSet-shaped) checkpoint into a stride-16 model: conv copied, pos-embed resampled."""
    torch.manual_seed(3)
    src = ASTBackbone(ViTArch(32, 2, 1), input_fdim=128, input_tdim=1024)  # stride 10 -> 12 x 101
    from ls.models.weights import ls_to_original

    torch.save(ls_to_original(src.state_dict()), tmp_path / "audioset_like.pth")
    dst = ASTBackbone(ViTArch(32, 2, 1), input_fdim=128, input_tdim=256, fstride=16, tstride=16)
    load_pretrained(dst, WeightsConfig(source="audioset", path=str(tmp_path / "audioset_like.pth")))
    assert dst.patch_embed.stride == (16, 16)
    torch.testing.assert_close(dst.patch_embed.weight, src.patch_embed.weight)
    torch.testing.assert_close(dst.pos_embed.data, adapt_pos_embed(src.pos_embed.data, (12, 101), (8, 16)))


def test_unknown_original_grid_asks_for_source_grid(tmp_path):
    src = ASTBackbone(ViTArch(32, 2, 1), input_fdim=64, input_tdim=64)
    from ls.models.weights import ls_to_original

    torch.save(ls_to_original(src.state_dict()), tmp_path / "odd.pth")
    dst = ASTBackbone(ViTArch(32, 2, 1), input_fdim=64, input_tdim=100)
    with pytest.raises(WeightsError, match=r"models\.ast_film\.weights\.source_grid|weights\.source_grid"):
        load_pretrained(dst, WeightsConfig(source="audioset", path=str(tmp_path / "odd.pth")), "ast_film")


# -- ImageNet DeiT format -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deit_state():
    timm = pytest.importorskip("timm")
    torch.manual_seed(4)
    return timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False).state_dict()


@pytest.mark.parametrize("fmt", ["pth_wrapped", "pth_plain", "safetensors"])
def test_deit_checkpoint_loads_with_rgb_summed_patch_conv_and_adapted_pos_embed(deit_state, tmp_path, fmt):
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in deit_state.items()}, str(path))
    else:
        path = tmp_path / "deit.pth"
        torch.save({"model": deit_state} if fmt == "pth_wrapped" else deit_state, path)
    backbone = ASTBackbone(
        "tiny224", input_fdim=128, input_tdim=300
    )  # grid 12 x 29: freq cut, time interpolated
    load_pretrained(backbone, WeightsConfig(source="imagenet", path=str(path)))
    w = deit_state["patch_embed.proj.weight"]
    torch.testing.assert_close(backbone.patch_embed.weight, w[:, 0:1] + w[:, 1:2] + w[:, 2:3])
    torch.testing.assert_close(backbone.blocks[3].attn.qkv.weight, deit_state["blocks.3.attn.qkv.weight"])
    torch.testing.assert_close(backbone.dist_token.data, deit_state["dist_token"])
    grid = deit_state["pos_embed"][0, 2:].reshape(14, 14, 192).double().numpy()
    want = _np_linear_resize(grid, 29, axis=1)[7 - 6 : 7 - 6 + 12].reshape(-1, 192)
    np.testing.assert_allclose(backbone.pos_embed[0, 2:].detach().double().numpy(), want, atol=1e-5)


# -- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, expect",
    [
        ("audioset", "audioset_10_10_0.4593.pth"),
        ("imagenet", "deit_tiny_distilled_patch16_224"),
        ("hf", "MIT/ast-finetuned-audioset-10-10-0.4593"),
    ],
)
def test_missing_file_says_what_to_get_and_which_key_to_set(tmp_path, source, expect):
    backbone = ASTBackbone("tiny224", 32, 48)
    for path in (None, str(tmp_path / "nope.pth")):
        with pytest.raises(WeightsError) as err:
            load_pretrained(backbone, WeightsConfig(source=source, path=path), variant="ast_tafilm")
        assert expect in str(err.value) and "models.ast_tafilm.weights.path" in str(err.value)


def test_unexpected_and_missing_keys_are_named(deit_state, tmp_path):
    state = dict(deit_state)
    state["blocks.0.attn.extra.weight"] = torch.zeros(3)
    del state["norm.bias"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as err:
        load_pretrained(
            ASTBackbone("tiny224", 32, 48), WeightsConfig(source="imagenet", path=str(tmp_path / "bad.pth"))
        )
    assert "blocks.0.attn.extra.weight" in str(err.value) and "norm.bias" in str(err.value)
    assert "bad.pth" in str(err.value)


def test_shape_mismatch_names_the_key_and_both_shapes(deit_state, tmp_path):
    torch.save(deit_state, tmp_path / "tiny.pth")
    with pytest.raises(
        WeightsError, match=r"blocks\.0\.attn\.qkv\.weight: checkpoint \(576, 192\) vs model \(1152, 384\)"
    ):
        load_pretrained(
            ASTBackbone("small224", 32, 48), WeightsConfig(source="imagenet", path=str(tmp_path / "tiny.pth"))
        )


def test_foreign_keys_in_an_original_checkpoint_are_named(tmp_path):
    torch.save({"module.encoder.weight": torch.zeros(2)}, tmp_path / "x.pth")
    with pytest.raises(WeightsError, match="encoder.weight"):
        load_pretrained(
            ASTBackbone("tiny224", 32, 48), WeightsConfig(source="audioset", path=str(tmp_path / "x.pth"))
        )


def test_checkpoints_are_read_with_weights_only(tmp_path):
    torch.save(
        {"model": {"w": torch.zeros(1)}, "extra": Path("/")}, tmp_path / "pickled.pth"
    )  # not a plain tensor dict
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        read_state_dict(tmp_path / "pickled.pth")


def test_hf_directory_without_config_or_with_unsupported_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(WeightsError, match="config.json"):
        backbone_from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64, "intermediate_size": 128}))
    with pytest.raises(WeightsError, match="intermediate_size=128"):
        backbone_from_hf(tmp_path)


def test_imagenet_has_no_pretrained_head():
    with pytest.raises(WeightsError, match="no AST classifier head"):
        load_pretrained_head(WeightsConfig(source="imagenet", path="x.pth"))


def test_source_none_keeps_the_random_init():
    backbone = ASTBackbone("tiny224", 32, 48)
    before = backbone.pos_embed.detach().clone()
    load_pretrained(backbone, WeightsConfig())
    torch.testing.assert_close(backbone.pos_embed.data, before)


def test_weights_files_are_checked_without_loading_them(tmp_path):
    """What training checks before any data is built: the file exists, is readable and has the configured
    format; a text file is said to be no checkpoint (not 'cannot read checkpoint ...: 101')."""
    from ls.models.weights import check_weights_file

    text = tmp_path / "audioset_10_10_0.4593.pth"
    text.write_text("see https://example.org for the weights\n")
    for source in ("audioset", "imagenet"):
        with pytest.raises(WeightsError) as err:
            check_weights_file(WeightsConfig(source=source, path=str(text)), "ast")
        assert str(err.value) == f"{text} is not a checkpoint: it is a text file, expected a PyTorch checkpoint " \
                                 "(torch.save)"
        with pytest.raises(WeightsError, match="is not a checkpoint: it is a text file"):
            read_state_dict(text)
    fake = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(1)}, fake)
    with pytest.raises(WeightsError, match="model.safetensors is not a checkpoint: it is a PyTorch file, "
                                           "expected a safetensors file"):
        check_weights_file(WeightsConfig(source="imagenet", path=str(fake)), "ast")
    with pytest.raises(WeightsError, match="is a folder"):
        check_weights_file(WeightsConfig(source="audioset", path=str(tmp_path)), "ast_film")
    with pytest.raises(WeightsError, match="models.ast_film.weights.path=.*does not exist"):
        check_weights_file(WeightsConfig(source="audioset", path=str(tmp_path / "nope.pth")), "ast_film")
    good = tmp_path / "good.pth"
    torch.save({"module.v.cls_token": torch.zeros(1)}, good)
    assert check_weights_file(WeightsConfig(source="audioset", path=str(good)), "ast") == good
    assert check_weights_file(WeightsConfig(source="none"), "ast") is None
