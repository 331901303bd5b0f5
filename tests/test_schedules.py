"""ls.engine.schedules: LR per epoch (spec numbers and torch's own schedulers), cosine weight decay,
reduce-on-plateau, resume via state_dict, and the SoftFiLM mask temperature."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from ls.engine.config import OptimizerConfig, SchedulerConfig, TrainingConfig
from ls.engine.optim import build_optimizer
from ls.engine.schedules import (
    apply_weight_decay,
    build_lr_scheduler,
    lr_at_epoch,
    weight_decay_at_epoch,
)
from ls.types import ParamGroupSettings


def sgd(lr: float = 3e-5, groups: int = 1) -> torch.optim.Optimizer:
    params = [{"params": [nn.Parameter(torch.zeros(1))], "lr": lr * (i + 1)} for i in range(groups)]
    return torch.optim.SGD(params, lr=lr)


def trajectory(cfg: SchedulerConfig, epochs: int, lr: float = 3e-5) -> list[float]:
    """LR used in epochs 1..E when the scheduler is stepped after each epoch."""
    opt = sgd(lr)
    sched = build_lr_scheduler(opt, cfg, epochs)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        sched.step({"icbhi_score": 0.5})
    return out


def torch_trajectory(make, epochs: int, lr: float = 3e-5) -> list[float]:
    opt = sgd(lr)
    sched = make(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_warmup_matches_the_spec_numbers():
    lrs = trajectory(SchedulerConfig(type="cosine_warmup"), 50)
    assert lrs[0] == pytest.approx(3e-9, rel=1e-9)  # epoch 1
    assert lrs[1] == pytest.approx(3e-6, rel=1e-2)  # epoch 2 (3.0027e-6)
    assert lrs[9] == pytest.approx(2.7e-5, rel=1e-3)  # epoch 10
    assert lrs[10] == pytest.approx(3e-5, rel=1e-12)  # epoch 11: warm-up done, cosine starts at lr0
    assert lrs[49] == pytest.approx(5.6e-8, rel=1e-2)  # epoch 50


def test_schedules_match_torch_schedulers():
    lr_sched = torch.optim.lr_scheduler
    cases = [
        (
            SchedulerConfig(type="cosine_warmup", warmup_epochs=10),
            lambda o: lr_sched.SequentialLR(
                o,
                [
                    lr_sched.LinearLR(o, 1e-4, 1.0, total_iters=10),
                    lr_sched.CosineAnnealingLR(o, 40, eta_min=1e-8),
                ],
                milestones=[10],
            ),
        ),
        (SchedulerConfig(type="cosine"), lambda o: lr_sched.CosineAnnealingLR(o, 50, eta_min=1e-8)),
        (
            SchedulerConfig(type="cosine_warmup_restarts", T_0=20),
            lambda o: lr_sched.CosineAnnealingWarmRestarts(o, T_0=20, eta_min=1e-8),
        ),
        (
            SchedulerConfig(type="cosine_warmup_restarts", T_0=5, T_mult=2),
            lambda o: lr_sched.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=1e-8),
        ),
    ]
    for cfg, make in cases:
        ours, theirs = trajectory(cfg, 50), torch_trajectory(make, 50)
        for e, (a, b) in enumerate(zip(ours, theirs), start=1):
            assert a == pytest.approx(b, rel=1e-6, abs=1e-14), f"{cfg.type} epoch {e}"


def test_none_is_constant_and_groups_keep_their_ratio():
    assert set(trajectory(SchedulerConfig(type="none"), 5)) == {3e-5}
    opt = sgd(1e-3, groups=2)
    sched = build_lr_scheduler(opt, SchedulerConfig(type="cosine", min_lr=0.0), 10)
    for _ in range(4):
        sched.step()
    a, b = sched.get_last_lr()
    assert b == pytest.approx(2 * a)
    assert a == pytest.approx(1e-3 * (1 + math.cos(math.pi * 4 / 10)) / 2)


def test_reduce_on_plateau_maximises_the_selection_score():
    opt = sgd(1e-3)
    sched = build_lr_scheduler(opt, SchedulerConfig(type="reduce_on_plateau", reduce_patience=2), 20)
    scores = [0.50, 0.60, 0.60, 0.59, 0.60]  # best at step 2; steps 3-5 do not improve
    lrs = []
    for s in scores:
        sched.step({"icbhi_score": s, "loss": 1.0})
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[:4] == [1e-3] * 4  # a rising score never reduces (fix 11.3-3: the reference minimised it)
    assert lrs[4] == pytest.approx(5e-4)  # third epoch without improvement > patience 2


def test_reduce_on_plateau_on_a_loss_minimises_it():
    cfg = SchedulerConfig(type="reduce_on_plateau", reduce_metric="val_loss", reduce_patience=0)
    assert cfg.reduce_mode == "min"
    opt = sgd(1e-3)
    sched = build_lr_scheduler(opt, cfg, 20)
    sched.step({"loss": 1.0})
    sched.step({"loss": 0.9})
    assert opt.param_groups[0]["lr"] == 1e-3
    sched.step({"loss": 0.95})
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    with pytest.raises(ValueError, match="reduce_metric 'val_loss' is not among the validation metrics"):
        sched.step({"icbhi_score": 0.5})
    with pytest.raises(ValueError, match="contradicts reduce_metric 'icbhi_score'"):
        SchedulerConfig(type="reduce_on_plateau", reduce_mode="min")


@pytest.mark.parametrize("kind", ["cosine_warmup", "cosine_warmup_restarts", "reduce_on_plateau"])
def test_state_dict_resume_reproduces_the_schedule(kind):
    cfg = SchedulerConfig(type=kind, warmup_epochs=3, T_0=4, reduce_patience=1)
    scores = [0.5, 0.6, 0.55, 0.54, 0.53, 0.7, 0.6, 0.6, 0.6, 0.6]

    def run(opt, sched, steps):
        out = []
        for s in steps:
            sched.step({"icbhi_score": s})
            out.append([g["lr"] for g in opt.param_groups])
        return out

    opt = sgd(1e-3, groups=2)
    full = run(opt, build_lr_scheduler(opt, cfg, 10), scores)

    opt1 = sgd(1e-3, groups=2)
    s1 = build_lr_scheduler(opt1, cfg, 10)
    run(opt1, s1, scores[:4])
    buf = io.BytesIO()
    torch.save({"optimizer": opt1.state_dict(), "scheduler": s1.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    opt2 = sgd(1e-3, groups=2)
    s2 = build_lr_scheduler(opt2, cfg, 10)
    opt2.load_state_dict(saved["optimizer"])
    s2.load_state_dict(saved["scheduler"])
    assert run(opt2, s2, scores[4:]) == full[4:]


def test_mismatched_scheduler_state_and_unknown_type_are_errors():
    opt = sgd()
    state = build_lr_scheduler(opt, SchedulerConfig(type="cosine"), 5).state_dict()
    with pytest.raises(
        ValueError, match="scheduler state is for type 'cosine', this run uses 'cosine_warmup'"
    ):
        build_lr_scheduler(sgd(), SchedulerConfig(), 5).load_state_dict(state)
    with pytest.raises(ValueError, match="unknown scheduler.type 'step'; known: none, cosine"):
        build_lr_scheduler(sgd(), SchedulerConfig(type="step"), 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1-based"):
        lr_at_epoch(SchedulerConfig(), 1e-3, 0, 5)


# ----------------------------------------------------------------------------- weight decay


def test_cosine_weight_decay_values_per_epoch():
    cfg = OptimizerConfig(weight_decay=0.05, final_weight_decay=0.0)
    assert weight_decay_at_epoch(cfg, 1, 50) == 0.05
    assert weight_decay_at_epoch(cfg, 2, 50) == pytest.approx(0.025 * (1 + math.cos(math.pi / 50)))
    assert weight_decay_at_epoch(cfg, 2, 50) == pytest.approx(0.04995, abs=1e-5)
    assert weight_decay_at_epoch(cfg, 50, 50) == pytest.approx(4.9e-5, rel=1e-2)
    flat = OptimizerConfig(cosine_weight_decay=False)
    assert weight_decay_at_epoch(flat, 30, 50) == 0.05


def test_weight_decay_schedule_leaves_the_mask_group_alone():
    class WithMask(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Linear(2, 2)
            self.mask_logits = nn.Parameter(torch.zeros(3, 2))

        def param_groups(self) -> dict[str, list[nn.Parameter]]:
            return {"backbone": list(self.backbone.parameters()), "mask": [self.mask_logits]}

        def param_group_settings(self, optimizer) -> dict[str, ParamGroupSettings]:
                    return {"mask": ParamGroupSettings(1.5, 0.0), "backbone": ParamGroupSettings(1.0, 0.5)}

    opt = build_optimizer(WithMask(), OptimizerConfig(use_differential_lr=True))
    apply_weight_decay(opt, 0.01)
    decays = {g["name"]: g["weight_decay"] for g in opt.param_groups}
    assert decays == {"mask": 0.0, "backbone": 0.005}  # a declared weight-decay multiplier follows the schedule


def test_training_section_conveniences():
    """The Trainer passes the whole training section and 0-based epoch indices."""
    from ls.engine.optim import apply_weight_decay_schedule

    cfg = TrainingConfig(epochs=50)
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, cfg)
    sched = build_lr_scheduler(opt, cfg)
    assert sched.epochs == 50 and opt.param_groups[0]["lr"] == pytest.approx(3e-9)
    assert apply_weight_decay_schedule(opt, 0, cfg) == 0.05  # before the first epoch
    assert apply_weight_decay_schedule(opt, 49, cfg) == pytest.approx(
        weight_decay_at_epoch(cfg.optimizer, 50, 50)
    )
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(4.93e-5, rel=1e-2)

    plateau = TrainingConfig(scheduler=SchedulerConfig(type="reduce_on_plateau", reduce_patience=0))
    opt = build_optimizer(model, plateau)
    sched = build_lr_scheduler(opt, plateau)
    sched.step(0.6)  # the monitored value itself
    sched.step(0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(1.5e-5)
    with pytest.raises(ValueError, match="call step\\(val_metrics\\)"):
        sched.step()
