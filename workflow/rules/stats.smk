rule collect_stats:
    input:
        data=DATA_FILE,
        model=f"{R}/baseline/{{arch}}/{{regime}}/seed{{seed}}/model.pt",
    output:
        stats=f"{R}/stats/{{arch}}/{{regime}}/seed{{seed}}/stats.pt",
    log:
        f"{R}/logs/collect_stats/{{arch}}/{{regime}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/collect_stats/{{arch}}/{{regime}}/seed{{seed}}.tsv"
    conda:
        "../envs/prunelab.yaml"
    threads: config["threads"]
    resources:
        **job_resources(),
    params:
        **common_params(),
        stats=config["stats"],
        needs=lambda wc: statistics_needed(wc.regime, wc.arch),
        lrp=lambda wc: lrp_rule(wc.regime, wc.arch),
    script:
        "../../scripts/collect_stats.py"
