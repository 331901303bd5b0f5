"""ls.engine.optim: AdamW over the groups a model declares (LR and weight-decay multipliers), weight-decay
exclusion; and the numbers of the built-in declarations (differential LR, SoftFiLM's mask group)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from ls.engine.config import OptimizerConfig
from ls.engine.optim import build_optimizer, group_lrs, parameter_groups
from ls.types import ParamGroupSettings


class TinyConditioned(nn.Module):
    """Stand-in for a conditioned AST with the model interface's param_groups / no_weight_decay; it declares
    the group settings it is given (none: every group trains alike)."""

    def __init__(self, settings: dict[str, ParamGroupSettings] | None = None) -> None:
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.device_emb = nn.Embedding(3, 2)
        self.encoder = nn.Linear(2, 2)
        self.film = nn.Linear(2, 8)
        self.mask_logits = nn.Parameter(torch.full((3, 4), 0.5))
        self.classifier = nn.Linear(4, 2)
        self.settings = settings or {}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "backbone": [*self.backbone.parameters(), *self.norm.parameters()],
            "embedding": [self.device_emb.weight],
            "encoder": list(self.encoder.parameters()),
            "film": list(self.film.parameters()),
            "mask": [self.mask_logits],
            "classifier": list(self.classifier.parameters()),
        }

    def param_group_settings(self, optimizer) -> dict[str, ParamGroupSettings]:
        return dict(self.settings)

    def no_weight_decay(self) -> set[str]:
        biases = {n for n, _ in self.named_parameters() if n.endswith("bias")}
        return biases | {"norm.weight", "device_emb.weight", "mask_logits"}


def softfilm():
    """A real (tiny) SoftFiLM model: its declarations decide the numbers."""
    from tiny_models import tiny_model

    return tiny_model("ast_film_soft")


def by_name(groups) -> dict[str, dict]:
    return {g["name"]: g for g in groups}


def test_paper_default_decays_everything_at_one_lr():
    model = TinyConditioned()
    groups = by_name(parameter_groups(model, OptimizerConfig()))
    assert set(groups) == {"backbone", "embedding", "encoder", "film", "mask", "classifier"}
    assert all(
        g["lr"] == 3e-5 and g["weight_decay"] == 0.05 and g["scheduled_decay"] for g in groups.values()
    )
    ids = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # every parameter exactly once


def test_declared_multipliers_set_each_groups_lr_and_weight_decay():
    model = TinyConditioned({"film": ParamGroupSettings(2.0, 0.5), "mask": ParamGroupSettings(3.0, 0.0)})
    groups = by_name(parameter_groups(model, OptimizerConfig(lr=1e-4)))
    assert groups["film"]["lr"] == pytest.approx(2e-4) and groups["film"]["weight_decay"] == pytest.approx(0.025)
    assert groups["film"]["lr_scale"] == 2.0 and groups["film"]["scheduled_decay"]
    assert groups["mask"]["lr"] == pytest.approx(3e-4) and groups["mask"]["weight_decay"] == 0.0
    assert not groups["mask"]["scheduled_decay"]
    assert groups["backbone"]["lr"] == 1e-4 and groups["backbone"]["weight_decay"] == 0.05  # not named: as the rest
    with pytest.raises(ValueError, match="must be > 0"):
        ParamGroupSettings(0.0)
    model.settings = {"film": 2.0}
    with pytest.raises(ValueError, match="must give ls.types.ParamGroupSettings"):
        parameter_groups(model, OptimizerConfig())


def test_differential_lr_uses_the_spec_scales_and_masks_get_no_decay():
    """The numbers of the paper config's scales (the model's declaration) and SoftFiLM's mask group."""
    cfg = OptimizerConfig(lr=1e-4, use_differential_lr=True)
    groups = by_name(parameter_groups(softfilm(), cfg))
    expected = {
        "backbone": 0.01,
        "embedding": 0.5,
        "encoder": 1.0,
        "film": 1.0,
        "mask": 1.5,
        "classifier": 2.0,
    }
    assert list(groups) == list(expected)  # the order of the torch groups (it decides the optimiser state)
    for name, scale in expected.items():
        assert groups[name]["lr"] == pytest.approx(1e-4 * scale)
        assert groups[name]["lr_scale"] == scale
    assert groups["mask"]["weight_decay"] == 0.0 and not groups["mask"]["scheduled_decay"]
    assert groups["film"]["weight_decay"] == 0.05


