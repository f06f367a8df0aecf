rule prune:
    input:
        data=DATA_FILE,
        model=f"{R}/baseline/{{arch}}/{{regime}}/seed{{seed}}/model.pt",
        scores=f"{R}/scores/{{arch}}/{{regime}}/seed{{seed}}/{{method}}.pt",
    output:
        model=f"{R}/pruned/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/{{granularity}}/r{{ratio}}/model.pt",
        metrics=f"{R}/pruned/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/{{granularity}}/r{{ratio}}/metrics.json",
    log:
        f"{R}/logs/prune/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/{{granularity}}/r{{ratio}}.log",
    benchmark:
        f"{R}/benchmarks/prune/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/{{granularity}}/r{{ratio}}.tsv"
    conda:
        "../envs/prunelab.yaml"
    threads: config["threads"]
    resources:
        **job_resources(),
    params:
        **common_params(),
        prune=config["prune"],
        method_config=method_config,
        iterative=iterative_settings,
    script:
        "../../scripts/prune.py"
