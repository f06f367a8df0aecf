# Helpers, config validation and wildcard constraints shared by every rule file.
import json
import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from prunelab.checks import models as model_checks
from prunelab.checks import check_config, ConfigError
from prunelab.methods import get_method, required_statistics
from prunelab.methods.variants import expand_methods, select_variants
from prunelab.settings import method_defaults, publish_runtime


def allowed_keys(error):
    """For an unknown key: ' (expected one of: ...)' listing the keys the schema allows there."""
    props = (
        error.schema.get("properties")
        if error.validator == "additionalProperties"
        else None
    )
    return f" (expected one of: {', '.join(props)})" if props else ""


def validate_config(cfg, schema):
    """Validate against the schema (filling defaults); re-raise with the failing key named plainly."""
    try:
        validate(cfg, schema=schema, set_default=True)
    except WorkflowError as exc:
        import jsonschema
        import yaml

        with open(workflow.source_path(schema)) as fh:
            raw = yaml.safe_load(fh)
        errors = sorted(
            jsonschema.Draft202012Validator(raw).iter_errors(cfg),
            key=lambda e: list(map(str, e.path)),
        )
        if not errors:
            raise
        lines = [
            f"  config key '{'.'.join(map(str, e.absolute_path)) or '<top level>'}': {e.message}"
            + allowed_keys(e)
            for e in errors
        ]
        raise WorkflowError("invalid config:\n" + "\n".join(lines)) from None


