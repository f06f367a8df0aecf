# PruneLab: data -> baselines -> statistics -> scores -> pruning -> fine-tuning -> report.
from snakemake.utils import min_version

min_version("9.0")


# The default experiment, unless --configfile names another (which then replaces it rather than merging into it).
if not config:

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
