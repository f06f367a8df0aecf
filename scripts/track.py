"""Rule track (deferred mode): log every finished job to MLflow in this one process; idempotent."""
import json
import logging
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
logging.getLogger("prunelab").info(
    "track: %d finished jobs in %s -> MLflow experiment %r at %s: %d runs logged (%d replacing an outdated run), "
    "%d already up to date", len(snakemake.input.metrics), results_dir, settings["experiment"], settings["uri"],
    counts["logged"], counts["replaced"], counts["skipped"])
