rule score:
    input:
        model=f"{R}/baseline/{{arch}}/{{regime}}/seed{{seed}}/model.pt",
        stats=f"{R}/stats/{{arch}}/{{regime}}/seed{{seed}}/stats.pt",
    output:
        scores=f"{R}/scores/{{arch}}/{{regime}}/seed{{seed}}/{{method}}.pt",
    log:
        f"{R}/logs/score/{{arch}}/{{regime}}/seed{{seed}}/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/score/{{arch}}/{{regime}}/seed{{seed}}/{{method}}.tsv"
    conda:
        "../envs/prunelab.yaml"
    params:
        method_config=method_config,
    script:
        "../../scripts/score.py"
