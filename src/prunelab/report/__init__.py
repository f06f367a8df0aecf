"""The report: tables and figures from metrics.json files (or MLflow runs) and score files.

    build_report(metrics_files, out_dir, score_files=(), config=None) -> list[Path]
    python -m prunelab.report --metrics-glob 'results/EXP/**/metrics.json' --out DIR
    python -m prunelab.report --results-csv docs/results/EXP/results.csv --out DIR
    python -m prunelab.report --from-mlflow URI --experiment NAME --out DIR
"""
from .build import build_from_frame, build_report

__all__ = ["build_report", "build_from_frame"]
