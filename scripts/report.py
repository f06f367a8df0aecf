"""Rule report: tables and figures from every metrics.json (and score file) of the experiment."""
from pathlib import Path

from prunelab.jobs import start_script
from prunelab.report import build_report

start_script(snakemake)
out_dir = Path(snakemake.output.results).parent.parent
build_report([Path(p) for p in snakemake.input.metrics], out_dir,
             score_files=[Path(p) for p in snakemake.input.scores],
             config={"experiment": snakemake.params.experiment, "reference": snakemake.params.reference,
                     "report": snakemake.params.report})
Path(snakemake.output.figures).mkdir(parents=True, exist_ok=True)
