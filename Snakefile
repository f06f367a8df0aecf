# PruneLab: data -> baselines -> statistics -> scores -> pruning -> fine-tuning -> report.
from snakemake.utils import min_version

min_version("9.0")


# config/config.yaml is the base, unless --configfile names other files (which replace it, not merge into it);
# --config KEY=VALUE goes on top of either (typed in common.smk).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/gradual.smk"
include: "workflow/rules/scratch.smk"
include: "workflow/rules/space.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


onstart:
    init_tracking_once()


rule all:
    default_target: True
    input:
        all_targets(),
