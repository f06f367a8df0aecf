rule train_baseline:
    input:
        data=DATA_FILE,
    output:
        model=f"{R}/baseline/{{arch}}/{{regime}}/seed{{seed}}/model.pt",
        metrics=f"{R}/baseline/{{arch}}/{{regime}}/seed{{seed}}/metrics.json",
    log:
        f"{R}/logs/train_baseline/{{arch}}/{{regime}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train_baseline/{{arch}}/{{regime}}/seed{{seed}}.tsv"
    conda:
        "../envs/prunelab.yaml"
    threads: config["threads"]
    resources:
        **job_resources(),
    params:
        **common_params(),
        arch=arch_spec,
        train=train_config,
        regularizer=regularizer_config,
    script:
        "../../scripts/train_baseline.py"
