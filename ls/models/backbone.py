"""Audio Spectrogram Transformer (AST) backbone on timm 1.x building blocks.

The network is a DeiT *distilled* ViT (CLS + DIST tokens) whose patch embedding is a single-channel
16x16 convolution over the log-mel spectrogram with configurable frequency/time strides (Gong et al.,
"AST: Audio Spectrogram Transformer", Interspeech 2021). Patches are flattened frequency-major
(index = f * t_dim + t), as in the original AST, so its AudioSet checkpoint loads without reordering.

The backbone exposes the seam used by the conditioning modules: ``embed`` -> ``run_block`` (with an
optional modulation of the pre-MLP normalised tokens) -> ``pool``. Conditioning code never touches timm
internals. Pretrained weights are loaded by :mod:`ls.models.weights`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

#: AST patches are 16x16 time-frequency tiles (the DeiT patch size, so ImageNet weights fit).
PATCH_SIZE = 16
#: Special tokens in front of the patch sequence: CLS and DIST (DeiT distilled).
NUM_PREFIX_TOKENS = 2


@dataclass(frozen=True)
class ViTArch:
    """Width/depth of a DeiT-distilled ViT and the square patch grid its ImageNet weights were trained on."""

    embed_dim: int
    num_heads: int
    depth: int
    pretrain_grid: int = (
        14  # ImageNet grid side (224 / 16 = 14, 384 / 16 = 24); used for pos-embed adaptation
    )
    mlp_ratio: float = 4.0


#: ``model_size`` presets (timm 1.x names: deit_{tiny,small,base}_distilled_patch16_{224,384}).
AST_SIZES: dict[str, ViTArch] = {
    "tiny224": ViTArch(embed_dim=192, num_heads=3, depth=12, pretrain_grid=14),
    "small224": ViTArch(embed_dim=384, num_heads=6, depth=12, pretrain_grid=14),
    "base224": ViTArch(embed_dim=768, num_heads=12, depth=12, pretrain_grid=14),
    "base384": ViTArch(embed_dim=768, num_heads=12, depth=12, pretrain_grid=24),
}

#: timm 1.x model names of the ImageNet checkpoints behind each preset (for error messages / docs).
TIMM_NAMES: dict[str, str] = {
    "tiny224": "deit_tiny_distilled_patch16_224",
    "small224": "deit_small_distilled_patch16_224",
    "base224": "deit_base_distilled_patch16_224",
    "base384": "deit_base_distilled_patch16_384",
}


def patch_grid(input_fdim: int, input_tdim: int, fstride: int, tstride: int) -> tuple[int, int]:
    """Number of 16x16 patches along (frequency, time) for a ``[T, F]`` input with the given strides."""
    for name, size in (("input_fdim", input_fdim), ("input_tdim", input_tdim)):
        if size < PATCH_SIZE:
            raise ValueError(f"{name}={size} is smaller than the {PATCH_SIZE}x{PATCH_SIZE} patch")
    for name, stride in (("fstride", fstride), ("tstride", tstride)):
        if not 1 <= stride <= PATCH_SIZE:
            raise ValueError(f"{name}={stride} must be in [1, {PATCH_SIZE}] (larger strides skip input)")
    return (input_fdim - PATCH_SIZE) // fstride + 1, (input_tdim - PATCH_SIZE) // tstride + 1


def resolve_arch(model_size: str | ViTArch) -> ViTArch:
    """A preset name (``tiny224`` ... ``base384``) or an explicit :class:`ViTArch`."""
    if isinstance(model_size, ViTArch):
        return model_size
    if model_size not in AST_SIZES:
        raise ValueError(f"unknown model_size {model_size!r}; expected one of {', '.join(AST_SIZES)}")
    return AST_SIZES[model_size]


#: ``modulate(layer_idx, normed_tokens [B, 2+N, D]) -> normed_tokens [B, 2+N, D]``
LayerModulation = Callable[[int, Tensor], Tensor]


class ASTBackbone(nn.Module):
    """AST encoder: spectrogram ``[B, T, F]`` -> pooled embedding ``[B, D]``.

    Args:
        model_size: preset name (``tiny224``, ``small224``, ``base224``, ``base384``) or a :class:`ViTArch`
            (e.g. read from a Hugging Face config).
        input_fdim: mel bins F of the input.
        input_tdim: frames T of the input.
        fstride, tstride: patch strides along frequency and time (always honoured; overlap when < 16).
        layer_norm_eps: epsilon of every LayerNorm (1e-6 in DeiT/original AST; 1e-12 in HF AST configs).

    Attributes:
        grid: ``(f_dim, t_dim)`` patch grid; ``num_patches = f_dim * t_dim``.
        patch_embed: ``Conv2d(1, D, 16, stride=(fstride, tstride))`` over ``[B, 1, F, T]``.
        cls_token, dist_token: ``[1, 1, D]``; pos_embed: ``[1, 2 + N, D]``.
        blocks: timm ``Block`` modules (pre-norm, fused SDPA attention, exact-GELU MLP).
        norm: final LayerNorm.
    """

    def __init__(
        self,
        model_size: str | ViTArch = "base384",
        input_fdim: int = 128,
        input_tdim: int = 1024,
        fstride: int = 10,
        tstride: int = 10,
        layer_norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        arch = resolve_arch(model_size)
        self.arch = arch
        self.model_size = model_size if isinstance(model_size, str) else "custom"
        self.embed_dim = arch.embed_dim
        self.num_heads = arch.num_heads
        self.depth = arch.depth
        self.input_fdim, self.input_tdim = input_fdim, input_tdim
        self.fstride, self.tstride = fstride, tstride
        self.layer_norm_eps = layer_norm_eps
        self.grid = patch_grid(input_fdim, input_tdim, fstride, tstride)
        self.num_patches = self.grid[0] * self.grid[1]

        dim = arch.embed_dim
        self.patch_embed = nn.Conv2d(1, dim, kernel_size=PATCH_SIZE, stride=(fstride, tstride))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, NUM_PREFIX_TOKENS + self.num_patches, dim))
        norm_layer = partial(nn.LayerNorm, eps=layer_norm_eps)
        self.blocks = nn.ModuleList(
            Block(dim, arch.num_heads, mlp_ratio=arch.mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(arch.depth)
        )
        for block in self.blocks:
            # timm reads TIMM_FUSED_ATTN at import; force the SDPA kernel (same maths, far less memory/time
            # than the explicit softmax over ~1.2k tokens the original timm 0.4.5 ran, defect 11.6-5).
            block.attn.fused_attn = True
        self.norm = norm_layer(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random init as timm's ViT: truncated normal (std 0.02) for tokens, pos-embed and Linear weights."""
        for p in (self.cls_token, self.dist_token, self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.patch_embed.reset_parameters()
        self.norm.reset_parameters()

    # -- the seam -------------------------------------------------------------------------------------------

    def embed(self, spec: Tensor) -> Tensor:
        """Spectrogram ``[B, T, F]`` -> tokens ``[B, 2 + N, D]`` (CLS, DIST, patches) with positions added."""
        if spec.dim() != 3 or spec.shape[1:] != (self.input_tdim, self.input_fdim):
            raise ValueError(
                f"ASTBackbone expects spec [B, T={self.input_tdim}, F={self.input_fdim}] "
                f"(input_tdim x input_fdim), got {tuple(spec.shape)}"
            )
        x = self.patch_embed(spec.unsqueeze(1).transpose(2, 3))  # [B, 1, F, T] -> [B, D, f, t]
        x = x.flatten(2).transpose(1, 2)  # [B, f*t, D], frequency-major
        b = x.shape[0]
        # Each token expanded on its own: their gradients are then contiguous tensors of their own, not views
        # into one [1, 2, D] gradient (which DDP's gradient buckets warn about); the values are the same.
        tokens = (self.cls_token.expand(b, -1, -1), self.dist_token.expand(b, -1, -1), x)
        return torch.cat(tokens, dim=1) + self.pos_embed

    def run_block(self, i: int, x: Tensor, modulate: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Block ``i`` on tokens ``[B, 2+N, D]``; ``modulate`` edits the pre-MLP normalised tokens.

        ``x = x + attn(norm1(x)); u = norm2(x); u = modulate(u); x = x + mlp(u)``. Without ``modulate`` this
        is exactly timm's ``Block.forward`` (no layer scale or drop-path is configured), so both paths cost
        the same.
        """
        block = self.blocks[i]
        x = x + block.attn(block.norm1(x))
        u = block.norm2(x)
        if modulate is not None:
            u = modulate(u)
        return x + block.mlp(u)

    def pool(self, tokens: Tensor) -> Tensor:
        """Final LayerNorm, then the mean of the CLS and DIST tokens: ``[B, 2+N, D]`` -> ``[B, D]``."""
        x = self.norm(tokens[:, :NUM_PREFIX_TOKENS])  # LN is per token: norming only the two used is exact
        return (x[:, 0] + x[:, 1]) / 2

    def forward(self, spec: Tensor, modulate: LayerModulation | None = None) -> Tensor:
        """Spectrogram ``[B, T, F]`` -> pooled embedding ``[B, D]``.

        ``modulate(layer_idx, normed_tokens)`` is called inside every block (return the tokens unchanged,
        or use :meth:`run_block` directly, for layers that are not conditioned).
        """
        x = self.embed(spec)
        for i in range(self.depth):
            x = self.run_block(i, x, None if modulate is None else partial(modulate, i))
        return self.pool(x)

    # -- freezing -------------------------------------------------------------------------------------------

    def freeze(self, until_block: int | None = None) -> None:
        """Freeze patch conv, pos-embed, CLS/DIST tokens and blocks ``0..until_block`` (all when None).

        The final norm stays trainable (as in the reference). A negative ``until_block`` freezes only the
        embeddings.
        """
        last = self.depth - 1 if until_block is None else until_block
        if last >= self.depth:
            raise ValueError(f"until_block={until_block} but the backbone has blocks 0..{self.depth - 1}")
        frozen: list[nn.Parameter] = [self.cls_token, self.dist_token, self.pos_embed]
        frozen += list(self.patch_embed.parameters())
        for block in self.blocks[: last + 1]:
            frozen += list(block.parameters())
        for p in frozen:
            p.requires_grad_(False)

    def unfreeze(self) -> None:
        """Make every backbone parameter trainable again."""
        for p in self.parameters():
            p.requires_grad_(True)

    def no_weight_decay(self) -> set[str]:
        """Parameter names (relative to the backbone) that a careful optimiser would not decay."""
        names = {"cls_token", "dist_token", "pos_embed"}
        return names | {n for n, p in self.named_parameters() if p.dim() <= 1}

    def extra_repr(self) -> str:
        return (
            f"model_size={self.model_size}, input=[T={self.input_tdim}, F={self.input_fdim}], "
            f"stride=(f={self.fstride}, t={self.tstride}), grid={self.grid}"
        )
