"""Rule train_baseline: train a dense model (regime standard or pat), write model.pt + metrics.json."""
from prunelab.jobs import end_process
from prunelab.jobs.baseline import train_baseline_job

train_baseline_job(snakemake)
end_process()
