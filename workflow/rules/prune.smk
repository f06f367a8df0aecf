# Pruning and fine-tuning in one job (one process start-up, one data load and one dense latency reference
# instead of two): pruned/ holds the model right after pruning, finetuned/ the same model after the fine-tuning
# budget every method gets on the arch. Each folder keeps its own metrics.json and run.json.
rule prune_finetune:
    input:
        data=DATA_FILE,
        model=f"{R}/baseline/{{arch}}/{{regime}}/seed{{seed}}/model.pt",
        scores=f"{R}/scores/{{arch}}/{{regime}}/seed{{seed}}/{{method}}.pt",
    output:
        pruned_model=f"{R}/pruned/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/{{granularity}}/r{{ratio}}/model.pt",
        pruned_metrics=f"{R}/pruned/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/{{granularity}}/r{{ratio}}/metrics.json",
        model=f"{R}/finetuned/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/{{granularity}}/r{{ratio}}/model.pt",
        metrics=f"{R}/finetuned/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/{{granularity}}/r{{ratio}}/metrics.json",
    log:
        f"{R}/logs/prune_finetune/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/{{granularity}}/r{{ratio}}.log",
    benchmark:
        f"{R}/benchmarks/prune_finetune/{{arch}}/{{regime}}/seed{{seed}}/{{method}}/{{granularity}}/r{{ratio}}.tsv"
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
        finetune=finetune_config,
    script:
        "../../scripts/prune_finetune.py"
