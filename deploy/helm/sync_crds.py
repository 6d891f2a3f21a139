#!/usr/bin/env python3
"""Copy the CRDs from the repository's crds/ folder (their single source) into the chart.

    python deploy/helm/sync_crds.py           # copy
    python deploy/helm/sync_crds.py --check   # exit 1 and name the files that differ

The chart renders its copy in templates/crds.yaml (so `helm upgrade` upgrades the CRD);
Helm cannot read files outside the chart, hence the copy. tests/helm checks it is current.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent.parent / "crds"
CHART_COPY = HERE / "mlserve-operator" / "files" / "crds"
# Files of crds/ the chart carries (crds/ may hold others the chart does not install).
FILES = ("mlserve.darwin.io_mlserves.yaml",)


def stale() -> list[str]:
    return [
        name
        for name in FILES
        if not (CHART_COPY / name).is_file() or (CHART_COPY / name).read_bytes() != (SOURCE / name).read_bytes()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report copies that differ")
    args = parser.parse_args(argv)
    names = stale()
    if args.check:
        for name in names:
            print(f"{CHART_COPY / name} differs from {SOURCE / name}: run {Path(__file__).name}", file=sys.stderr)
        return 1 if names else 0
    CHART_COPY.mkdir(parents=True, exist_ok=True)
    for name in names:
        (CHART_COPY / name).write_bytes((SOURCE / name).read_bytes())
        print(f"copied {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
