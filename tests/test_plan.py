"""What the workflow plans from a config (dry runs of the tiny config, read from `snakemake --summary`)."""
import yaml

from conftest import TINY, make_workdir, snakemake


def test_workflow_plans_structured_contribution_once(tmp_path):
    wd = make_workdir(tmp_path / "wd")
    cfg = yaml.safe_load(TINY.read_text())
    cfg.update(archs={"mlp": cfg["archs"]["mlp"]}, methods={"contribution": {"kappa": [0, 1]}})
    (wd / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(wd, "--configfile", "c.yaml", "--cores", "1", "--summary").stdout
    finetuned = {tuple(line.split("\t")[0].split("/")[6:8]) for line in out.splitlines()
                 if line.startswith("results/") and "/finetuned/" in line and line.split("\t")[0].endswith(".json")}
    assert finetuned == {("contribution-kappa0", "unstructured"), ("contribution-kappa1", "unstructured"),
                         ("contribution-kappa0", "structured")}


def test_an_arch_may_run_its_own_seeds(tmp_path):
    wd = make_workdir(tmp_path / "wd")
    cfg = yaml.safe_load(TINY.read_text())
    cfg["seeds"] = [0, 1, 2]
    cfg["archs"]["cnn"]["seeds"] = [0]
    (wd / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(wd, "--configfile", "c.yaml", "--cores", "1", "--summary").stdout
    baselines = {tuple(line.split("\t")[0].split("/")[3:6:2]) for line in out.splitlines()
                 if line.startswith("results/") and "/baseline/" in line and line.split("\t")[0].endswith(".json")}
    assert baselines == {("mlp", "seed0"), ("mlp", "seed1"), ("mlp", "seed2"), ("cnn", "seed0")}
