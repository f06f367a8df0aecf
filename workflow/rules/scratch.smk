# Scratch control (Liu et al. 2019): each structurally pruned architecture trained from random init with the baseline
# recipe of its regime, for the steps scratch.budget names. Targets: scratch_metrics() in common.smk.


rule train_scratch:
    input:
        data=DATA_FILE,
        dense=f"{R}/baseline/{{arch}}/{{regime}}/seed{{seed}}/model.pt",
        pruned=f"{R}/pruned/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/structured/r{{ratio}}/model.pt",
    output:
        model=f"{R}/scratch/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/structured/r{{ratio}}/model.pt",
        metrics=f"{R}/scratch/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/structured/r{{ratio}}/metrics.json",
    log:
        f"{R}/logs/train_scratch/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/r{{ratio}}.log",
    benchmark:
        f"{R}/benchmarks/train_scratch/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/r{{ratio}}.tsv"
    conda:
        "../envs/prunelab.yaml"
    threads: config["threads"]
    resources:
        **job_resources(),
    params:
        **common_params(),
        train=train_config,
        finetune=finetune_config,
        scratch_budget=config["scratch"]["budget"],
        regularizer=regularizer_config,
    script:
        "../../scripts/train_scratch.py"
