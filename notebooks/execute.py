"""Re-execute every notebook in this folder in place, so that the committed copies show their tables and figures.

    python notebooks/execute.py            # full runs (minutes)
    python notebooks/execute.py --fast     # the tests' fast mode (PYRO_VI_ZOO_FAST=1)
    python notebooks/execute.py gmm vae    # some of them (names in this folder, or paths)
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
    # a path as the shell completes it, or a name of a notebook in this folder, with or without .ipynb
    paths = [Path(name) if Path(name).is_file() else HERE / Path(name).with_suffix(".ipynb").name
             for name in args.notebooks] or sorted(HERE.glob("*.ipynb"))
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        print(f"error: no notebook {', '.join(missing)}; choose from: "
              f"{', '.join(sorted(path.stem for path in HERE.glob('*.ipynb')))}", file=sys.stderr)
        return 2
    for path in paths:
        start = time.perf_counter()
        execute(path)
        print(f"{path.name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
