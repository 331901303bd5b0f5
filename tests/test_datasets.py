"""Datasets other than ICBHI: SPRSound, a manifest CSV, several combined, and a model evaluated across datasets.

The data are synthetic folders in each dataset's real layout (ls.data.synthetic_sprsound, ls.data.synthetic), so
these tests run on a clean clone; the same readers on the real SPRSound annotations are in test_sprsound.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ls.config import ConfigError, config_from_dict, load_config
from ls.data.sources import AUDIO_PATH, read_source
from ls.types import UNKNOWN_TOKEN

# A tiny model and short features: seconds per epoch on CPU.
TINY_AUDIO = {"desired_length": 4.0, "n_mels": 16, "high_freq": 2000.0, "frame_shift": 64.0, "mel_norm": "dataset"}
TINY_MODEL = {"model_size": "tiny224", "fstride": 16, "tstride": 16}
VARIANTS = ("ast", "ast_fus", "ast_film", "ast_tafilm", "ast_film_soft")


@pytest.fixture(scope="session")
def sprsound_dir(tmp_path_factory) -> Path:
    from ls.data.synthetic_sprsound import generate_sprsound

    return generate_sprsound(tmp_path_factory.mktemp("sprsound") / "BioCAS2022", recordings=24, seed=0)


def tiny(tmp_path: Path, dataset: dict, variants=VARIANTS, epochs: int = 1) -> dict:
    return {
        "seed": 0,
        "dataset": {"batch_size": 8, "w": 64, "val_fraction": 0.25, "cache_workers": 0,
                    "cache_dir": str(tmp_path / "cache"), **dataset},
        "audio": TINY_AUDIO,
        "models": {v: dict(TINY_MODEL) for v in variants},
        "training": {"epochs": epochs, "device": "cpu", "checkpoint_dir": str(tmp_path / "ck")},
    }  # fmt: skip


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# --------------------------------------------------------------------------------------------- readers


def test_sprsound_events_read_with_icbhi_site_codes_and_their_own_schema(sprsound_dir):
    cfg = config_from_dict(tiny(Path("/unused"), {"name": "sprsound", "task": "event7",
                                                  "data_folder": str(sprsound_dir)}))
    assert (cfg.dataset.n_cls, cfg.dataset.multi_label, cfg.training.loss) == (7, False, "ce")
    assert cfg.output_mode.class_names[4] == "Coarse Crackle"
    source = read_source(cfg.dataset)
    table = source.table
    # p1..p4 are the posterior/lateral sites ICBHI writes Pl, Ll, Pr, Lr: one vocabulary across datasets
    pairs = set(zip(table["Site"], table["AuscLoc"]))
    assert pairs <= {("p1", "Pl"), ("p2", "Ll"), ("p3", "Pr"), ("p4", "Lr")} and len(pairs) >= 2
    assert dict(source.schema.factors) == {"site": "AuscLoc", "sex": "Sex"}
    assert set(source.schema.continuous) == {"age", "duration"}
    assert all(Path(p).is_file() for p in table[AUDIO_PATH].unique())
    assert set(table["Split"]) == {"train", "test_inter", "test_intra"}

    record = read_source(config_from_dict(tiny(Path("/unused"), {
        "name": "sprsound", "task": "record5", "data_folder": str(sprsound_dir)})).dataset).table
    assert len(record) == record["Filename"].nunique() == 24  # one segment per recording for record tasks
    assert set(record["Label"]) <= {"Normal", "CAS", "DAS", "CAS & DAS", "Poor Quality"}


def test_sprsound_kfold_and_validation_are_patient_disjoint_and_stratified_on_its_classes(sprsound_dir, tmp_path):
    from ls.data import build_datasets, build_fold_datasets

    cfg = config_from_dict(tiny(tmp_path, {"name": "sprsound", "task": "event2", "data_folder": str(sprsound_dir),
                                           "patient_disjoint_official": True}, variants=("ast",)))
    plain = build_datasets(cfg)
    folds = [build_fold_datasets(cfg, fold, k=3) for fold in range(3)]
    for ds in (plain, *folds):
        train, val, test = (set(d.patients) for d in (ds.train, ds.val, ds.test))
        assert val and not (train & val) and not (val & test) and not (train & test)
        assert set(ds.val.labels.tolist()) == {0, 1}  # both event2 classes in every validation split
    # every training patient validates in exactly one fold
    assert sorted(p for ds in folds for p in set(ds.val.patients)) == sorted(
        set(folds[0].train.patients) | set(folds[0].val.patients))


@pytest.mark.parametrize("dataset, key, message", [
    ({"name": "icbhi", "task": "event2"}, "dataset.task", "'event2' is not available for dataset kind icbhi"),
    ({"name": "manifest", "task": "labels"}, "dataset.classes", "task 'labels' needs dataset.classes"),
    ({"name": "sprsound", "classes": ["a", "b"]}, "dataset.classes", "is for task 'labels'"),
    ({"name": "wav_folder"}, "dataset.name", "unknown kind of dataset 'wav_folder'"),
    ({"name": "combined"}, "dataset.parts", "no part is listed"),
    ({"name": "combined", "parts": [{"name": "icbhi", "data_folder": "a"}, {"name": "icbhi", "data_folder": "b"}]},
     "dataset.parts", "share the tag 'icbhi'"),
    ({"name": "combined", "task": "event7", "parts": [{"name": "sprsound", "data_folder": "a"}]},
     "dataset.task", "not available for dataset kind combined"),
])  # fmt: skip
def test_a_dataset_section_that_cannot_work_is_one_error_naming_the_key(tmp_path, dataset, key, message):
    with pytest.raises(ConfigError, match=rf"'{key}' in .*: .*{message}"):
        config_from_dict({"dataset": {"data_folder": str(tmp_path), **dataset}})


def icbhi_manifest(icbhi_dir: Path, out: Path) -> Path:
    """The synthetic ICBHI folder described by a manifest (audio referenced by absolute paths)."""
    from ls.data.icbhi import build_cycle_table
    from ls.data.manifest import icbhi_to_manifest

    out.mkdir(parents=True, exist_ok=True)
    return icbhi_to_manifest(build_cycle_table(icbhi_dir), icbhi_dir, out / "manifest.csv")


def manifest_section(folder: Path, **extra) -> dict:
    return {"name": "manifest", "data_folder": str(folder),
            "manifest_columns": {"crackle": "crackle", "wheeze": "wheeze"},
            "categorical": ["device", "site"], "continuous": ["age", "bmi"], **extra}  # fmt: skip


def test_icbhi_read_through_a_manifest_gives_the_same_test_set_as_its_own_reader(synthetic_icbhi_dir, tmp_path):
    from ls.data import build_datasets

    icbhi_manifest(synthetic_icbhi_dir, tmp_path / "m")
    base = tiny(tmp_path, {"data_folder": str(synthetic_icbhi_dir), "val_fraction": 0.0}, variants=("ast",))
    native = build_datasets(config_from_dict(base)).test
    base["dataset"] = {**base["dataset"], **manifest_section(tmp_path / "m")}
    via_manifest = build_datasets(config_from_dict(base)).test
    # audio outside the manifest's folder is named by its absolute path (without the suffix)
    assert [Path(f).name for f in via_manifest.filenames] == native.filenames and len(native) > 0
    assert np.array_equal(via_manifest.labels.numpy(), native.labels.numpy())
    for name in ("device", "site"):
        assert np.array_equal(native.meta[name].numpy(), via_manifest.meta[name].numpy())
    # age and duration alike; BMI differs only for children (the ICBHI reader computes theirs from weight and
    # height, which the manifest does not carry)
    cont_a, cont_b = native.meta["cont"].numpy(), via_manifest.meta["cont"].numpy()
    assert np.array_equal(cont_a[:, [0, 2]], cont_b[:, [0, 2]])
    for i in (0, len(native) // 2, len(native) - 1):  # the same audio and features
        assert bool((native[i]["spec"] == via_manifest[i]["spec"]).all())


def test_a_manifest_task_needs_what_the_csv_has(synthetic_icbhi_dir, tmp_path):
    from ls.data import build_datasets

    icbhi_manifest(synthetic_icbhi_dir, tmp_path / "m")
    section = manifest_section(tmp_path / "m")
    no_bits = {**section, "manifest_columns": {}}
    with pytest.raises(ValueError, match="task icbhi4 needs crackle/wheeze bits: name the manifest's 0/1 columns"):
        build_datasets(config_from_dict(tiny(tmp_path, no_bits, variants=("ast",))))
    no_split = {**section, "manifest_columns": {**section["manifest_columns"], "split": "fold_name"}}
    with pytest.raises(ValueError, match=r"manifest.csv: no split column \('fold_name'\) for dataset.split_strategy"):
        build_datasets(config_from_dict(tiny(tmp_path, no_split, variants=("ast",))))
    bad_factor = {**section, "categorical": ["device", "site"], "continuous": ["duration"]}
    with pytest.raises(ValueError, match="'duration' is always a feature"):
        build_datasets(config_from_dict(tiny(tmp_path, bad_factor, variants=("ast",))))


def test_a_manifest_with_its_own_class_names_trains_and_names_them(synthetic_icbhi_dir, tmp_path):
    """A labels task: the manifest's label column, any class names (class 0 normal)."""
    import ls.runs.run as runner

    csv_path = icbhi_manifest(synthetic_icbhi_dir, tmp_path / "m")
    rows = list(csv.DictReader(csv_path.open()))
    names = {(0, 0): "healthy", (1, 0): "discontinuous", (0, 1): "continuous", (1, 1): "continuous"}
    for row in rows:
        row["diagnosis"] = names[(int(row["crackle"]), int(row["wheeze"]))]
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    section = {"name": "manifest", "data_folder": str(tmp_path / "m"), "classes": ["healthy", "continuous",
               "discontinuous"], "manifest_columns": {"label": "diagnosis"}, "categorical": ["device"]}  # fmt: skip
    cfg = config_from_dict(tiny(tmp_path, section, variants=("ast_film",)))
    assert (cfg.dataset.task, cfg.dataset.n_cls, cfg.training.loss) == ("labels", 3, "ce")
    outcome = runner.train_run(cfg, "ast_film", progress=False)
    preds = pd.read_csv(outcome.run_dir / "test_predictions.csv")
    assert set(preds["true"]) <= {"healthy", "continuous", "discontinuous"} and "device" in preds.columns
    assert {"p_healthy", "p_continuous", "p_discontinuous"} <= set(preds.columns)
    run = json.loads((outcome.run_dir / "run.json").read_text())
    assert run["class_names"] == ["healthy", "continuous", "discontinuous"]
    assert "recall_discontinuous" in outcome.test_metrics


