"""Pretrained weights for :class:`~ls.models.backbone.ASTBackbone`, from local files only.

Three checkpoint formats, one filter function each (checkpoint state dict -> backbone state dict):

- ``imagenet``: a timm DeiT-distilled checkpoint (``deit_base_distilled_patch16_384`` etc.; ``.pth`` holding
  ``{"model": state_dict}`` or a plain state dict, or timm's hub ``.safetensors``)
  -> :func:`filter_deit_state`.
- ``audioset``: the original AST checkpoint (``audioset_10_10_0.4593.pth``; keys ``module.v.*`` and
  ``module.mlp_head.{0,1}.*``, the ``module.`` prefix optional) -> :func:`filter_original_ast_state`.
- ``hf``: a Hugging Face ``ASTModel`` / ``ASTForAudioClassification`` directory (``config.json`` +
  ``model.safetensors`` or ``pytorch_model.bin``) -> :func:`filter_hf_state`.

Key mapping, original AST (``module.v.`` stripped) <-> ls <-> Hugging Face (``audio_spectrogram_transformer.``
stripped; ``L = encoder.layer.{i}``, as written by ``save_pretrained``)::

    cls_token                  cls_token          embeddings.cls_token
    dist_token                 dist_token         embeddings.distillation_token
    pos_embed                  pos_embed          embeddings.position_embeddings
    patch_embed.proj.*         patch_embed.*      embeddings.patch_embeddings.projection.*
    blocks.{i}.norm1.*         (same)             L.layernorm_before.*
    blocks.{i}.attn.qkv.*      (same)             L.attention.attention.{query,key,value}.*  (q, k, v concat.)
    blocks.{i}.attn.proj.*     (same)             L.attention.output.dense.*
    blocks.{i}.norm2.*         (same)             L.layernorm_after.*
    blocks.{i}.mlp.fc1.*       (same)             L.intermediate.dense.*
    blocks.{i}.mlp.fc2.*       (same)             L.output.dense.*
    norm.*                     norm.*             layernorm.*
    mlp_head.0.* (LN)          head 0 (LN)        classifier.layernorm.*  (original side: ``module.mlp_head``)
    mlp_head.1.* (Linear)      head 1 (Linear)    classifier.dense.*

The in-memory names of transformers >= 5 (``layers.{i}.attention.{q,k,v,o}_proj``, ``layers.{i}.mlp.fc{1,2}``)
are accepted too. The positional embedding is adapted to the backbone's patch grid by
:func:`resample_pos_embed` (the original AST recipe), so any input size and any strides load: the 16x16 patch
kernel does not depend on the stride. Nothing is ever downloaded; ``torch.load`` runs with
``weights_only=True``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ls.models.backbone import NUM_PREFIX_TOKENS, PATCH_SIZE, TIMM_NAMES, ASTBackbone, ViTArch, patch_grid
from ls.models.options import WeightsConfig
from ls.utils.io import describe_kind, file_kind, torch_load_problem

log = logging.getLogger(__name__)

StateDict = dict[str, Tensor]

#: Patch grid (frequency, time) of the original AST AudioSet checkpoints: 128 mel x 1024 frames, stride 10.
AUDIOSET_GRID = (12, 101)
AUDIOSET_FILE = "audioset_10_10_0.4593.pth"
HF_AST_MODEL = "MIT/ast-finetuned-audioset-10-10-0.4593"
HF_PREFIX = "audio_spectrogram_transformer."
ORIGINAL_PREFIX = "module."

# Where users get each file; quoted by the missing-file error.
_WHERE = {
    "imagenet": (
        "a timm DeiT-distilled ImageNet checkpoint (e.g. timm's '{timm_name}' release: "
        "'{timm_name}.pth' or its hub 'model.safetensors')"
    ),
    "audioset": (
        f"the original AST AudioSet checkpoint '{AUDIOSET_FILE}' (from the AST release by Gong et al., "
        "github.com/YuanGongND/ast, 'Pretrained Models')"
    ),
    "hf": (
        f"a Hugging Face AST model directory with config.json and model.safetensors (e.g. '{HF_AST_MODEL}' "
        "saved with save_pretrained, or its hub snapshot folder)"
    ),
}


class WeightsError(ValueError):
    """A pretrained checkpoint is missing, unreadable, or does not fit the backbone; the message names it."""


# ---------------------------------------------------------------------------------------------------------
# positional embeddings


def _resize_or_cut(grid: Tensor, size: int, axis: int) -> Tensor:
    """Along ``axis`` (2 = frequency rows, 3 = time columns) of ``[1, D, f, t]``: keep the centred ``size``
    entries when shrinking (or equal), bilinearly resize (align_corners=False) when growing."""
    src = grid.shape[axis]
    if size <= src:
        start = src // 2 - size // 2
        return grid.narrow(axis, start, size)
    out = list(grid.shape[2:])
    out[axis - 2] = size
    return F.interpolate(grid, size=tuple(out), mode="bilinear", align_corners=False)


def resample_pos_embed(patch_pos: Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int]) -> Tensor:
    """Adapt patch positional embeddings from one (frequency, time) grid to another, as the original AST.

    Time axis first, then frequency; per axis: centre cut when the target is not longer than the source,
    bilinear interpolation (``align_corners=False``) when it is longer. Pure function.

    Args:
        patch_pos: ``[1, f_src * t_src, D]``, frequency-major (index = f * t_src + t).
        src_grid: ``(f_src, t_src)`` (e.g. ``(24, 24)`` for DeiT-384, ``(12, 101)`` for AudioSet AST).
        dst_grid: ``(f_dst, t_dst)``.

    Returns:
        ``[1, f_dst * t_dst, D]``, frequency-major.
    """
    f_src, t_src = src_grid
    if patch_pos.dim() != 3 or patch_pos.shape[0] != 1 or patch_pos.shape[1] != f_src * t_src:
        raise WeightsError(
            f"patch positional embedding of shape {tuple(patch_pos.shape)} does not fit the source grid "
            f"{f_src}x{t_src} (expected [1, {f_src * t_src}, D])"
        )
    dim = patch_pos.shape[2]
    grid = patch_pos.transpose(1, 2).reshape(1, dim, f_src, t_src)
    grid = _resize_or_cut(grid, dst_grid[1], axis=3)
    grid = _resize_or_cut(grid, dst_grid[0], axis=2)
    return grid.reshape(1, dim, dst_grid[0] * dst_grid[1]).transpose(1, 2).contiguous()


def adapt_pos_embed(
    pos_embed: Tensor,
    src_grid: tuple[int, int],
    dst_grid: tuple[int, int],
    num_prefix: int = NUM_PREFIX_TOKENS,
) -> Tensor:
    """``[1, P + N_src, D]`` (P special tokens first, kept as they are) -> ``[1, P + N_dst, D]``."""
    prefix, patches = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    return torch.cat((prefix, resample_pos_embed(patches, src_grid, dst_grid)), dim=1)


# ---------------------------------------------------------------------------------------------------------
# key mapping (pure renames; no resampling)

_LS_TO_HF_LAYER = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
_HF_TO_LS_LAYER = {v: k for k, v in _LS_TO_HF_LAYER.items()}
_LS_TO_HF_TOP = {
    "cls_token": "embeddings.cls_token",
    "dist_token": "embeddings.distillation_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
_HF_TO_LS_TOP = {v: k for k, v in _LS_TO_HF_TOP.items()}
_QKV = ("query", "key", "value")
# transformers >= 5 in-memory names -> the save_pretrained (v4) names used everywhere below
_HF_V5_RENAMES = (
    (re.compile(r"^layers\.(\d+)\.attention\.([qkv])_proj\."), None),
    (re.compile(r"^layers\.(\d+)\.attention\.o_proj\."), r"encoder.layer.\1.attention.output.dense."),
    (re.compile(r"^layers\.(\d+)\.mlp\.fc1\."), r"encoder.layer.\1.intermediate.dense."),
    (re.compile(r"^layers\.(\d+)\.mlp\.fc2\."), r"encoder.layer.\1.output.dense."),
    (re.compile(r"^layers\.(\d+)\.(layernorm_before|layernorm_after)\."), r"encoder.layer.\1.\2."),
)
_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
_LS_LAYER = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")
#: A checkpoint head as ``nn.Sequential(LayerNorm, Linear)``: HF ``classifier`` / AST ``mlp_head`` -> index
HEAD_KEYS = {"layernorm": "0", "dense": "1"}


def _normalise_hf_names(state: Mapping[str, Tensor]) -> StateDict:
    out: StateDict = {}
    for key, value in state.items():
        key = key.removeprefix(HF_PREFIX)
        for pattern, repl in _HF_V5_RENAMES:
            m = pattern.match(key)
            if m is None:
                continue
            if repl is None:  # q/k/v projection
                name = _QKV["qkv".index(m.group(2))]
                key = f"encoder.layer.{m.group(1)}.attention.attention.{name}." + key[m.end() :]
            else:
                key = pattern.sub(repl, key)
            break
        out[key] = value
    return out


def hf_to_ls(state: Mapping[str, Tensor]) -> tuple[StateDict, StateDict]:
    """HF AST state dict -> ``(backbone_state, head_state)`` in ls names (q, k, v fused into qkv).

    ``head_state`` holds ``0.*`` (LayerNorm) and ``1.*`` (Linear) of the HF classifier (empty for
    ``ASTModel``).
    Keys that belong to neither raise :class:`WeightsError`.
    """
    state = _normalise_hf_names(state)
    backbone: StateDict = {}
    head: StateDict = {}
    qkv: dict[tuple[int, str], dict[str, Tensor]] = {}
    unknown = []
    for key, value in state.items():
        if key in _HF_TO_LS_TOP:
            backbone[_HF_TO_LS_TOP[key]] = value
        elif key.startswith("classifier."):
            module, _, param = key[len("classifier.") :].partition(".")
            if module not in HEAD_KEYS:
                unknown.append(key)
                continue
            head[f"{HEAD_KEYS[module]}.{param}"] = value
        elif (m := _HF_LAYER.match(key)) is not None:
            i, module, param = m.groups()
            if module.startswith("attention.attention.") and module.split(".")[-1] in _QKV:
                qkv.setdefault((int(i), param), {})[module.split(".")[-1]] = value
            elif module in _HF_TO_LS_LAYER:
                backbone[f"blocks.{i}.{_HF_TO_LS_LAYER[module]}.{param}"] = value
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    for (i, param), parts in sorted(qkv.items()):
        if set(parts) != set(_QKV):
            raise WeightsError(
                f"layer {i}: attention {param} has {sorted(parts)}, expected query, key and value"
            )
        backbone[f"blocks.{i}.attn.qkv.{param}"] = torch.cat([parts[n] for n in _QKV], dim=0)
    if unknown:
        raise WeightsError(f"not Hugging Face AST keys: {_listing(unknown)}")
    return backbone, head


def ls_to_hf(backbone: Mapping[str, Tensor], head: Mapping[str, Tensor] | None = None) -> StateDict:
    """ls names -> HF ``ASTForAudioClassification`` names as written by ``save_pretrained`` (qkv split)."""
    out: StateDict = {}
    for key, value in backbone.items():
        if key in _LS_TO_HF_TOP:
            out[HF_PREFIX + _LS_TO_HF_TOP[key]] = value
            continue
        m = _LS_LAYER.match(key)
        if m is None:
            raise WeightsError(f"not an ls backbone key: {key!r}")
        i, module, param = m.groups()
        layer = f"{HF_PREFIX}encoder.layer.{i}."
        if module == "attn.qkv":
            for name, part in zip(_QKV, value.chunk(3, dim=0)):
                out[f"{layer}attention.attention.{name}.{param}"] = part.clone()
        elif module in _LS_TO_HF_LAYER:
            out[layer + _LS_TO_HF_LAYER[module] + "." + param] = value
        else:
            raise WeightsError(f"not an ls backbone key: {key!r}")
    inverse = {v: k for k, v in HEAD_KEYS.items()}
    for key, value in (head or {}).items():
        idx, _, param = key.partition(".")
        out[f"classifier.{inverse[idx]}.{param}"] = value
    return out


def original_to_ls(state: Mapping[str, Tensor]) -> tuple[StateDict, StateDict]:
    """Original AST state dict (``[module.]v.*``, ``[module.]mlp_head.{0,1}.*``) -> ``(backbone, head)``.

    timm's unused ``v.head`` / ``v.head_dist`` are dropped; any other key outside ``v.``/``mlp_head.`` raises.
    """
    backbone: StateDict = {}
    head: StateDict = {}
    unknown = []
    for key, value in state.items():
        key = key.removeprefix(ORIGINAL_PREFIX)
        if key.startswith("v."):
            key = key[2:]
            if key.startswith(("head.", "head_dist.")):
                continue
            backbone[key.replace("patch_embed.proj.", "patch_embed.")] = value
        elif key.startswith("mlp_head."):
            head[key[len("mlp_head.") :]] = value
        else:
            unknown.append(key)
    if unknown:
        raise WeightsError(
            f"not original AST keys (expected 'module.v.*' / 'module.mlp_head.*'): {_listing(unknown)}"
        )
    return backbone, head


def ls_to_original(backbone: Mapping[str, Tensor], head: Mapping[str, Tensor] | None = None) -> StateDict:
    """ls names -> the original AST checkpoint layout (``module.v.*``, ``module.mlp_head.{0,1}.*``)."""
    out = {
        ORIGINAL_PREFIX + "v." + k.replace("patch_embed.", "patch_embed.proj.", 1): v
        for k, v in backbone.items()
    }
    out.update({f"{ORIGINAL_PREFIX}mlp_head.{k}": v for k, v in (head or {}).items()})
    return out


def hf_to_original(state: Mapping[str, Tensor]) -> StateDict:
    """HF AST state dict -> original AST layout (same tensors; q, k, v fused)."""
    return ls_to_original(*hf_to_ls(state))


def original_to_hf(state: Mapping[str, Tensor]) -> StateDict:
    """Original AST state dict -> HF ``save_pretrained`` layout (same tensors; qkv split)."""
    return ls_to_hf(*original_to_ls(state))


# ---------------------------------------------------------------------------------------------------------
# filters: checkpoint state dict -> backbone state dict (renamed, pos-embed adapted)


def filter_deit_state(state: Mapping[str, Tensor], backbone: ASTBackbone) -> StateDict:
    """timm DeiT-distilled ImageNet state dict -> backbone state dict.

    The RGB patch projection ``[D, 3, 16, 16]`` is summed over colour channels (a grey image seen by the
    RGB filters); the square ``g x g`` pos-embed grid is adapted to the backbone's (frequency, time) grid.
    """
    out: StateDict = {}
    for key, value in state.items():
        if key.startswith(("head.", "head_dist.")):
            continue  # ImageNet classifiers
        if key == "patch_embed.proj.weight":
            value = value.sum(dim=1, keepdim=True) if value.shape[1] == 3 else value
        out[key.replace("patch_embed.proj.", "patch_embed.")] = value
    if "pos_embed" in out:
        n = out["pos_embed"].shape[1] - NUM_PREFIX_TOKENS
        side = math.isqrt(max(n, 0))
        if side * side != n:
            raise WeightsError(
                f"DeiT pos_embed {tuple(out['pos_embed'].shape)} does not hold CLS + DIST + a square grid"
            )
        out["pos_embed"] = adapt_pos_embed(out["pos_embed"], (side, side), backbone.grid)
    return out


def infer_original_grid(
    num_patches: int, backbone: ASTBackbone, source_grid: list[int] | None
) -> tuple[int, int]:
    """Patch grid of an original-format checkpoint: explicit, else 12x101 (AudioSet), else the backbone's."""
    if source_grid is not None:
        grid = (int(source_grid[0]), int(source_grid[1]))
        if grid[0] * grid[1] != num_patches:
            raise WeightsError(
                f"weights.source_grid {list(grid)} has {grid[0] * grid[1]} patches but the checkpoint's "
                f"pos_embed has {num_patches}"
            )
        return grid
    if num_patches == AUDIOSET_GRID[0] * AUDIOSET_GRID[1]:
        return AUDIOSET_GRID
    if num_patches == backbone.num_patches:
        return backbone.grid
    raise WeightsError(
        f"cannot tell the patch grid of a pos_embed with {num_patches} patches (not the AudioSet 12x101 nor "
        f"this model's {backbone.grid[0]}x{backbone.grid[1]}); set models.<variant>.weights.source_grid: "
        "[f_dim, t_dim]"
    )


