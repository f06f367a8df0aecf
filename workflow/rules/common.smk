# Helpers, config loading and validation, kernel pinning and wildcard constraints shared by every rule file.
import json
import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import update_config, validate

from prunelab.numerics import pin_kernels
from prunelab.overrides import typed


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
            + override_hint(e)
            for e in errors
        ]
        raise WorkflowError("invalid config:\n" + "\n".join(lines)) from None


def override_hint(error):
    """For a key set with --config: how to give it (values are YAML), or to use a small config file instead."""
    if not error.absolute_path or error.absolute_path[0] not in CONFIG_OVERRIDES:
        return ""
    return (
        " (set by --config, whose values are read as YAML: --config 'seeds=[0, 1]' 'train={epochs: 2}'; "
        "or write the keys to a small YAML file: --configfile config/config.yaml mine.yaml)"
    )


def canonical(obj):
    """Sorted-key copy: params then compare equal whatever the key order of the config file."""
    if isinstance(obj, dict):
        return {k: canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    return obj


# --config values as a config file would type them (Snakemake leaves the scalars of lists and mappings strings).
CONFIG_OVERRIDES = typed(dict(workflow.config_settings.config))
update_config(config, CONFIG_OVERRIDES)
validate_config(config, "../schemas/config.schema.yaml")
# Before torch loads (the prunelab imports below load it): this process and every job it starts inherit the
# kernel caps; a cluster job's own snakemake re-parses this file and sets them again.
pin_kernels(config["portable_numerics"])
# The imports below load torch: after pin_kernels.
from prunelab.checks import models as model_checks  # noqa: E402
from prunelab.checks import check_config, ConfigError, dry_run_notes  # noqa: E402
from prunelab.methods import (  # noqa: E402
    get_method,
    required_statistics,
    unused_options,
)
from prunelab.methods.variants import (  # noqa: E402
    distinct_variants,
    expand_methods,
    pat_regimes,
    select_variants,
)
from prunelab.models import cpu_fallback_note  # noqa: E402
from prunelab.settings import (  # noqa: E402
    method_defaults,
    publish_runtime,
    recipe as settings_recipe,
)

# A dry run plans without data files or a GPU: what a real run would stop on is said, not raised.
DRY_RUN = workflow.output_settings.dryrun
try:  # what the schema cannot say (names, files, sizes, schedule): one line, before any job
    check_config(
        config,
        list(workflow.configfiles),
        check_device=workflow.local_exec and not DRY_RUN,
        check_files=not DRY_RUN,
        overridden=set(CONFIG_OVERRIDES),
    )
except ConfigError as exc:
    raise WorkflowError(f"invalid config: {exc}") from None
if DRY_RUN:
    for note in dry_run_notes(config, check_device=workflow.local_exec):
        logger.warning(f"dry run: {note}")
elif workflow.is_main_process and workflow.local_exec and config["device"] == "auto":
    # one line on the console; each job's log says it too
    CPU_FALLBACK = cpu_fallback_note()
    if CPU_FALLBACK:
        logger.warning(CPU_FALLBACK)
_canonical_config = canonical(config)
config.clear()
config.update(_canonical_config)

EXP = config["experiment"]
R = f"results/{EXP}"
ARCHS = list(config["archs"])
SEEDS = [int(s) for s in config["seeds"]]


def seeds_for(arch):
    """Seeds of config arch `arch`: its own `seeds` where set (a slow arch may run fewer), else the top level."""
    return [int(s) for s in config["archs"][arch].get("seeds") or SEEDS]


# Pruning-aware training: regime pat (one regularizer.beta) or pat-beta<value> for each swept beta.
PAT_REGIMES = pat_regimes(config) if "pat" in config["regimes"] else {}
REGIMES = [r for g in config["regimes"] for r in (PAT_REGIMES if g == "pat" else [g])]
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


def regime_kind(regime):
    """standard or pat (a regime of pruning-aware training at any beta)."""
    return "pat" if regime in PAT_REGIMES else regime


def regime_archs(regime):
    """Architectures trained in `regime` (pat may be limited to some, config regularizer.archs)."""
    limit = config["regularizer"].get("archs") if regime in PAT_REGIMES else None
    return [a for a in ARCHS if not limit or a in limit]


def inapplicable_pairs():
    """{(arch, method or variant): reason} for the methods that cannot score an architecture (e.g. bn_scale
    without BatchNorm): those pairs are skipped (logged); a method that applies to no arch is an error.
    """
    from prunelab.checks.data import dataset_sizes
    from prunelab.methods import inapplicable_reason
    from prunelab.models import build_model

    in_shape, classes, _, _ = dataset_sizes(config["dataset"], check_files=False)
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
    limit = config["regularizer"]["methods"] if regime in PAT_REGIMES else None
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
    """Variants run in `regime` on `arch` whose method scores `granularity` (the registry declares which), each
    once: a variant that differs from an earlier one only in options its `granularity` scores do not read
    (contribution's kappa, structured) is left out there."""
    scoring = {
        m: METHOD_VARIANTS[m]
        for m in regime_methods(regime, arch)
        if granularity in get_method(m).granularities
    }
    return distinct_variants(scoring, unused_options(granularity))


def baseline_combos():
    """(arch, regime, seed) of every baseline."""
    return [(a, g, s) for g in REGIMES for a in regime_archs(g) for s in seeds_for(a)]


wildcard_constraints:
    arch="|".join(map(re.escape, ARCHS)),
    regime="|".join(map(re.escape, REGIMES)),
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
        for s in seeds_for(a)
        for r in gradual_ratios()
    ]


# Scratch control (Liu et al. 2019): each structurally pruned architecture trained from random init with the
# baseline recipe of its regime, for the steps scratch.budget names.


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
        if regime_kind(g) in config["scratch"]["regimes"]
        for m in scratch_methods()
        if m in methods_for("structured", g, a)
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
    """Settings of `section` (train or finetune) for `arch` (prunelab.settings.recipe)."""
    return settings_recipe(config, section, arch)


def train_config(wc):
    return recipe("train", wc.arch)


def finetune_config(wc):
    return recipe("finetune", wc.arch)


def regularizer_config(wc):
    """What pruning-aware training adds to the loss in regime `wc.regime` ({kind, beta}), None for standard."""
    if wc.regime not in PAT_REGIMES:
        return None
    return {"kind": config["regularizer"]["kind"], "beta": PAT_REGIMES[wc.regime]}


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