# --------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="session")
def sprsound_real_names_dir(sprsound_annotations_dir, tmp_path_factory) -> Path:
    """Synthetic audio under the real annotation files' names, splits and events (../shared)."""
    from ls.data.synthetic_sprsound import generate_sprsound

    return generate_sprsound(tmp_path_factory.mktemp("sprsound_real") / "BioCAS2022",
                             names_from=sprsound_annotations_dir)


@pytest.fixture(params=["sprsound_real_names", "manifest"])
def other_dataset(request, synthetic_icbhi_dir, tmp_path_factory):
    """``(dataset section, wav for ls.predict, its --meta arguments, factors, class names)``."""
    if request.param == "manifest":
        folder = tmp_path_factory.mktemp("manifest")
        icbhi_manifest(synthetic_icbhi_dir, folder)
        wav = next(synthetic_icbhi_dir.glob("*.wav"))
        return (manifest_section(folder), wav, ["--meta", "device=Meditron", "--meta", "site=Tc", "--age", "60"],
                ["device", "site"], ("Normal", "Crackle", "Wheeze", "Both"))
    root = request.getfixturevalue("sprsound_real_names_dir")
    wav = next((root / "test2022_wav").glob("*.wav"))
    return ({"name": "sprsound", "task": "event7", "data_folder": str(root)}, wav,
            ["--meta", "site=Pl", "--meta", "sex=F", "--age", "4.5"], ["site", "sex"],
            ("Normal", "Rhonchi", "Wheeze", "Stridor", "Coarse Crackle", "Fine Crackle", "Wheeze+Crackle"))


