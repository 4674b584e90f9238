"""Build the leaderboard of any folder of runs: python scripts/leaderboard.py FOLDER.

Writes FOLDER/leaderboard.csv and FOLDER/leaderboard.md and prints the table; useful for a
sweep that was stopped before Hydra could write it.
"""

import argparse
import sys
from pathlib import Path

from trainlab.app.sweeps.leaderboard import write_leaderboard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a sweep folder, or any folder of runs")
    folder = parser.parse_args().folder
    if not folder.is_dir():
        sys.exit(
            f"error: {folder} is not a folder; pass a sweep folder such as outputs/multirun/..."
        )
    print(write_leaderboard(folder), end="")


if __name__ == "__main__":
    main()