def filter_original_ast_state(
    state: Mapping[str, Tensor], backbone: ASTBackbone, source_grid: list[int] | None = None
) -> StateDict:
    """Original AST checkpoint -> backbone state dict; pos-embed adapted from its grid (default 12x101)."""
    out, _ = original_to_ls(state)
    if "pos_embed" in out:
        src = infer_original_grid(out["pos_embed"].shape[1] - NUM_PREFIX_TOKENS, backbone, source_grid)
        out["pos_embed"] = adapt_pos_embed(out["pos_embed"], src, backbone.grid)
    return out


def filter_hf_state(state: Mapping[str, Tensor], hf_config: Mapping, backbone: ASTBackbone) -> StateDict:
    """HF AST state dict -> backbone state dict; pos-embed adapted from the grid its config implies."""
    out, _ = hf_to_ls(state)
    if "pos_embed" in out:
        out["pos_embed"] = adapt_pos_embed(out["pos_embed"], hf_grid(hf_config), backbone.grid)
    return out


# ---------------------------------------------------------------------------------------------------------
# files


def read_state_dict(path: str | Path) -> StateDict:
    """Tensors of a ``.pth``/``.pt``/``.bin`` (``torch.load(weights_only=True)``) or ``.safetensors`` file.

    ``{"model": sd}`` (DeiT releases) and ``{"state_dict": sd}`` wrappers are unwrapped.
    """
    path = Path(path)
    _check_file_format(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt file, pickle with non-tensor objects, ...
        # torch's message advises weights_only=False (running the file's code): never passed on
        raise WeightsError(f"cannot read checkpoint {path}: {torch_load_problem(exc)}") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"checkpoint {path} does not hold a state dict (name -> tensor)")
    return dict(state)


