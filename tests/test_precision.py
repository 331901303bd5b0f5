"""Mixed precision (ls.engine.precision and the trainer's use of it).

- Selection: what ``training.amp`` means on CPU and on a CUDA device with and without bf16 support (the CUDA
  capability is mocked: these machines have no GPU), TF32 switches, the paper configs' setting.
- Numerics: a bf16-autocast forward/backward of every variant on a tiny backbone, on CPU (autocast runs the
  same op-level casting policy there), is finite and close to fp32. Tolerances, from bf16's 8-bit mantissa
  (relative spacing 2^-8 ~ 0.4 %): logits within 0.02 absolute (their scale is ~0.5; measured <= 0.004), the
  loss within 0.005, the gradient vector within 5 % relative L2 error (measured 0.3-1.3 %).
- The trainer's autocast path (bf16, and fp16 with a gradient scaler) runs end to end on CPU when forced,
  with the losses computed in fp32.
- Determinism on CUDA: the cuBLAS workspace it needs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_models import VARIANTS, tiny_batch, tiny_config, tiny_loaders, tiny_model

import ls.engine.trainer as trainer_mod
from ls.config import load_config
from ls.engine.precision import FP32, Precision, configure_determinism, configure_tf32, resolve_precision
from ls.models import VARIANTS as VARIANT_TABLE
from ls.models.backbone import ViTArch

REPO = Path(__file__).resolve().parents[1]
ARCH = ViTArch(embed_dim=32, num_heads=2, depth=2, mlp_ratio=2.0)
CUDA = torch.device("cuda")  # a device object needs no GPU; nothing here allocates on it

pytestmark = pytest.mark.usefixtures("one_thread")


# -- selection ------------------------------------------------------------------------------------------------


def _gpu(monkeypatch, capability: tuple[int, int], name: str = "GPU") -> list:
    """Pretend the CUDA device has ``capability``; returns the devices asked about."""
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (asked.append(device), capability)[1])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    # emulation counts as support there (True on a T4): selection must not rely on it
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    return asked


@pytest.mark.parametrize("amp", ["auto", True, False, "false", "bf16", "fp16"])
def test_cpu_is_always_fp32(amp, monkeypatch):
    _gpu(monkeypatch, (9, 0))
    assert resolve_precision(amp, torch.device("cpu")) == FP32


SM75, SM80, SM90 = (7, 5), (8, 0), (9, 0)  # T4; A100; H100/H200


@pytest.mark.parametrize(("amp", "capability", "dtype", "scaler"), [
    ("auto", SM80, torch.bfloat16, False),  # bf16: fp32's exponent range, no gradient scaler needed
    ("auto", SM90, torch.bfloat16, False),
    (True, SM90, torch.bfloat16, False),
    ("auto", SM75, torch.float16, True),  # older GPUs: fp16 needs a scaler against underflowing gradients
    (True, SM75, torch.float16, True),
    ("auto", (7, 0), torch.float16, True),  # V100
    ("bf16", SM80, torch.bfloat16, False),
    ("fp16", SM90, torch.float16, True),
    ("fp16", SM75, torch.float16, True),
    (False, SM90, None, False),
    ("false", SM90, None, False),
])
def test_cuda_selection_follows_the_compute_capability(amp, capability, dtype, scaler, monkeypatch):
    _gpu(monkeypatch, capability)
    p = resolve_precision(amp, CUDA)
    assert (p.dtype, p.scaler) == (dtype, scaler)
    assert p.name == {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[dtype]


def test_the_capability_of_the_given_device_is_asked(monkeypatch):
    asked = _gpu(monkeypatch, SM90)
    resolve_precision("auto", torch.device("cuda", 1))
    assert asked == [torch.device("cuda", 1)]


def test_forcing_bf16_on_a_gpu_without_native_bf16_names_the_gpu(monkeypatch):
    _gpu(monkeypatch, SM75, "Tesla T4")
    with pytest.raises(ValueError, match=r"Tesla T4 \(compute capability 7.5\) has no bf16 support"):
        resolve_precision("bf16", CUDA)


def test_an_unknown_setting_is_an_error(monkeypatch):
    _gpu(monkeypatch, SM90)
    with pytest.raises(ValueError, match="training.amp must be"):
        resolve_precision("fp8", CUDA)


def test_fp32_autocast_is_a_no_op_and_bf16_autocast_casts():
    a = torch.randn(4, 4)
    with FP32.autocast("cpu"):
        assert (a @ a).dtype == torch.float32
    with Precision(torch.bfloat16).autocast("cpu"):
        assert (a @ a).dtype == torch.bfloat16


@pytest.fixture
def restore_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("enabled", [True, False])
def test_tf32_switches_follow_the_config_on_cuda_only(enabled, restore_tf32):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not enabled
    configure_tf32(enabled, torch.device("cpu"))
    assert torch.backends.cuda.matmul.allow_tf32 is (not enabled)  # CPU: untouched
    configure_tf32(enabled, CUDA)
    assert torch.backends.cuda.matmul.allow_tf32 is enabled and torch.backends.cudnn.allow_tf32 is enabled


@pytest.fixture
def restore_determinism(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])


def test_determinism_sets_the_cublas_workspace_on_cuda_only(restore_determinism, monkeypatch):
    configure_determinism(True, torch.device("cpu"))
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    configure_determinism(True, CUDA)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    configure_determinism(True, CUDA)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"  # the environment's choice is kept


def test_determinism_is_switched_off_again(restore_determinism):
    configure_determinism(True, torch.device("cpu"))
    configure_determinism(False, torch.device("cpu"))
    assert not torch.are_deterministic_algorithms_enabled()


def test_a_later_non_deterministic_trainer_does_not_inherit_an_earlier_deterministic_one(restore_determinism,
                                                                                       tmp_path):
    """Two runs in one process, as a sequential study makes them: the switch is process-wide."""
    for deterministic in (True, False):
        cfg = tiny_config(tmp_path, deterministic=deterministic)
        trainer_mod.Trainer(_model("ast"), tiny_loaders(), cfg.training, cfg.output_mode, seed=0, progress=False)
        assert torch.are_deterministic_algorithms_enabled() is deterministic


def test_defaults_and_paper_configs_use_mixed_precision_and_tf32_on_cuda(monkeypatch):
    _gpu(monkeypatch, SM90)
    for variant in VARIANT_TABLE.values():
        cfg = load_config(REPO / "configs" / f"{variant.name}_config.yaml")
        assert cfg.training.amp in ("auto", True), variant.name
        assert cfg.training.tf32 is True
        assert resolve_precision(cfg.training.amp, CUDA).name == "bf16"


def test_translated_original_configs_train_in_fp16_with_a_scaler_on_cuda_and_in_fp32_on_cpu(tmp_path, monkeypatch):
    """The original trained under fp16 autocast with a GradScaler on any GPU: its translated configs say
    ``amp: fp16`` (not ``auto``, which is bf16 on an A100/H100). On CPU that still means fp32, no scaler."""
    import warnings

    from ls.config import OriginalConfigWarning

    originals = REPO / "tests" / "fixtures" / "original_configs"
    _gpu(monkeypatch, SM90)
    for name in ("ast_config.yaml", "ast_fus_config.yaml", "ast_film_config.yaml", "ast_tafilm_config.yaml",
                 "ast_film_soft_config.yaml"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OriginalConfigWarning)
            cfg = load_config(originals / name)
            overridden = load_config(originals / name, ["training.amp=bf16"])
        assert cfg.training.amp == "fp16", name
        on_gpu = resolve_precision(cfg.training.amp, CUDA)
        assert (on_gpu.dtype, on_gpu.scaler) == (torch.float16, True), name
        assert resolve_precision(cfg.training.amp, torch.device("cpu")) == FP32, name
        assert overridden.training.amp == "bf16", name  # --set speaks ls
    # the trainer on CPU: fp32 forward, the scaler off (a disabled GradScaler passes gradients through)
    cfg = tiny_config(tmp_path, amp="fp16")
    trainer = trainer_mod.Trainer(_model("ast"), tiny_loaders(), cfg.training, cfg.output_mode, seed=0,
                                  progress=False)
    assert trainer.precision == FP32 and not trainer.scaler.is_enabled()


# -- numerics of every variant under bf16 autocast --------------------------------------------------------------


def _model(variant: str):
    return tiny_model(variant, ARCH).train()


def _step(model, precision: Precision, spec, meta):
    """One forward/backward as the trainer does it: the forward under autocast, the losses in fp32. Returns the
    dtype the backbone's matmuls computed in."""
    model.zero_grad(set_to_none=True)
    dtypes = set()
    hooks = [m.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
             for m in model.backbone.modules() if isinstance(m, torch.nn.Linear)]
    with precision.autocast("cpu"):
        logits = model(spec, meta)
    for hook in hooks:
        hook.remove()
    assert logits.dtype == torch.float32  # the head runs outside autocast
    (dtype,) = dtypes
    logits = logits.float()
    loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    loss = loss + sum(model.auxiliary_losses().values())
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return dtype, logits.detach(), loss.detach(), grads


