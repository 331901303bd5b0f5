"""Train MetaLoRA-AST: ``train-meta-lora --config meta_lora.yaml`` (installed), or
``python -m ls_plugin_example.train ...``: the command line of ls's root scripts (``--set``, ``--resume``,
``--seeds``, ``--kfold``, ``--no-tracking``, ...), for this plugin's variant."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import ls_plugin_example  # noqa: F401 - registers meta_lora and class_folders
from ls.train import main as train


def main(argv: Sequence[str] | None = None) -> int:
    return train("meta_lora", argv)


if __name__ == "__main__":
    sys.exit(main())
