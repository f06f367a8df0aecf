# PruneLab: data -> baselines -> statistics -> scores -> pruning -> fine-tuning -> report.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


onstart:
    init_tracking_once()


rule all:
    input:
        all_targets(),
    default_target: True