def canonical(obj):
    """Sorted-key copy: params then compare equal whatever the key order of the config file."""
    if isinstance(obj, dict):
        return {k: canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    return obj


validate_config(config, "../schemas/config.schema.yaml")
try:  # what the schema cannot say (names, files, sizes, schedule): one line, before any job
    check_config(config, list(workflow.configfiles), check_device=workflow.local_exec)
except ConfigError as exc:
    raise WorkflowError(f"invalid config: {exc}") from None
_canonical_config = canonical(config)
config.clear()
config.update(_canonical_config)

EXP = config["experiment"]
R = f"results/{EXP}"
ARCHS = list(config["archs"])
SEEDS = [int(s) for s in config["seeds"]]
REGIMES = list(config["regimes"])
# Method variants: name -> (registered method, scalar options); a list-valued option sweeps (methods.variants).
METHOD_VARIANTS = expand_methods(config["methods"])
METHODS = list(METHOD_VARIANTS)
DATASET = config["dataset"]["name"]
DATA_FILE = f"{R}/data/{DATASET}.pt"
TRACKING_FILE = f"{R}/tracking.json"
# Settings that cannot change weights (device, latency timing, resume cadence) and where tracking goes: not params,
# so changing them reruns nothing. Computed here, in every Snakemake process that parses the workflow (the main one,
# a job's own, a workflow importing this one as a module), and put in the process's environment, which its jobs
# inherit (prunelab.settings.publish_runtime; read by prunelab.jobs.resolved_params). onstart also writes them to
# these files, a record of what the last run started with.
RUNTIME_FILE = f"{R}/runtime.json"


def tracking_settings():
    """{mode, uri, experiment}: $PRUNELAB_TRACKING_URI, else tracking.uri, else results/mlflow.db (SQLite)."""
    uri = (
        os.environ.get("PRUNELAB_TRACKING_URI")
        or config["tracking"]["uri"]
        or f"sqlite:///{Path('results').resolve() / 'mlflow.db'}"
    )
    return {"mode": config["tracking"]["mode"], "uri": uri, "experiment": EXP}


RUNTIME = {k: config[k] for k in ("device", "latency", "resume")}
TRACKING = tracking_settings()
publish_runtime(EXP, {"runtime": RUNTIME, "tracking": TRACKING})


def fmt_ratio(r):
    return f"{float(r):.2f}"


def model_spec(arch):
    """The model of config arch `arch`: {name, options} (its granularities only pick jobs)."""
    return {k: config["archs"][arch][k] for k in ("name", "options")}


def ratios(granularity, arch=None):
    """Ratios (path form) of `granularity`: the arch's own granularities where it sets them, else the top level."""
    own = config["archs"][arch].get("granularities") if arch else None
    return [fmt_ratio(r) for r in (own or config["granularities"]).get(granularity, [])]


def regime_archs(regime):
    """Architectures trained in `regime` (pat may be limited to some, config regularizer.archs)."""
    limit = config["regularizer"].get("archs") if regime == "pat" else None
    return [a for a in ARCHS if not limit or a in limit]


def inapplicable_pairs():
    """{(arch, method or variant): reason} for the methods that cannot score an architecture (e.g. bn_scale
    without BatchNorm): those pairs are skipped (logged); a method that applies to no arch is an error.
    """
    from snakemake.logging import logger
    from prunelab.checks.data import dataset_sizes
    from prunelab.methods import inapplicable_reason
    from prunelab.models import build_model

    in_shape, classes, _, _ = dataset_sizes(config["dataset"])
    bases = sorted({base for base, _ in METHOD_VARIANTS.values()})
    pairs = {}
    for a in ARCHS:
        arch = {
            **model_spec(a),
            "in_shape": list(in_shape),
            "num_classes": classes,
        }
        with model_checks.meta_build():
            model = build_model(arch)
        for base in bases:
            reason = inapplicable_reason(base, model)
            if reason:
                pairs[(a, base)] = reason
                pairs.update(
                    {
                        (a, m): reason
                        for m, (b, _) in METHOD_VARIANTS.items()
                        if b == base
                    }
                )
                logger.info(f"method {base} is not run on arch {a}: {reason}")
    for base in bases:
        reasons = [pairs[(a, base)] for a in ARCHS if (a, base) in pairs]
        if len(reasons) == len(ARCHS):
            raise WorkflowError(
                f"invalid config: methods.{base} applies to no arch of the experiment ({reasons[0]})"
            )
    return pairs


INAPPLICABLE = inapplicable_pairs()


def regime_methods(regime, arch=None):
    """Methods run after training in `regime` (pat may be limited, config regularizer.methods), on `arch`
    (methods that cannot score it are left out)."""
    limit = config["regularizer"]["methods"] if regime == "pat" else None
    own = config["archs"][arch].get("methods") if arch else None
    return [
        m
        for m in select_variants(select_variants(METHODS, limit), own)
        if (arch, m) not in INAPPLICABLE
    ]


def method_config(wc):
    """Scalar options of the method variant `wc.method` (the registered method's config keys)."""
    return METHOD_VARIANTS[wc.method][1]


def methods_for(granularity, regime="standard", arch=None):
    """Variants run in `regime` on `arch` whose method scores `granularity` (the registry declares which)."""
    return [
        m
        for m in regime_methods(regime, arch)
        if granularity in get_method(m).granularities
    ]


def baseline_combos():
    """(arch, regime, seed) of every baseline."""
    return [(a, g, s) for g in REGIMES for a in regime_archs(g) for s in SEEDS]


wildcard_constraints:
    arch="|".join(map(re.escape, ARCHS)),
    regime="standard|pat",
    seed=r"\d+",
    method="|".join(map(re.escape, METHODS)),
    granularity="unstructured|structured",
    ratio=r"0\.\d\d",


def prune_combos():
    """(arch, regime, seed, method, granularity, ratio) for every pruned model of the experiment."""
    return [
        (a, g, s, m, gr, r)
        for a, g, s in baseline_combos()
        for gr in ("unstructured", "structured")
        for m in methods_for(gr, g, a)
        for r in ratios(gr, a)
    ]


def stage_metrics(stage):
    if stage == "baseline":
        return [
            f"{R}/baseline/{a}/{g}/seed{s}/metrics.json"
            for a, g, s in baseline_combos()
        ]
    return [
        f"{R}/{stage}/{a}/{g}/seed{s}/{m}/{gr}/r{r}/metrics.json"
        for a, g, s, m, gr, r in prune_combos()
    ]


def score_files():
    return [
        f"{R}/scores/{a}/{g}/seed{s}/{m}.pt"
        for a, g, s in baseline_combos()
        for m in regime_methods(g, a)
    ]


# Gradual FRS channel pruning while training (Aketi et al. 2020): one job per arch x seed x ratio, from random init.
# Models without a convolution (mlp, lenet300_100) have no channels to prune: left out unless named in gradual.archs.
# What changes a gradual model (enabled / ratios / archs only pick jobs).
GRADUAL_JOB_KEYS = ("interval", "stop_epoch", "channels_per_step", "ignore_layers")


def gradual_archs():
    """Archs trained by gradual FRS (gradual.archs, or every arch with convolutions); checked at validation."""
    return model_checks.gradual_archs(config)


def frs_config():
    """FRS options of the gradual schedule: the experiment's frs options."""
    return {**method_defaults("frs"), **(config["methods"].get("frs") or {})}


def gradual_ratios():
    """gradual.ratios, or the experiment's structured ratios when empty."""
    g = config["gradual"]["ratios"] or config["granularities"].get("structured", [])
    return [fmt_ratio(r) for r in g]


def gradual_metrics():
    """metrics.json of every gradual model (none unless gradual.enabled)."""
    if not config["gradual"]["enabled"]:
        return []
    return [
        f"{R}/gradual/{a}/seed{s}/frs/r{r}/metrics.json"
        for a in gradual_archs()
        for s in SEEDS
        for r in gradual_ratios()
    ]


# Scratch control (Liu et al. 2019): each structurally pruned architecture trained from random init for
# train.epochs + finetune.epochs, with the baseline recipe of its regime.


def scratch_methods():
    """The variants scratch.methods selects (names checked at validation)."""
    return select_variants(METHODS, config["scratch"]["methods"])


def scratch_ratios():
    """scratch.ratios, or the experiment's structured ratios when empty."""
    g = config["scratch"]["ratios"] or config["granularities"].get("structured", [])
    return [fmt_ratio(r) for r in g]


def scratch_metrics():
    """metrics.json of every scratch model (none unless scratch.enabled)."""
    if not config["scratch"]["enabled"]:
        return []
    return [
        f"{R}/scratch/{a}/{g}/seed{s}/{m}/structured/r{r}/metrics.json"
        for a, g, s in baseline_combos()
        for m in scratch_methods()
        if m in regime_methods(g, a)
        for r in scratch_ratios()
    ]


def all_metrics():
    return (
        stage_metrics("baseline")
        + stage_metrics("pruned")
        + stage_metrics("finetuned")
        + gradual_metrics()
        + scratch_metrics()
        + SPACE_METRICS
    )


def all_targets():
    targets = [f"{R}/report/tables/results.csv"]
    if config["tracking"]["mode"] == "deferred":
        targets.append(f"{R}/tracking/synced.json")
    return targets + SPACE_SUMMARIES


def common_params(**extra):
    """Params every job gets: experiment + dataset name, the tracking and runtime (device, latency) files, not
    their content."""
    return dict(
        experiment=EXP,
        dataset=DATASET,
        tracking_file=TRACKING_FILE,
        runtime_file=RUNTIME_FILE,
        **extra,
    )


def statistics_needed(regime, arch):
    """Statistics the variants run in `regime` on `arch` need (their union): what a collect_stats job
    computes. Only this is a param, so adding a variant that needs nothing new reruns no statistics pass.
    """
    variants = regime_methods(regime, arch)
    return sorted(
        required_statistics(variants, {m: METHOD_VARIANTS[m][1] for m in variants})
    )


def lrp_rule(regime, arch):
    """frs's LRP-αβ options when the statistics of `regime` on `arch` include relevance, else None."""
    return frs_config() if "relevance" in statistics_needed(regime, arch) else None


def iterative_settings(wc):
    """What the pruning step of an iterative job also needs (statistics and fine-tuning settings); None for
    one-shot, whose pruning record (params, config_hash) then holds only what pruning uses.
    """
    if config["prune"]["schedule"] != "iterative":
        return None
    return {"finetune": recipe("finetune", wc.arch), "stats": config["stats"]}


def arch_spec(wc):
    return model_spec(wc.arch)


def recipe(section, arch):
    """Settings of `section` (train or finetune) for `arch`: the arch's own keys over the top-level ones."""
    return {**config[section], **(config["archs"][arch].get(section) or {})}


def train_config(wc):
    return recipe("train", wc.arch)


def finetune_config(wc):
    return recipe("finetune", wc.arch)


def regularizer_config(wc):
    return config["regularizer"] if wc.regime == "pat" else None


def job_resources():
    return dict(
        gpu=config["resources"]["gpu"],
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
    )


def init_tracking_once():
    """Main process only (onstart): record the tracking and runtime settings, create the MLflow database/experiment."""
    Path(R).mkdir(parents=True, exist_ok=True)
    Path(TRACKING_FILE).write_text(json.dumps(TRACKING, indent=2) + "\n")
    Path(RUNTIME_FILE).write_text(json.dumps(RUNTIME, indent=2) + "\n")
    uri = TRACKING["uri"]
    if TRACKING["mode"] == "live":
        from snakemake.logging import logger
        from prunelab.tracking import init_tracking

        try:
            init_tracking(uri, EXP, Path("results").resolve() / "mlartifacts")
        except Exception as exc:  # a tracking outage never stops the results
            logger.warning(
                f"MLflow tracking at {uri} is unreachable ({type(exc).__name__}: {exc}); "
                "jobs keep their results in files and mark them for `make mlflow-sync`"
            )