@pytest.mark.slow
def test_five_scripts_evaluate_predict_and_visualize_run_on_another_dataset(other_dataset, tmp_path, capsys):
    from ls.evaluate import main as evaluate
    from ls.predict import main as predict
    from ls.train import main as train
    from ls.viz.cli import main as visualize

    section, wav, meta_args, factors, class_names = other_dataset
    config = write_yaml(tmp_path / "data.yaml", tiny(tmp_path, section))
    for variant in VARIANTS:  # what the five root scripts run: sys.exit(main("<variant>"))
        assert train(variant, ["--config", str(config), "--no-tracking"]) == 0, capsys.readouterr().err
    runs = {p.name.split("_1ep_")[0]: p for p in (tmp_path / "ck").iterdir()}
    assert set(runs) == set(VARIANTS)
    softfilm = runs["ast_film_soft"] / "best.pt"
    preds = pd.read_csv(runs["ast_film_soft"] / "test_predictions.csv")
    assert set(factors) <= set(preds.columns)
    summary = json.loads((runs["ast_film_soft"] / "run.json").read_text())
    assert summary["factors"] == factors and "sprsound_score" in summary["test"]
    if section["name"] == "sprsound":  # the test set is SPRSound's two test sets; metrics come per set too
        assert set(preds["split"]) == {"test_inter", "test_intra"}
        assert {"split/test_inter/icbhi_score", "split/test_intra/sensitivity"} <= set(summary["test"])

    out = tmp_path / "eval"
    assert evaluate(["--checkpoint", str(softfilm), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics_test.json").read_text())
    assert metrics["metrics"]["sprsound_score"] == pytest.approx(summary["test"]["sprsound_score"], abs=1e-6)
    assert any(key.startswith(f"{factors[0]}/") for key in metrics["group_metrics"])

    capsys.readouterr()
    assert predict(["--checkpoint", str(softfilm), "--wav", str(wav), "--window", "2", *meta_args]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cycles"] and {c["pred_class"] for c in result["cycles"]} <= set(class_names)
    assert result["class_names"] == list(class_names)

    figures = tmp_path / "figures"
    assert visualize(["--checkpoint", str(softfilm), "--baseline-ckpt", str(runs["ast"] / "best.pt"),
                      "--performance", "--mask-analysis", "--out", str(figures), "--compute-device", "cpu"]) == 0, \
        capsys.readouterr().err
    drawn = {p.stem for p in figures.rglob("*.png")}
    assert all(any(factor in name for name in drawn) for factor in factors), drawn
    masks = json.loads(next(figures.rglob("mask_*_stats.json")).read_text())
    # one mask per factor (ICBHI's parameter name "dev" kept for device) and one for the continuous part
    assert masks["factors"] == [{"device": "dev"}.get(f, f) for f in factors] + ["rest"]


@pytest.mark.slow
def test_an_icbhi_model_is_evaluated_on_sprsound_events(synthetic_icbhi_dir, sprsound_dir, tmp_path):
    import ls.runs.run as runner
    from ls.evaluate import evaluate_checkpoint

    cfg = config_from_dict(tiny(tmp_path, {"data_folder": str(synthetic_icbhi_dir)}, variants=("ast_film_soft",)))
    outcome = runner.train_run(cfg, "ast_film_soft", progress=False)
    other = write_yaml(tmp_path / "spr.yaml", tiny(tmp_path, {"name": "sprsound", "data_folder": str(sprsound_dir)},
                                                   variants=()))
    report = evaluate_checkpoint(outcome.run_dir / "best.pt", load_config(other), out_dir=tmp_path / "eval")
    # ICBHI's four classes from SPRSound's event types (crackles discontinuous, wheezes continuous)
    table = read_source(load_config(other).dataset).table
    test = table[table["Split"].str.startswith("test")]
    assert len(report.predictions) == len(test)
    truth = {"normal": 0, "crackle": 0, "wheeze": 0, "both": 0}
    for c, w in zip(test["Crackles"], test["Wheezes"]):
        truth[["normal", "crackle", "wheeze", "both"][c + 2 * w]] += 1
    assert report.predictions["true"].str.lower().value_counts().to_dict() == {k: v for k, v in truth.items() if v}
    # the model's metadata: SPRSound sites are ICBHI sites; it has no device (the unknown id); BMI is imputed
    assert set(report.predictions["site"]) <= {"Pl", "Ll", "Pr", "Lr"}
    assert set(report.predictions["device"]) == {UNKNOWN_TOKEN}
    assert "split/test_inter/n_cycles" in report.group_metrics

    record_task = write_yaml(tmp_path / "rec.yaml", tiny(tmp_path, {"name": "icbhi", "data_folder": str(
        synthetic_icbhi_dir)}, variants=()))
    spr_ckpt = config_from_dict(tiny(tmp_path, {"name": "sprsound", "task": "record3",
                                                "data_folder": str(sprsound_dir)}, variants=("ast",)))
    run = runner.train_run(spr_ckpt, "ast", progress=False)
    with pytest.raises(ValueError, match="the checkpoint's task 'record3' cannot be evaluated on this icbhi dataset"):
        evaluate_checkpoint(run.run_dir / "best.pt", load_config(record_task))


@pytest.mark.slow
def test_icbhi_and_sprsound_train_together_with_a_dataset_factor(synthetic_icbhi_dir, sprsound_dir, tmp_path):
    import ls.runs.run as runner
    from ls.data import build_datasets

    section = {"name": "combined", "data_folder": str(tmp_path), "parts": [
        {"name": "icbhi", "data_folder": str(synthetic_icbhi_dir)},
        {"name": "sprsound", "data_folder": str(sprsound_dir), "tag": "spr", "test_split": ["test_inter"]}]}
    cfg = config_from_dict(tiny(tmp_path, section, variants=("ast_film_soft",)))
    datasets = build_datasets(cfg)
    table = datasets.table
    assert set(table["Dataset"]) == {"icbhi", "spr"}
    assert table.loc[table["Dataset"] == "spr", "Filename"].str.startswith("spr/").all()
    # SPRSound's intra-subject test set is left out (test_split), its inter-subject one is test
    spr = table[table["Dataset"] == "spr"]
    assert set(spr.loc[spr["Split"] == "test", "Filename"].str.split("/").str[1]) == set(
        read_source(config_from_dict(tiny(tmp_path, {"name": "sprsound", "data_folder": str(sprsound_dir)},
                                          variants=())).dataset).table.query("Split == 'test_inter'")["Filename"])
    assert datasets.encoder.vocabulary("dataset") == (UNKNOWN_TOKEN, "icbhi", "spr")
    assert set(datasets.encoder.factor_names) == {"dataset", "device", "site", "sex"}
    outcome = runner.train_run(cfg, "ast_film_soft", progress=False)
    preds = pd.read_csv(outcome.run_dir / "test_predictions.csv")
    assert set(preds["dataset"]) == {"icbhi", "spr"}
    assert "dataset/spr/n_cycles" in outcome.test_metrics and "dataset/icbhi/n_cycles" in outcome.test_metrics


# --------------------------------------------------------------------------------------------- a new format

# BEGIN folder reader: everything a new dataset format needs, outside ls (its size is reported in the notes)
def read_wav_folders(cfg):
    """``<data_folder>/<split>/<label>/<patient>_<recording>_<device>.wav``: one segment per recording."""
    import soundfile as sf

    from ls.data.schema import MetadataSchema
    from ls.data.sources import Source

    rows = []
    for wav in sorted(Path(cfg.data_folder).glob("*/*/*.wav")):
        patient, _, device = wav.stem.split("_", 2)
        info = sf.info(str(wav))
        rows.append({"Filename": wav.stem, "AudioPath": str(wav), "CycleIndex": 0, "CycleStart": 0.0,
                     "CycleEnd": info.frames / info.samplerate, "PID": patient, "Split": wav.parts[-3],
                     "Label": wav.parts[-2], "Device": device})
    schema = MetadataSchema(factors={"device": "Device"}, continuous={"duration": None})
    return Source(pd.DataFrame(rows), schema)
# END folder reader


@pytest.fixture
def wav_folders(synthetic_icbhi_dir, tmp_path):
    from ls.data.icbhi import build_cycle_table
    from ls.data.sources import register_reader, unregister_reader

    register_reader("wav_folders", read_wav_folders, tasks=("labels",))
    table = build_cycle_table(synthetic_icbhi_dir)
    for i, (stem, rec) in enumerate(table.groupby("Filename")):
        label = "abnormal" if (rec["Crackles"] | rec["Wheezes"]).mean() >= 0.5 else "normal"
        pid, *_, device = stem.split("_")
        out = tmp_path / "folders" / rec["Split"].iat[0] / label / f"{pid}_{i}_{device}.wav"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.symlink_to(synthetic_icbhi_dir / f"{stem}.wav")
    yield tmp_path / "folders"
    unregister_reader("wav_folders")


@pytest.mark.slow
def test_a_dataset_format_defined_outside_ls_trains_and_evaluates(wav_folders, tmp_path):
    import inspect

    import ls.runs.run as runner
    from ls.evaluate import evaluate_checkpoint

    section = {"name": "wav_folders", "data_folder": str(wav_folders), "task": "labels",
               "classes": ["normal", "abnormal"]}
    cfg = config_from_dict(tiny(tmp_path, section, variants=("ast_film",)))
    assert (cfg.dataset.n_cls, cfg.training.loss, cfg.output_mode.kind) == (2, "bce", "binary")
    outcome = runner.train_run(cfg, "ast_film", progress=False)
    report = evaluate_checkpoint(outcome.run_dir / "best.pt")
    assert set(report.predictions["true"]) <= {"Normal", "Abnormal"} and "device" in report.predictions
    assert any(k.startswith("device/") for k in report.group_metrics)
    source = inspect.getsource(read_wav_folders)
    assert len(source.splitlines()) < 25  # the cost of a new format: one function and one register call


def test_the_readme_manifest_example_reads_a_manifest_as_documented(tmp_path):
    import re

    import soundfile as sf

    from ls.data import build_datasets

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = yaml.safe_load(re.search(r"```yaml\n(dataset:\n  name: manifest\n.*?)```", readme, re.DOTALL).group(1))
    labels = section["dataset"]["classes"]
    rows = ["path,start,end,label,patient,split,site,age"]
    for i in range(6):
        sf.write(tmp_path / f"p{i}.wav", np.random.default_rng(i).normal(size=16000 * 6).astype("float32") * 0.1,
                 16000)
        for k in range(3):
            rows.append(f"p{i}.wav,{2 * k},{2 * k + 2},{labels[(i + k) % 3]},p{i},{'test' if i >= 4 else 'train'},"
                        f"{'chest' if k else 'back'},{50 + i}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    section["dataset"].update(data_folder=str(tmp_path), val_fraction=0.0, cache_workers=0)
    cfg = config_from_dict(section)
    datasets = build_datasets(cfg)
    assert (cfg.dataset.task, cfg.training.loss, datasets.class_names) == ("labels", "ce", labels)
    assert datasets.metadata_spec.vocabularies() == {"site": [UNKNOWN_TOKEN, "back", "chest"]}
    assert datasets.metadata_spec.cont_names == ("age", "duration") and (len(datasets.train), len(datasets.test)) == (12, 6)
