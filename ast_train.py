"""Train the Baseline AST (no metadata) on ICBHI 2017: `python ast_train.py --config configs/... [--mlflow-config ...] [--set k=v]`.

All logic lives in ls.train (see `python ast_train.py --help`); torchrun runs it with DDP.
"""

import sys

from ls.train import main

if __name__ == "__main__":
    sys.exit(main("ast"))