def test_one_mask_lr_knob_with_or_without_differential_lr():
    groups = by_name(parameter_groups(softfilm(), OptimizerConfig(mask_lr_scale=10.0)))
    assert groups["mask"]["lr"] == pytest.approx(3e-4) and groups["mask"]["weight_decay"] == 0.0
    assert groups["backbone"]["lr"] == 3e-5 and groups["backbone"]["weight_decay"] == 0.05
    # unset: the paper config's 1.5 under differential LR, and masks trained like the rest otherwise
    paper_diff = by_name(parameter_groups(softfilm(), OptimizerConfig(use_differential_lr=True)))
    assert paper_diff["mask"]["lr"] == pytest.approx(3e-5 * 1.5) and paper_diff["mask"]["weight_decay"] == 0.0
    plain = by_name(parameter_groups(softfilm(), OptimizerConfig()))
    assert plain["mask"]["lr"] == 3e-5 and plain["mask"]["weight_decay"] == 0.05
    assert all(g["lr"] == 3e-5 and g["weight_decay"] == 0.05 for g in plain.values())  # the paper: one rate
    # the original's name of the knob is an alias
    from ls.config.loader import from_dict

    assert from_dict(OptimizerConfig, {"mask_lr_multiplier": 10.0}).mask_lr_scale == 10.0


def test_decay_exclude_uses_no_weight_decay_names():
    model = TinyConditioned()
    groups = by_name(parameter_groups(model, OptimizerConfig(decay_exclude=True)))
    no_decay = {id(p) for n, p in model.named_parameters() if n in model.no_weight_decay()}
    for g in groups.values():
        exempt = g["name"].endswith("_no_decay")
        assert all((id(p) in no_decay) == exempt for p in g["params"])
        assert (g["weight_decay"] == 0.0) == exempt
    assert groups["backbone"]["params"] == [model.backbone.weight]
    assert "embedding" not in groups and "embedding_no_decay" in groups


def test_decay_exclude_falls_back_to_one_dimensional_parameters():
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    groups = by_name(parameter_groups(model, OptimizerConfig(decay_exclude=True)))
    assert groups["model"]["params"] == [model[0].weight]
    assert len(groups["model_no_decay"]["params"]) == 3  # linear bias, norm weight and bias


def test_frozen_parameters_are_left_out():
    model = TinyConditioned()
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    groups = by_name(parameter_groups(model, OptimizerConfig()))
    assert groups["backbone"]["params"] == list(model.norm.parameters())


def test_bad_param_groups_are_reported():
    model = TinyConditioned()
    model.param_groups = lambda: {"backbone": list(model.backbone.parameters())}  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="leaves out trainable parameters: .*'norm.weight'"):
        parameter_groups(model, OptimizerConfig())
    model.param_groups = lambda: {"a": [model.mask_logits], "b": [model.mask_logits]}  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="'mask_logits' is in two param groups: 'a' and 'b'"):
        parameter_groups(model, OptimizerConfig())
    # a group without a differential-LR key (a plugin mechanism's own) trains at its declared rate, here 1
    plain = nn.Linear(2, 2)
    plain.param_groups = lambda: {"heads": list(plain.parameters())}  # type: ignore[attr-defined]
    assert by_name(parameter_groups(plain, OptimizerConfig(use_differential_lr=True)))["heads"]["lr_scale"] == 1.0
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        parameter_groups(frozen, OptimizerConfig())


def test_adamw_applies_decoupled_decay_only_where_configured():
    """With zero gradients AdamW's update is pure decay p <- p (1 - lr wd): masks decay in paper mode only."""
    for settings, mask_decays in (
        ({}, True),
        ({"mask": ParamGroupSettings(2.0, 0.0)}, False),
    ):
        model = TinyConditioned(settings)
        opt = build_optimizer(model, OptimizerConfig(lr=0.1))
        before_mask, before_w = model.mask_logits.detach().clone(), model.film.weight.detach().clone()
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        torch.testing.assert_close(model.film.weight.detach(), before_w * (1 - 0.1 * 0.05))
        expected_mask = before_mask * (1 - 0.1 * 0.05) if mask_decays else before_mask
        torch.testing.assert_close(model.mask_logits.detach(), expected_mask)


def test_optimizer_state_is_weights_only_loadable_and_lrs_are_named():
    model = softfilm()
    opt = build_optimizer(model, OptimizerConfig(use_differential_lr=True, betas=[0.8, 0.99]))
    assert opt.param_groups[0]["betas"] == (0.8, 0.99)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert [g["name"] for g in state["param_groups"]] == [g["name"] for g in opt.param_groups]
    lrs = group_lrs(opt)
    assert lrs["lr_classifier"] == pytest.approx(6e-5) and lrs["lr_backbone"] == pytest.approx(3e-7)


@pytest.mark.parametrize(("on_cuda", "fused"), [("all", True), ("none", None), ("some", None)])
def test_adamw_is_fused_only_when_every_parameter_is_on_cuda(on_cuda, fused, monkeypatch):
    """The fused kernel takes CUDA tensors only (None: torch's default, foreach, on CPU). No GPU needed: the
    parameters' ``is_cuda`` is faked and the optimiser's arguments are captured."""
    model = TinyConditioned()
    cpu_param = model.classifier.weight
    cuda = {"all": lambda p: True, "none": lambda p: False, "some": lambda p: p is not cpu_param}[on_cuda]
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(cuda))
    captured = {}
    monkeypatch.setattr(torch.optim, "AdamW", lambda groups, **kwargs: captured.update(kwargs))
    build_optimizer(model, OptimizerConfig())
    assert captured["fused"] is fused
