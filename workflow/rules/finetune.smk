rule finetune:
    input:
        data=DATA_FILE,
        dense=f"{R}/baseline/{{arch}}/{{regime}}/seed{{seed}}/model.pt",
        model=f"{R}/pruned/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/{{granularity}}/r{{ratio}}/model.pt",
        pruned_metrics=f"{R}/pruned/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/{{granularity}}/r{{ratio}}/metrics.json",
    output:
        model=f"{R}/finetuned/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/{{granularity}}/r{{ratio}}/model.pt",
        metrics=f"{R}/finetuned/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/{{granularity}}/r{{ratio}}/metrics.json",
    log:
        f"{R}/logs/finetune/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/{{granularity}}/r{{ratio}}.log",
    benchmark:
        f"{R}/benchmarks/finetune/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/{{granularity}}/r{{ratio}}.tsv"
    conda:
        "../envs/prunelab.yaml"
    threads: config["threads"]
    resources:
        **job_resources(),
    params:
        **common_params(),
        finetune=finetune_config,
        prune=config["prune"],
    script:
        "../../scripts/finetune.py"
