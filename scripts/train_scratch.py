"""Rule train_scratch: the pruned architecture trained from random init (Liu et al. 2019)."""
from prunelab.jobs import end_process
from prunelab.jobs.controls import train_scratch_job

train_scratch_job(snakemake)
end_process()
