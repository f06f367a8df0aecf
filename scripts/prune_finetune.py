"""Rule prune_finetune: prune a baseline at one ratio with one method, then fine-tune it."""
from prunelab.jobs import end_process
from prunelab.jobs.pruning import prune_finetune_job

prune_finetune_job(snakemake)
end_process()
