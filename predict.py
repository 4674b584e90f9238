"""Predict with a trained run: `python predict.py run=<run folder> input=<file> [key=value]`.

The same as `trainlab predict ...`; see README.md, "Prediction".
"""

import sys

from trainlab.app.cli import cli

if __name__ == "__main__":
    cli(["predict", *sys.argv[1:]])
