"""MetaLoRA-AST and the class_folders reader: the tests a plugin's own mechanism and reader need."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ls.config import ConfigError, config_from_dict
from ls.data.icbhi import full_metadata_spec
from ls.data.sources import unregister_reader
from ls.engine.config import OptimizerConfig
from ls.engine.optim import build_optimizer
from ls.models import build_model, get_variant, unregister_variant, variant_table

SPEC = full_metadata_spec()
T, F, B = 32, 16, 3


@pytest.fixture(autouse=True)
def plugin():
    """The plugin registered for each test, and removed after it: other tests in the same process (ls's own
    suite runs these too) see ls as it ships."""
    try:
        module = importlib.import_module("ls_plugin_example")
    except ImportError:  # this checkout, not installed
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        module = importlib.import_module("ls_plugin_example")
    if "meta_lora" not in variant_table():  # imported before, its registrations removed since: register again
        module = importlib.reload(module)
    yield module
    unregister_variant("meta_lora")
    unregister_reader("class_folders")


def tiny(variant: str, **options):
    cfg = get_variant(variant).options(variant=variant, label_dim=2, input_fdim=F, input_tdim=T,
                                       model_size="tiny224", fstride=16, tstride=16, dropout=0.0, **options)
    return build_model(cfg, SPEC).eval()


def batch(device: int = 1):
    g = torch.Generator().manual_seed(0)
    meta = {"device": torch.full((B,), device), "site": torch.tensor([1, 2, 3]), "cont": torch.randn(B, 3, generator=g)}
    return torch.randn(B, T, F, generator=g), meta


def test_a_new_adapter_leaves_the_ast_exactly_as_it_was():
    torch.manual_seed(0)
    lora = tiny("meta_lora")
    ast = tiny("ast")
    ast.backbone.load_state_dict(lora.backbone.state_dict())
    ast.classifier.load_state_dict(lora.classifier.state_dict())
    spec, meta = batch()
    with torch.no_grad():
        assert torch.equal(lora(spec, meta), ast(spec))


def test_the_update_depends_on_the_metadata_once_the_adapter_has_learned():
    torch.manual_seed(0)
    model = tiny("meta_lora")
    with torch.no_grad():
        for up in model.conditioning.adapters_up.values():
            up.normal_(0, 0.5)
        for gen in model.conditioning.rank_generators.values():
            gen.weight.normal_(0, 1.0)
        spec, meta = batch(device=1)
        first = model(spec, meta)
        second = model(spec, {**meta, "device": torch.full((B,), 2)})
    assert not torch.allclose(first, second)
    _, info = model(spec, meta, return_info=True)
    assert set(info["rank_scales"]) == {10, 11} and info["rank_scales"][10].shape == (B, 4)
    assert set(model.adapter_norms()) == {10, 11} and min(model.adapter_norms().values()) > 0


def test_its_options_are_checked_like_ls_own():
    data = {"dataset": {"data_folder": "x"}, "models": {"meta_lora": {"lora_rank": 8, "lora_warmup_epochs": 2}}}
    assert config_from_dict(data).model("meta_lora").lora_rank == 8
    with pytest.raises(ConfigError, match="lora_rank and lora_hidden_dim must be >= 1"):
        config_from_dict({**data, "models": {"meta_lora": {"lora_rank": 0}}})
    with pytest.raises(ConfigError, match="'models.meta_lora.mask_init_scale'"):
        config_from_dict({**data, "models": {"meta_lora": {"mask_init_scale": 0.5}}})


def test_the_hooks_the_trainer_calls():
    model = tiny("meta_lora", lora_warmup_epochs=3)
    strengths = []
    for epoch in range(5):
        model.start_epoch(epoch, 5)
        strengths.append(model.adapter_strength())
    assert strengths == [0.25, 0.5, 0.75, 1.0, 1.0]
    aux = model.auxiliary_losses()["adapter_orthogonality"]
    assert float(aux.detach()) < 1e-10  # orthonormal at the start
    with torch.no_grad():
        model.conditioning.adapters_down["10"].mul_(2.0)
    assert float(model.auxiliary_losses()["adapter_orthogonality"].detach()) > 0.01
    assert set(model.epoch_stats()) == {"lora/strength", "lora/update_norm/10", "lora/update_norm/11"}


def test_the_adapters_are_a_parameter_group_with_their_own_rate_and_no_decay():
    model = tiny("meta_lora", adapter_lr_scale=3.0)
    groups = {g["name"]: g for g in build_optimizer(model, OptimizerConfig(lr=1e-3, weight_decay=0.1)).param_groups}
    assert groups["adapter"]["lr"] == pytest.approx(3e-3) and groups["adapter"]["weight_decay"] == 0.0
    assert {id(p) for p in groups["adapter"]["params"]} == {
        id(p) for n, p in model.conditioning.named_parameters() if n.startswith("adapters_")}
    assert groups["film"]["lr"] == 1e-3 and groups["film"]["weight_decay"] == 0.1  # the rank generators
    assert type(model.conditioning).__name__ == "MetadataLoRA"


def test_the_reader_gives_one_segment_per_wav_with_its_metadata(tmp_path):
    from ls_plugin_example.reader import read_class_folders

    for split, label, name in (("train", "crackle", "p1_Meditron_Tc_a"), ("test", "both", "p2_LittC2SE_Al_b")):
        path = tmp_path / split / label / f"{name}.wav"
        path.parent.mkdir(parents=True)
        sf.write(str(path), np.zeros(2000, dtype=np.float32), 4000)
    table = read_class_folders(type("Cfg", (), {"data_folder": str(tmp_path)})).table.sort_values("PID")
    assert table[["PID", "Split", "Crackles", "Wheezes", "Device", "Site"]].values.tolist() == [
        ["p1", "train", 1, 0, "Meditron", "Tc"], ["p2", "test", 1, 1, "LittC2SE", "Al"]]
    assert table["CycleEnd"].tolist() == [0.5, 0.5]
    (tmp_path / "train" / "squeak").mkdir()
    sf.write(str(tmp_path / "train" / "squeak" / "p3_A_B_c.wav"), np.zeros(10, dtype=np.float32), 4000)
    with pytest.raises(ValueError, match="class folder 'squeak' is not one of normal, crackle, wheeze, both"):
        read_class_folders(type("Cfg", (), {"data_folder": str(tmp_path)}))
