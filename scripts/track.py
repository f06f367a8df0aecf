"""Rule track (deferred mode): log every finished job to MLflow in this one process; idempotent."""
import json
from pathlib import Path

from prunelab.io import save_json
from prunelab.jobs import start_script
from prunelab.tracking import sync_results

start_script(snakemake)
with open(snakemake.params.tracking_file) as fh:
    settings = json.load(fh)
results_dir = Path(snakemake.output[0]).parent.parent  # results/{exp}/tracking/synced.json
counts = sync_results(results_dir, settings["uri"], settings["experiment"])
save_json({"uri": settings["uri"], "experiment": settings["experiment"], **counts}, snakemake.output[0])
