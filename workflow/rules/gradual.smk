# Gradual FRS channel pruning while training (Aketi et al. 2020): one job per arch x seed x ratio, from random
# init. Targets: gradual_metrics() in common.smk.


rule train_gradual:
    input:
        data=DATA_FILE,
    output:
        model=f"{R}/gradual/{{arch}}/seed{{seed}}/frs/r{{ratio}}/model.pt",
        metrics=f"{R}/gradual/{{arch}}/seed{{seed}}/frs/r{{ratio}}/metrics.json",
    log:
        f"{R}/logs/train_gradual/{{arch}}/seed{{seed}}/frs/r{{ratio}}.log",
    benchmark:
        f"{R}/benchmarks/train_gradual/{{arch}}/seed{{seed}}/frs/r{{ratio}}.tsv"
    conda:
        "../envs/prunelab.yaml"
    threads: config["threads"]
    resources:
        **job_resources(),
    params:
        **common_params(),
        arch=arch_spec,
        train=train_config,
        gradual={
            **{k: config["gradual"][k] for k in GRADUAL_JOB_KEYS},
            "min_keep_units": config["prune"]["min_keep_units"],
            "target": config["prune"]["target"],
        },
        frs=frs_config(),
        stats=config["stats"],
    script:
        "../../scripts/train_gradual.py"
