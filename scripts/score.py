"""Rule score: one method turns the statistics (+ weights) into per-layer scores → {method}.pt."""
from prunelab.jobs import end_process
from prunelab.jobs.scoring import score_job

score_job(snakemake)
end_process()