def _hf_files(path: Path) -> tuple[Path, list[Path]]:
    """(config.json, weight files) of an HF model directory, or of the folder holding a weight file."""
    folder = path if path.is_dir() else path.parent
    config = folder / "config.json"
    if not config.is_file():
        raise WeightsError(
            f"Hugging Face AST weights at {path} need {config} beside them (hidden size, strides, ...)"
        )
    if path.is_file():
        return config, [path]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return config, [folder / name]
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            return config, [folder / s for s in shards]
    raise WeightsError(f"no model.safetensors or pytorch_model.bin in Hugging Face model directory {folder}")


def read_hf_config(path: str | Path) -> dict:
    """The ``config.json`` of an HF AST model directory (or of the folder holding a weight file)."""
    config, _ = _hf_files(Path(path))
    cfg = json.loads(config.read_text())
    for key, expected in (("patch_size", PATCH_SIZE), ("qkv_bias", True), ("hidden_act", "gelu")):
        if cfg.get(key, expected) != expected:
            raise WeightsError(
                f"{config}: {key}={cfg[key]!r} is not supported by ASTBackbone (needs {expected!r})"
            )
    hidden, inter = cfg.get("hidden_size", 768), cfg.get("intermediate_size", 3072)
    if inter != 4 * hidden:
        raise WeightsError(
            f"{config}: intermediate_size={inter} must be 4 x hidden_size={hidden} for ASTBackbone"
        )
    return cfg


