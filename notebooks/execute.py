"""Re-execute every notebook in this folder in place, so that the committed copies show their tables and figures.

    python notebooks/execute.py            # full runs (minutes)
    python notebooks/execute.py --fast     # the tests' fast mode (PYRO_VI_ZOO_FAST=1)
    python notebooks/execute.py gmm.ipynb  # some of them
"""

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def execute(path: Path, timeout: int = 3600) -> None:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    temporary = path.with_suffix(".ipynb.tmp")
    nbformat.write(notebook, temporary)
    os.replace(temporary, path)  # an interrupted run leaves the committed notebook as it was


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="notebooks: paths, or names in this folder (default: all)")
    parser.add_argument("--fast", action="store_true", help="the fast mode of the tests")
    args = parser.parse_args(argv)
    if args.fast:
        os.environ["PYRO_VI_ZOO_FAST"] = "1"
    # a path as the shell completes it, or a bare name of a notebook in this folder
    paths = [Path(name) if Path(name).is_file() else HERE / name for name in args.notebooks] \
        or sorted(HERE.glob("*.ipynb"))
    for path in paths:
        start = time.perf_counter()
        execute(path)
        print(f"{path.name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
