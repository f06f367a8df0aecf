#!/usr/bin/env bash
# Snakemake runs this once in the freshly created rule environment: install this checkout's prunelab package.
set -euo pipefail
python -m pip install --no-deps -e "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
