rule prepare_data:
    output:
        DATA_FILE,
    params:
        dataset=config["dataset"],
    log:
        f"{R}/logs/prepare_data/{DATASET}.log",
    benchmark:
        f"{R}/benchmarks/prepare_data/{DATASET}.tsv"
    script:
        "../../scripts/prepare_data.py"
