"""Sweep search_spaces/gan_k.yaml: `python sweeps/gan_k.py --help` for the flags."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from ganlib.sweep import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--space", "gan_k", *sys.argv[1:]]))
