"""What several benches share: the command line's runs folder and image folder."""
from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def runs_and_data_parser(description: str, runs: str, data: str) -> argparse.ArgumentParser:
    """A bench's command line with --runs (a folder under assets/) and --data (a data set under ../shared/data)
    already added, defaulting to the bundled `runs` and the shared `data`."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=str(ROOT / "assets" / runs))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / data))
    return parser
