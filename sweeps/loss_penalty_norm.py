"""Sweep search_spaces/loss_penalty_norm.yaml: `python sweeps/loss_penalty_norm.py --help` for the flags."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from ganlib.sweep import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--space", "loss_penalty_norm", *sys.argv[1:]]))
