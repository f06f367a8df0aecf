"""Rule collect_stats: one calibration pass over the train split → stats.pt (what the methods declare)."""
from prunelab.jobs import end_process
from prunelab.jobs.scoring import collect_stats_job

collect_stats_job(snakemake)
end_process()
