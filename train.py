"""Train the experiment the config describes: `python train.py [group=option] [key=value]`.

The same as the installed `trainlab` command; `python train.py --help` lists the groups.
"""

from trainlab.app.cli import cli

if __name__ == "__main__":
    cli()
