"""Rule train_gradual: FRS channel pruning while training from random init (Aketi et al. 2020)."""
from prunelab.jobs import end_process
from prunelab.jobs.controls import train_gradual_job

train_gradual_job(snakemake)
end_process()
