"""Rule pruning_space: one random subnetwork of the standard baseline at a MACs regime."""
from prunelab.jobs import end_process
from prunelab.jobs.controls import pruning_space_job

pruning_space_job(snakemake)
end_process()
