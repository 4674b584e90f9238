"""Predict with a trained run: `python predict.py run=<run folder> input=<file> [key=value]`.

Keys: run (a run folder trained with data=csv), input (a CSV, Parquet or .npz file with the
training columns; the target column may be left out), output (predictions.csv; .csv or
.parquet), checkpoint (best, last, or a checkpoint file). See README.md, "Prediction".
"""

import logging
import sys

from trainlab.entry import main


def predict() -> None:
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__)
        return
    from trainlab.predict import predict_command

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    predict_command(sys.argv[1:])


if __name__ == "__main__":
    main(predict)
