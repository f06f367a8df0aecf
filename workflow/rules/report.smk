localrules:
    report,
    track,


rule report:
    input:
        metrics=all_metrics(),
        scores=score_files(),
    output:
        results=report(
            f"{R}/report/tables/results.csv",
            caption="../report/results.rst",
            category="Tables",
        ),
        summary=report(
            f"{R}/report/tables/summary.md",
            caption="../report/summary.rst",
            category="Tables",
        ),
        tex=f"{R}/report/tables/summary.tex",
        agreement=f"{R}/report/tables/methods_agreement.csv",
        figures=report(
            directory(f"{R}/report/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    log:
        f"{R}/logs/report.log",
    conda:
        "../envs/prunelab.yaml"
    params:
        experiment=EXP,
        reference=config["reference"],
        report=config["report"],
    message:
        f"report of {EXP}: tables and figures from {len(all_metrics())} metrics.json files"
    script:
        "../../scripts/report.py"


rule track:
    input:
        metrics=all_metrics(),
    output:
        f"{R}/tracking/synced.json",
    log:
        f"{R}/logs/track.log",
    conda:
        "../envs/prunelab.yaml"
    params:
        tracking_file=TRACKING_FILE,
    message:
        f"track: {len(all_metrics())} finished jobs of {EXP} to MLflow"
    script:
        "../../scripts/track.py"
