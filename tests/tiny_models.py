"""Tiny conditioned ASTs, batches and loaders shared by the speed tests (compile, mixed precision, lean step).

Two blocks, both conditioned: the smallest model that still runs every path of a mechanism. No dropout by
default: compiled and eager runs (or fp32 and bf16 ones) would draw different masks.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader, Dataset

from ls.config import config_from_dict
from ls.data.icbhi import full_metadata_spec
from ls.models import build_model, get_variant
from ls.models.backbone import ASTBackbone, ViTArch

SPEC = full_metadata_spec()
VARIANTS = ("ast", "ast_fus", "ast_film", "ast_tafilm", "ast_film_soft")
ARCH = ViTArch(embed_dim=16, num_heads=2, depth=2, mlp_ratio=2.0)
T, FREQ, B = 64, 32, 2


def tiny_model(variant: str, arch: ViTArch = ARCH, *, seed: int = 0, dropout: float = 0.0):
    """``variant`` on a ``T x FREQ`` input with every block conditioned; weights seeded by ``seed``."""
    options = get_variant(variant).options
    kw = {"conditioned_layers": list(range(arch.depth))} \
        if "conditioned_layers" in {f.name for f in dataclasses.fields(options)} else {}
    cfg = options(variant=variant, label_dim=2, input_fdim=FREQ, input_tdim=T, dropout=dropout, **kw)
    torch.manual_seed(seed)
    return build_model(cfg, SPEC, backbone=ASTBackbone(arch, input_fdim=FREQ, input_tdim=T))


def tiny_batch(seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(spec [B, T, FREQ], meta)`` with ids inside the ICBHI vocabularies."""
    g = torch.Generator().manual_seed(seed)
    meta = {"device": torch.tensor([1, 4]), "site": torch.tensor([7, 2]), "cont": torch.randn(B, 3, generator=g)}
    return torch.randn(B, T, FREQ, generator=g), meta


class Cycles(Dataset):
    """``n`` random cycles in the item layout of ``ls.data`` (two-label multi-label targets)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.spec = torch.randn(n, T, FREQ, generator=g)
        self.labels = torch.randint(0, 2, (n, 2), generator=g).float()
        self.cont = torch.randn(n, 3, generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        meta = {"device": torch.tensor(1 + i % 3), "site": torch.tensor(1 + i % 5), "cont": self.cont[i]}
        return {"spec": self.spec[i], "meta": meta, "label": self.labels[i], "filename": f"r{i // 2}",
                "cycle_index": torch.tensor(i % 2), "pid": str(i // 4)}


def tiny_loaders(n_train: int = 8, batch_size: int = 4, n_eval: int = 4) -> SimpleNamespace:
    """``.train`` (shuffled by a seeded generator, last incomplete batch dropped), ``.val`` and ``.test``."""
    return SimpleNamespace(
        train=DataLoader(Cycles(n_train, 0), batch_size=batch_size, shuffle=True, drop_last=True,
                         generator=torch.Generator().manual_seed(0)),
        val=DataLoader(Cycles(n_eval, 1), batch_size=batch_size),
        test=DataLoader(Cycles(n_eval, 2), batch_size=batch_size))


def tiny_config(tmp_path, **training):
    """A config for one CPU epoch writing checkpoints into ``tmp_path``; ``training`` overrides its section."""
    section = {"epochs": 1, "device": "cpu", "checkpoint_dir": str(tmp_path), **training}
    return config_from_dict({"dataset": {"data_folder": "unused"}, "training": section})
