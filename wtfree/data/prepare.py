"""Prepares a data set that is fetched once and read offline afterwards.

    python -m wtfree.data.prepare mnist_full [--data_dir DIR]

TFDS sets are prepared with ``tfds build`` instead (`wtfree.data.tfds_sets`).
"""

import argparse
import pickle
import sys

from absl import logging

from wtfree.data import mnist_full

PREPARERS = {mnist_full.NAME: mnist_full.prepare}


def main(argv: list[str] | None = None) -> None:
  """Runs the preparer the command line names; a failure is one line on stderr and exit status 2."""
  parser = argparse.ArgumentParser(prog="python -m wtfree.data.prepare", description=__doc__.splitlines()[0])
  parser.add_argument("name", choices=sorted(PREPARERS), help="the data set")
  parser.add_argument("--data_dir", default=None,
                      help=f"where to write (default: $WTFREE_DATA_DIR or {mnist_full.default_data_dir()})")
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.INFO)
  try:
    path = PREPARERS[args.name](args.data_dir)
  except (mnist_full.PrepareError, pickle.UnpicklingError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"{args.name}: wrote {path}; run with --config.dataset={args.name}"
        + (f" --config.data_dir={args.data_dir}" if args.data_dir else ""))


if __name__ == "__main__":
  main()