@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_forward_backward_of_every_variant_is_finite_and_close_to_fp32(variant):
    model = _model(variant)
    spec, meta = tiny_batch()
    _, logits32, loss32, grads32 = _step(model, FP32, spec, meta)
    dtype, logits16, loss16, grads16 = _step(model, Precision(torch.bfloat16), spec, meta)
    assert dtype == torch.bfloat16  # autocast really ran the backbone in bf16
    assert torch.isfinite(logits16).all() and torch.isfinite(loss16) and torch.isfinite(grads16).all()
    torch.testing.assert_close(logits16, logits32, rtol=0, atol=0.02)
    torch.testing.assert_close(loss16, loss32, rtol=0, atol=0.005)
    assert (grads16 - grads32).norm() / grads32.norm() < 0.05
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


def test_attention_goes_through_sdpa_in_bf16_under_autocast(monkeypatch):
    """bf16 query/key/value into scaled_dot_product_attention: what lets a GPU pick its flash or memory-efficient
    kernel (benchmarks/epoch.py reports which one ran)."""
    seen = []
    sdpa = F.scaled_dot_product_attention

    def recording(q, *args, **kwargs):
        seen.append(q.dtype)
        return sdpa(q, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    model = _model("ast_film_soft")
    with Precision(torch.bfloat16).autocast("cpu"):
        model(*tiny_batch())
    assert seen == [torch.bfloat16] * ARCH.depth


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_classifier_head_computes_fp32_logits_under_autocast(dtype):
    """The logits thresholds are tuned on are not rounded to bf16/fp16: under autocast the head gives exactly
    what it gives for the same (low-precision) embedding in fp32."""
    head = _model("ast_film_soft").classifier.eval()
    embedding = torch.randn(4, ARCH.embed_dim).to(dtype)
    with Precision(dtype).autocast("cpu"):
        logits = head(embedding)
    assert logits.dtype == torch.float32
    assert torch.equal(logits, head(embedding.float()))


def test_the_classifier_head_is_unchanged_in_fp32():
    head = _model("ast").classifier.eval()
    x = torch.randn(4, ARCH.embed_dim)
    assert torch.equal(head(x), torch.nn.Sequential.forward(head, x))


# -- the trainer's autocast path ----------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", [Precision(torch.bfloat16), Precision(torch.float16, scaler=True)],
                         ids=["bf16", "fp16+scaler"])
def test_the_trainer_runs_a_forced_autocast_epoch_with_fp32_losses(precision, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod, "resolve_precision", lambda amp, device: precision)
    cfg = tiny_config(tmp_path)
    model = _model("ast_film_soft")
    seen = []
    loss_fn_dtypes = []
    trainer = trainer_mod.Trainer(model, tiny_loaders(), cfg.training, cfg.output_mode, seed=0, progress=False)
    assert trainer.scaler.is_enabled() is precision.scaler
    inner = trainer.loss_fn
    trainer.loss_fn = lambda logits, labels: (loss_fn_dtypes.append(logits.dtype), inner(logits, labels))[1]
    model.backbone.blocks[-1].mlp.fc2.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    before = [p.detach().clone() for p in model.parameters()]
    result = trainer.train_one_epoch(0)
    assert seen == [precision.dtype] * 2  # two batches, each forward (up to the head) under autocast
    assert loss_fn_dtypes == [torch.float32] * 2
    assert all(torch.isfinite(torch.tensor(v)) for v in (result["loss"], result["task_loss"], result["aux_loss"]))
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))  # the steps were taken
