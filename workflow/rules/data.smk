# Local: a download (dataset.download: true) needs the network, which cluster compute nodes often lack.
localrules:
    prepare_data,


rule prepare_data:
    output:
        DATA_FILE,
    log:
        f"{R}/logs/prepare_data/{DATASET}.log",
    benchmark:
        f"{R}/benchmarks/prepare_data/{DATASET}.tsv"
    conda:
        "../envs/prunelab.yaml"
    params:
        dataset=config["dataset"],
    script:
        "../../scripts/prepare_data.py"
