"""Rule track (deferred mode): log every finished job to MLflow in this one process; idempotent."""
from prunelab.jobs.summaries import track_job

track_job(snakemake)