def hf_grid(hf_config: Mapping) -> tuple[int, int]:
    """Patch grid (frequency, time) of an HF AST config (``num_mel_bins``, ``max_length``, strides)."""
    return patch_grid(
        hf_config.get("num_mel_bins", 128),
        hf_config.get("max_length", 1024),
        hf_config.get("frequency_stride", 10),
        hf_config.get("time_stride", 10),
    )


def hf_backbone_kwargs(path: str | Path) -> dict:
    """``ASTBackbone(**kwargs)`` that reproduce an HF AST model exactly (size, input, strides, eps)."""
    cfg = read_hf_config(path)
    arch = ViTArch(
        embed_dim=cfg.get("hidden_size", 768),
        num_heads=cfg.get("num_attention_heads", 12),
        depth=cfg.get("num_hidden_layers", 12),
        pretrain_grid=24,
    )
    return {
        "model_size": arch,
        "input_fdim": cfg.get("num_mel_bins", 128),
        "input_tdim": cfg.get("max_length", 1024),
        "fstride": cfg.get("frequency_stride", 10),
        "tstride": cfg.get("time_stride", 10),
        "layer_norm_eps": cfg.get("layer_norm_eps", 1e-12),
    }


def backbone_from_hf(path: str | Path) -> ASTBackbone:
    """An :class:`ASTBackbone` shaped and loaded exactly like the HF AST model at ``path``."""
    backbone = ASTBackbone(**hf_backbone_kwargs(path))
    load_pretrained(backbone, WeightsConfig(source="hf", path=str(path)))
    return backbone


