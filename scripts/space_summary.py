"""Rule space_summary: per MACs regime, error EDF, best sample, ratio-error correlations, structured matches."""
from prunelab.jobs.summaries import space_summary_job

space_summary_job(snakemake)
