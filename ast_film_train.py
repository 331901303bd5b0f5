"""Train the FiLM-AST on ICBHI 2017: `python ast_film_train.py --config configs/... [--mlflow-config ...] [--set k=v]`.

All logic lives in ls.train (see `python ast_film_train.py --help`); torchrun runs it with DDP.
"""

import sys

from ls.train import main

if __name__ == "__main__":
    sys.exit(main("ast_film"))