def _listing(keys: list[str] | set[str], limit: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _check_fits(backbone: ASTBackbone, state: Mapping[str, Tensor], what: str) -> None:
    """Raise naming missing, unexpected and wrongly shaped keys (clearer than load_state_dict's error)."""
    expected = backbone.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        parts = [
            (
                f"{what} does not fit ASTBackbone({backbone.extra_repr()}, D={backbone.embed_dim}, "
                f"depth={backbone.depth}):"
            )
        ]
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        if shapes:
            parts.append("shape mismatches: " + "; ".join(shapes[:12]))
        raise WeightsError("\n  ".join(parts))


def _check_file_format(path: Path) -> None:
    """Raise unless ``path`` is a readable file of the kind its name promises (``.safetensors``: safetensors;
    anything else: a ``torch.save`` file), from its first bytes only."""
    try:
        kind = file_kind(path)
    except OSError as exc:
        raise WeightsError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    expected = ("safetensors",) if path.suffix == ".safetensors" else ("torch-zip", "torch-legacy")
    if kind not in expected:
        want = "a safetensors file" if path.suffix == ".safetensors" else "a PyTorch checkpoint (torch.save)"
        raise WeightsError(f"{path} is not a checkpoint: it is {describe_kind(kind)}, expected {want}")


def check_weights_file(weights: WeightsConfig, variant: str = "<variant>", model_size: str = "base384") -> Path | None:
    """Check, without loading it, that the file of ``weights`` exists, is readable and has the format of
    ``weights.source`` (a quick look at its first bytes); returns its path (None for ``source: none``).

    Training calls this before any data is built, so a wrong path costs seconds, not a data build.
    """
    if weights.source == "none":
        return None
    path = _require_file(weights, variant, model_size)
    key = f"models.{variant}.weights.path"
    if weights.source == "hf":
        config, files = _hf_files(path)
        for file in [config, *files]:
            if not os.access(file, os.R_OK):
                raise WeightsError(f"{key}: cannot read {file} (permission denied)")
        for file in files:
            _check_file_format(file)
        return path
    if path.is_dir():
        if weights.source == "imagenet" and (path / "model.safetensors").is_file():
            path = path / "model.safetensors"
        else:
            raise WeightsError(f"{key}={weights.path!r} is a folder; weights.source={weights.source!r} needs a "
                               "checkpoint file")
    _check_file_format(path)
    return path


def _require_file(weights: WeightsConfig, variant: str, model_size: str = "base384") -> Path:
    where = _WHERE[weights.source].format(timm_name=TIMM_NAMES.get(model_size, TIMM_NAMES["base384"]))
    key = f"models.{variant}.weights.path"
    if not weights.path:
        raise WeightsError(f"weights.source={weights.source!r} needs {where}; set {key} to that file")
    path = Path(weights.path).expanduser()
    if not path.exists():
        raise WeightsError(
            f"{key}={weights.path!r} does not exist; expected {where}. Nothing is downloaded at run time"
        )
    return path


def load_pretrained(backbone: ASTBackbone, weights: WeightsConfig, variant: str = "<variant>") -> ASTBackbone:
    """Load ``weights`` (``models.<variant>.weights``) into ``backbone`` in place; returns the backbone.

    ``source: none`` leaves the random init. Every parameter of the backbone must come from the file (strict):
    missing, unexpected or wrongly shaped keys raise :class:`WeightsError` naming them. For ``hf`` the
    checkpoint's ``layer_norm_eps`` replaces the backbone's (HF AST uses 1e-12, DeiT 1e-6), and its width,
    heads and depth must match the backbone (use :func:`backbone_from_hf` to build a matching one).
    """
    if weights.source == "none":
        return backbone
    path = _require_file(weights, variant, backbone.model_size)
    if weights.source == "imagenet":
        if path.is_dir():
            path = path / "model.safetensors"
        state = filter_deit_state(read_state_dict(path), backbone)
    elif weights.source == "audioset":
        state = filter_original_ast_state(read_state_dict(path), backbone, weights.source_grid)
    elif weights.source == "hf":
        cfg = read_hf_config(path)
        arch = hf_backbone_kwargs(path)["model_size"]
        if (arch.embed_dim, arch.num_heads, arch.depth) != (
            backbone.embed_dim,
            backbone.num_heads,
            backbone.depth,
        ):
            raise WeightsError(
                f"Hugging Face AST at {path} has hidden_size={arch.embed_dim}, "
                f"num_attention_heads={arch.num_heads}, num_hidden_layers={arch.depth}, but the model has "
                f"D={backbone.embed_dim}, heads={backbone.num_heads}, depth={backbone.depth}; choose "
                f"models.{variant}.model_size to match (or ls.models.weights.backbone_from_hf)"
            )
        raw: StateDict = {}
        for file in _hf_files(path)[1]:
            raw.update(read_state_dict(file))
        state = filter_hf_state(raw, cfg, backbone)
        set_layer_norm_eps(backbone, float(cfg.get("layer_norm_eps", 1e-12)))
    else:  # the config Literal already rejects this; kept for direct callers
        raise WeightsError(
            f"unknown weights.source {weights.source!r}; expected none, imagenet, audioset or hf"
        )
    _check_fits(backbone, state, f"{weights.source} checkpoint {path}")
    backbone.load_state_dict(state, strict=True)
    log.info("loaded %s weights from %s into %s", weights.source, path, backbone.extra_repr())
    return backbone


def set_layer_norm_eps(backbone: ASTBackbone, eps: float) -> None:
    """Set the epsilon of every LayerNorm in the backbone (a checkpoint's own value, for exact parity)."""
    for module in backbone.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = eps
    backbone.layer_norm_eps = eps


def load_pretrained_head(weights: WeightsConfig, variant: str = "<variant>") -> nn.Sequential:
    """The checkpoint's classifier as ``nn.Sequential(LayerNorm(D), Linear(D, n))`` (HF ``classifier``, AST
    ``mlp_head``); e.g. 527 AudioSet classes. Applied to the pooled embedding it reproduces the checkpoint's
    logits. Raises :class:`WeightsError` when the checkpoint has no head (ImageNet, HF ``ASTModel``)."""
    if weights.source not in ("audioset", "hf"):
        raise WeightsError(
            f"weights.source={weights.source!r} has no AST classifier head (only audioset and hf)"
        )
    path = _require_file(weights, variant)
    eps = 1e-6
    if weights.source == "hf":
        eps = float(read_hf_config(path).get("layer_norm_eps", 1e-12))
        raw: StateDict = {}
        for file in _hf_files(path)[1]:
            raw.update(read_state_dict(file))
        _, head = hf_to_ls(raw)
    else:
        _, head = original_to_ls(read_state_dict(path))
    return head_from_state(head, eps, str(path))


def head_from_state(head: Mapping[str, Tensor], eps: float, what: str = "checkpoint") -> nn.Sequential:
    """``{"0.weight", "0.bias", "1.weight", "1.bias"}`` -> ``Sequential(LayerNorm(D, eps), Linear(D, n))``."""
    want = {"0.weight", "0.bias", "1.weight", "1.bias"}
    if set(head) != want:
        raise WeightsError(
            f"{what}: classifier head keys {sorted(head)} (as LN + Linear), expected {sorted(want)}"
        )
    n, dim = head["1.weight"].shape
    module = nn.Sequential(nn.LayerNorm(dim, eps=eps), nn.Linear(dim, n))
    _check = module.state_dict()
    bad = [k for k in want if _check[k].shape != head[k].shape]
    if bad:
        raise WeightsError(f"{what}: classifier head shapes do not match for {sorted(bad)}")
    module.load_state_dict(dict(head))
    return module


__all__ = [
    "AUDIOSET_GRID",
    "WeightsError",
    "adapt_pos_embed",
    "backbone_from_hf",
    "check_weights_file",
    "filter_deit_state",
    "filter_hf_state",
    "filter_original_ast_state",
    "head_from_state",
    "hf_backbone_kwargs",
    "hf_grid",
    "hf_to_ls",
    "hf_to_original",
    "load_pretrained",
    "load_pretrained_head",
    "ls_to_hf",
    "ls_to_original",
    "original_to_hf",
    "original_to_ls",
    "read_hf_config",
    "read_state_dict",
    "resample_pos_embed",
    "set_layer_norm_eps",
]
