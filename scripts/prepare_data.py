"""Rule prepare_data: load a dataset by name and save its fixed train/val/test split."""
from prunelab.jobs import end_process
from prunelab.jobs.baseline import prepare_data_job

prepare_data_job(snakemake)
end_process()
