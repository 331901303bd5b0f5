"""Regenerates the weight statistics of ``tests/fixtures/main_a7d3a1d/`` with the code of main at a7d3a1d.

    python tests/regression_data.py [--commit a7d3a1d]

The fixtures were first written by a7d3a1d's own code with SHA-256 hashes of the seeded initial weights, bits
that another CPU or build of torch does not reproduce. This script extracts the commit's tree
(``git archive``) into a temporary folder, builds every model of ``models.json`` and ``checkpoints.json`` there
with a7d3a1d's own factory after ``torch.manual_seed(7)``, and replaces each ``params`` entry by
``[name, shape, statistics]`` (``tests/pinning.py``: mean, std, min, max and four sampled entries). It keeps
the recorded logits, metadata encodings and training outcomes as they were written at a7d3a1d: those stay the
reference. Before it writes, it checks that the names and shapes are the recorded ones and that the logits it
gets are within the tests' tolerance of the recorded logits, so it cannot record a different model.

Needs the git history (a clone, not an archive); a few seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures" / "main_a7d3a1d"


def capture() -> dict:
    """Run inside a7d3a1d's tree (its ``ls`` first on sys.path): statistics and logits of every model."""
    import torch
    from pinning import summaries

    from ls.config import config_from_dict  # a7d3a1d's
    from ls.models.model import build_model
    from ls.types import MetadataSpec

    torch.set_num_threads(1)
    inp = torch.load(FIXTURES / "input.pt")
    out: dict = {"models": {}, "checkpoints": {}}
    for case, entry in json.loads((FIXTURES / "models.json").read_text()).items():
        block = entry["model_config"]
        raw = {"dataset": {"data_folder": ".", "w": block["input_tdim"]}, "audio": {"n_mels": block["input_fdim"]},
               "models": {entry["variant"]: block}}
        cfg = config_from_dict(raw, "a7d3a1d model block")
        torch.manual_seed(7)
        model = build_model(cfg.models[entry["variant"]], MetadataSpec.icbhi()).eval()
        with torch.no_grad():
            logits = model(inp["spec"], inp["meta"])
        out["models"][case] = {"params": summaries(model.state_dict()), "logits": logits.double().tolist()}
    training = json.loads((FIXTURES / "training.json").read_text())
    for variant, entry in json.loads((FIXTURES / "checkpoints.json").read_text()).items():
        skeleton = training[variant]["best_skeleton"]
        cfg = config_from_dict(skeleton["config"], "a7d3a1d checkpoint config")
        torch.manual_seed(7)
        model = build_model(cfg.model(variant), MetadataSpec.from_dict(skeleton["metadata_spec"])).eval()
        meta = {k: torch.tensor(v) for k, v in entry["meta"].items()}
        with torch.no_grad():
            logits = model(inp["spec"], meta)
        out["checkpoints"][variant] = {"params": summaries(model.state_dict()), "logits": logits.double().tolist()}
    return out


def dump(recorded: dict) -> str:
    """JSON as the fixtures are written (indent 1), with one line per parameter."""
    lines: dict[str, str] = {}
    slim = {}
    for key, entry in recorded.items():
        marks = []
        for i, param in enumerate(entry["params"]):
            mark = f"@@{key}:{i}@@"
            lines[mark] = json.dumps(param)
            marks.append(mark)
        slim[key] = {**entry, "params": marks}
    text = json.dumps(slim, indent=1)
    for mark, line in lines.items():
        text = text.replace(f'"{mark}"', line, 1)
    return text + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commit", default="a7d3a1d", help="the commit whose code recorded the fixtures")
    p.add_argument("--capture", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.capture:
        print(json.dumps(capture()))
        return 0

    sys.path.insert(0, str(TESTS))
    import torch
    from pinning import summary_differences
    from test_regression_main import LOGITS_ATOL

    with tempfile.TemporaryDirectory(prefix="ls-a7d3a1d-") as tree:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.commit], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([tree, str(TESTS)])}
        proc = subprocess.run([sys.executable, __file__, "--capture"], cwd=tree, env=env, capture_output=True,
                              text=True, check=True)
    got = json.loads(proc.stdout)
    for name in ("models", "checkpoints"):
        path = FIXTURES / f"{name}.json"
        recorded = json.loads(path.read_text())
        for key, entry in recorded.items():
            new = got[name][key]
            names_shapes = [p[:2] for p in entry["params"]]
            if [p[:2] for p in new["params"]] != names_shapes:
                raise SystemExit(f"error: {name}.json {key}: the commit's model has other parameter names or shapes")
            if isinstance(entry["params"][0][2], dict):  # already statistics: they must agree too
                diffs = summary_differences(new["params"], entry["params"])
                if diffs:
                    raise SystemExit(f"error: {name}.json {key}: " + "; ".join(diffs[:5]))
            gap = (torch.tensor(new["logits"]) - torch.tensor(entry["logits"], dtype=torch.float64)).abs().max()
            if gap > LOGITS_ATOL:
                raise SystemExit(f"error: {name}.json {key}: logits {gap:.2e} from the recorded ones")
            entry["params"] = new["params"]
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(dump(recorded))
        os.replace(tmp, path)
        print(f"wrote {path.relative_to(REPO)}: {len(recorded)} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
