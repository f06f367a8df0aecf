# Network pruning spaces: random subnetworks of the standard baseline at fixed MACs regimes (prunelab.pruning.space).
# SPACE_METRICS (every sample's metrics.json) and SPACE_SUMMARIES (one per arch x seed) are [] unless enabled.
SPACE = config["space"]
SPACE_ARCHS = list(SPACE["archs"]) or ARCHS
SPACE_REGIMES = [fmt_ratio(r) for r in SPACE["regimes"]]
# Structured models within ±5 % of a regime's MACs are its comparison.
SPACE_MACS_TOL = 0.05
if SPACE["enabled"] and set(SPACE_ARCHS) - set(ARCHS):
    raise WorkflowError(
        f"invalid config: space.archs {sorted(set(SPACE_ARCHS) - set(ARCHS))} are not in archs {ARCHS}"
    )
if len(set(SPACE_REGIMES)) != len(SPACE_REGIMES):
    raise WorkflowError(
        f"invalid config: space.regimes {SPACE['regimes']} collide at two decimals: {SPACE_REGIMES}"
    )
# Training recipe of a sample, run for space.epochs: inherit fine-tunes, scratch trains like a baseline; the
# arch's own recipe (archs.<arch>.finetune / .train) over the top-level one, as for every other job.
SPACE_SECTION = "finetune" if SPACE["init"] == "inherit" else "train"
SPACE_SAMPLE = "{arch}/seed{seed}/regime{macs}/sample{sample}"
SPACE_METRICS = [
    f"{R}/space/{a}/seed{s}/regime{m}/sample{i}/metrics.json"
    for a in (SPACE_ARCHS if SPACE["enabled"] else [])
    for s in seeds_for(a)
    for m in SPACE_REGIMES
    for i in range(SPACE["samples"])
]
SPACE_SUMMARIES = [
    f"{R}/space/{a}/seed{s}/summary.json"
    for a in (SPACE_ARCHS if SPACE["enabled"] else [])
    for s in seeds_for(a)
]


localrules:
    space_summary,


rule pruning_space:
    input:
        data=DATA_FILE,
        model=f"{R}/baseline/{{arch}}/standard/seed{{seed}}/model.pt",
    output:
        model=f"{R}/space/{SPACE_SAMPLE}/model.pt",
        metrics=f"{R}/space/{SPACE_SAMPLE}/metrics.json",
    log:
        f"{R}/logs/pruning_space/{SPACE_SAMPLE}.log",
    benchmark:
        f"{R}/benchmarks/pruning_space/{SPACE_SAMPLE}.tsv"
    wildcard_constraints:
        macs=r"0\.\d\d|1\.00",
        sample=r"\d+",
    conda:
        "../envs/prunelab.yaml"
    threads: config["threads"]
    resources:
        **job_resources(),
    params:
        **common_params(),
        # what a sample uses (not the regime list or sample count, which only pick jobs)
        space={k: SPACE[k] for k in ("init", "epochs", "seed")},
        train=lambda wc: {
            k: v
            for k, v in recipe(SPACE_SECTION, wc.arch).items()
            if k not in ("epochs", "budgets")
        },
    script:
        "../../scripts/space_sample.py"


rule space_summary:
    input:
        samples=lambda wc: [
            f"{R}/space/{wc.arch}/seed{wc.seed}/regime{m}/sample{i}/metrics.json"
            for m in SPACE_REGIMES
            for i in range(SPACE["samples"])
        ],
        # the fine-tuned structured models of the same standard baseline, as configured
        structured=lambda wc: [
            f"{R}/finetuned/{wc.arch}/standard/seed{wc.seed}/{m}/structured/r{r}/metrics.json"
            for m in methods_for("structured", "standard", wc.arch)
            for r in ratios("structured", wc.arch)
            if "standard" in REGIMES
        ],
    output:
        json=f"{R}/space/{{arch}}/seed{{seed}}/summary.json",
        csv=f"{R}/space/{{arch}}/seed{{seed}}/summary.csv",
    log:
        f"{R}/logs/space_summary/{{arch}}/seed{{seed}}.log",
    conda:
        "../envs/prunelab.yaml"
    params:
        experiment=EXP,
        space={k: SPACE[k] for k in ("init", "epochs", "seed", "samples", "regimes")},
        macs_tol=SPACE_MACS_TOL,
    message:
        "space_summary of {wildcards.arch} seed {wildcards.seed} -> {output.json}"
    script:
        "../../scripts/space_summary.py"
