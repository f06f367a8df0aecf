"""Rule report: tables and figures from every metrics.json (and score file) of the experiment."""
from prunelab.report.job import report_job

report_job(snakemake)
