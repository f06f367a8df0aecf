"""python -m prunelab.report (--metrics-glob GLOB | --results-csv FILE | --from-mlflow URI --experiment NAME)
--out DIR"""
from __future__ import annotations

import argparse
import glob
import sys
import tempfile
from pathlib import Path


def _root(pattern: str) -> Path:
    """The non-wildcard leading directory of a glob pattern."""
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m prunelab.report", description=__doc__)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--metrics-glob", help="glob of metrics.json files ('**' recurses)")
    src.add_argument("--results-csv", metavar="FILE",
                     help="a report's results.csv (e.g. docs/results/<exp>/results.csv)")
    src.add_argument("--from-mlflow", metavar="URI", help="tracking URI, e.g. sqlite:///abs/path/mlflow.db")
    ap.add_argument("--experiment", help="MLflow experiment name (with --from-mlflow)")
    ap.add_argument("--scores-glob", help="glob of score files (default: <glob root>/scores/*/*/seed*/*.pt)")
    ap.add_argument("--config", help="YAML/JSON config with `experiment` and `reference:`")
    ap.add_argument("--no-figures", action="store_true", help="tables only")
    ap.add_argument("--out", required=True, help="output directory (tables/ and figures/ go here)")
    args = ap.parse_args(argv)

    config = {}
    if args.config:
        import yaml

        config = yaml.safe_load(Path(args.config).read_text()) or {}
    from .build import build_from_frame, build_report
    from .collect import load_results_csv, load_scores, records_frame

    if args.metrics_glob:
        files = sorted(glob.glob(args.metrics_glob, recursive=True))
        if not files:
            ap.error(f"no file matches --metrics-glob {args.metrics_glob!r}")
        sglob = args.scores_glob or str(_root(args.metrics_glob) / "scores" / "*" / "*" / "seed*" / "*.pt")
        written = build_report(files, Path(args.out), sorted(glob.glob(sglob, recursive=True)), config,
                               not args.no_figures)
    elif args.results_csv:
        written = build_from_frame(load_results_csv(args.results_csv), [], Path(args.out), config,
                                   not args.no_figures)
    else:
        if not args.experiment:
            ap.error("--from-mlflow needs --experiment")
        from .mlflow_source import fetch

        with tempfile.TemporaryDirectory(prefix="prunelab-report-") as tmp:
            records, score_files = fetch(args.from_mlflow, args.experiment, tmp)
            written = build_from_frame(records_frame(records), load_scores(score_files), Path(args.out), config,
                                       not args.no_figures)
    print(f"wrote {len(written)} files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
