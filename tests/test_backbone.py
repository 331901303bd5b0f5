"""ASTBackbone: tokenisation order, strides, the block/modulation seam, pooling, freezing, fused attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ls.models.backbone import AST_SIZES, ASTBackbone, ViTArch, patch_grid

T, FREQ = 48, 32  # tiny inputs: [B, T=48 frames, F=32 mel]


@pytest.fixture(scope="module")
def small() -> ASTBackbone:
    torch.manual_seed(0)
    return ASTBackbone(ViTArch(embed_dim=64, num_heads=2, depth=3), input_fdim=FREQ, input_tdim=T).eval()


def test_patch_grid_follows_the_ast_formula_for_any_strides():
    assert patch_grid(128, 1024, 10, 10) == (12, 101)  # the paper's 1,212 patches
    assert patch_grid(128, 1024, 16, 16) == (8, 64)
    assert patch_grid(32, 48, 8, 6) == ((32 - 16) // 8 + 1, (48 - 16) // 6 + 1)


def test_configured_strides_are_honoured_by_the_patch_conv():
    m = ASTBackbone(ViTArch(32, 2, 1), input_fdim=FREQ, input_tdim=T, fstride=8, tstride=6)
    assert m.patch_embed.stride == (8, 6) and m.patch_embed.kernel_size == (16, 16)
    assert m.grid == (3, 6) and m.pos_embed.shape == (1, 2 + 18, 32)
    assert m.embed(torch.randn(2, T, FREQ)).shape == (2, 20, 32)


def test_presets_match_the_deit_distilled_sizes():
    assert {k: (a.embed_dim, a.num_heads, a.depth, a.pretrain_grid) for k, a in AST_SIZES.items()} == {
        "tiny224": (192, 3, 12, 14),
        "small224": (384, 6, 12, 14),
        "base224": (768, 12, 12, 14),
        "base384": (768, 12, 12, 24),
    }


def test_base384_parameter_count_matches_the_reference():
    with torch.device("meta"):  # no memory, no init cost
        m = ASTBackbone("base384", 128, 1024)
    # reference: backbone without timm's unused heads = 86,187,264; one block = 7,087,872
    assert sum(p.numel() for p in m.parameters()) == 86_187_264
    assert sum(p.numel() for p in m.blocks[0].parameters()) == 7_087_872


def test_patches_are_flattened_frequency_major_after_the_positional_embedding(small):
    spec = torch.randn(2, T, FREQ)
    tokens = small.embed(spec)
    conv = F.conv2d(
        spec.transpose(1, 2).unsqueeze(1), small.patch_embed.weight, small.patch_embed.bias, stride=10
    )
    f_dim, t_dim = small.grid
    assert conv.shape[2:] == (f_dim, t_dim)
    pos = small.pos_embed[0]
    for f, t in [(0, 0), (0, t_dim - 1), (f_dim - 1, 0), (1, 2)]:
        idx = 2 + f * t_dim + t
        torch.testing.assert_close(tokens[:, idx], conv[:, :, f, t] + pos[idx])
    torch.testing.assert_close(tokens[:, 0], (small.cls_token[0, 0] + pos[0]).expand(2, -1))
    torch.testing.assert_close(tokens[:, 1], (small.dist_token[0, 0] + pos[1]).expand(2, -1))


def test_wrong_input_shape_names_the_expected_one(small):
    with pytest.raises(ValueError, match=r"T=48, F=32"):
        small(torch.randn(2, FREQ, T))


def test_bad_sizes_and_strides_are_rejected():
    with pytest.raises(ValueError, match="model_size"):
        ASTBackbone("huge999")
    with pytest.raises(ValueError, match="tstride"):
        ASTBackbone(ViTArch(32, 2, 1), 32, 48, tstride=0)
    with pytest.raises(ValueError, match="input_tdim"):
        ASTBackbone(ViTArch(32, 2, 1), 32, 8)


def test_plain_block_path_equals_timm_block_forward(small):
    x = small.embed(torch.randn(2, T, FREQ))
    for i, block in enumerate(small.blocks):
        torch.testing.assert_close(small.run_block(i, x), block(x))


def test_modulation_replaces_the_pre_mlp_normalised_tokens(small):
    x = small.embed(torch.randn(2, T, FREQ))
    block = small.blocks[1]
    gamma, beta = torch.randn(64), torch.randn(64)
    got = small.run_block(1, x, lambda u: u * gamma + beta)
    h = x + block.attn(block.norm1(x))  # independent composition of the documented formula
    want = h + block.mlp(block.norm2(h) * gamma + beta)
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, block(x))


def test_forward_calls_modulate_once_per_layer_in_order_and_identity_changes_nothing(small):
    spec = torch.randn(2, T, FREQ)
    seen = []

    def identity(i, u):
        seen.append((i, tuple(u.shape)))
        return u

    torch.testing.assert_close(small(spec, modulate=identity), small(spec))
    assert seen == [(i, (2, 2 + small.num_patches, 64)) for i in range(3)]


def test_pool_is_mean_of_final_normed_cls_and_dist(small):
    tokens = torch.randn(2, 2 + small.num_patches, 64)
    normed = F.layer_norm(tokens, (64,), small.norm.weight, small.norm.bias, eps=1e-6)
    torch.testing.assert_close(small.pool(tokens), (normed[:, 0] + normed[:, 1]) / 2)


def test_fused_sdpa_attention_is_used(small, monkeypatch):
    assert all(b.attn.fused_attn for b in small.blocks)
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    small(torch.randn(1, T, FREQ), modulate=lambda i, u: u)
    assert len(calls) == small.depth


def test_gradients_reach_the_modulation_and_the_embeddings():
    m = ASTBackbone(ViTArch(32, 2, 2), FREQ, T)
    gamma = torch.ones(32, requires_grad=True)
    m(torch.randn(2, T, FREQ), modulate=lambda i, u: u * gamma if i == 1 else u).sum().backward()
    assert gamma.grad is not None and gamma.grad.abs().sum() > 0
    assert m.pos_embed.grad is not None and m.patch_embed.weight.grad is not None


def test_freeze_until_block_freezes_embeddings_and_leading_blocks_only():
    m = ASTBackbone(ViTArch(32, 2, 4), FREQ, T)
    m.freeze(until_block=1)
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    assert {"cls_token", "dist_token", "pos_embed", "patch_embed.weight", "patch_embed.bias"} <= frozen
    assert all(n.startswith(("blocks.0.", "blocks.1.")) for n in frozen if n.startswith("blocks."))
    assert any(n.startswith("blocks.1.") for n in frozen)
    assert all(p.requires_grad for p in m.blocks[2].parameters()) and m.norm.weight.requires_grad

    m.unfreeze()
    m.freeze(None)  # all blocks, final norm stays trainable (as the reference)
    assert not any(p.requires_grad for p in m.blocks.parameters()) and m.norm.weight.requires_grad
    with pytest.raises(ValueError, match="until_block=4"):
        m.freeze(4)
    m.unfreeze()
    assert all(p.requires_grad for p in m.parameters())
