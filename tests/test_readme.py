"""The README, the docs, the report's captions and the messages say what the code does: every make target, rule,
module, script, option and file they name exists. (The job counts the README quotes are checked against dry runs in
tests/test_experiments.py.)"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, SNAKEMAKE

README = REPO / "README.md"
# Hand-written prose a user reads: the README, docs/ (not the generated docs/results/) and the report's captions.
PROSE = [README, *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "workflow" / "report").glob("*.rst"))]
# Where messages are written: the library, the rules, the scripts, the Makefile and the tools.
MESSAGES = [*sorted((REPO / "src").rglob("*.py")), *sorted((REPO / "workflow" / "rules").glob("*.smk")),
            *sorted((REPO / "scripts").glob("*.py")), REPO / "Snakefile", REPO / "Makefile",
            *sorted((REPO / "tools").glob("*"))]
GENERATED = re.compile(r"<!-- results:\w+:begin -->.*?<!-- results:\w+:end -->", re.S)


def text_of(path: Path) -> str:
    """A file's text without the README's generated results block (prunelab.report.publish writes it)."""
    return GENERATED.sub("", path.read_text())


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):(?!=)", (REPO / "Makefile").read_text(), re.M))


def rule_names() -> set[str]:
    files = [REPO / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")]
    return {m for f in files for m in re.findall(r"^rule (\w+):", f.read_text(), re.M)}


def code_spans(text: str) -> list[str]:
    """Inline code and the lines of fenced code blocks, comments dropped."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    lines = [ln.split(" #")[0].strip() for b in blocks for ln in b.splitlines()]
    return [s for s in lines + re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S)) if s]


def test_readme_is_a_short_newcomers_path():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 350, f"README has {len(lines)} lines; move details to docs/"
    headings = [ln for ln in lines if ln.startswith("## ")]
    assert headings[0] == "## Two commands", "the README opens with the two commands"
    first = text[text.index("## Two commands"):text.index(headings[1])]
    for needed in ("make run", "make test", "min on 2 CPU cores", "GB of disk", "Prerequisites"):
        assert needed in first, f"'{needed}' missing from the Two commands section"
    for section in ("What `results/` holds", "Results on Fashion-MNIST", "Adding a method", "Run on a cluster"):
        assert f"## {section}" in headings, section
    assert "Statistics in the report" not in text  # the long description lives in docs/statistics.md


@pytest.mark.parametrize("path", PROSE, ids=lambda p: str(p.relative_to(REPO)))
def test_links_stay_in_the_repository_and_exist(path):
    for target in re.findall(r"\]\(([^)\s]+)\)", text_of(path)):
        assert not re.match(r"[a-z]+://", target), f"{path.name} links outside the repository: {target}"
        assert (path.parent / target.split("#")[0]).exists(), f"{path.name} links to {target}, which does not exist"


def targets_of(words: list[str]) -> list[str]:
    """The targets of `make WORDS...`: options and VAR=value skipped, up to the first word that is not one (a
    message's prose: `make uv: python has ...` names uv)."""
    out = []
    for word in words:
        if word.startswith("-") or "=" in word or '"' in word:
            continue
        name = word.rstrip(":,.)")
        if not re.fullmatch(r"[\w.][\w.-]*", name):
            break
        out.append(name)
        if name != word:
            break
    return out


def test_every_make_target_named_exists():
    targets, named = make_targets(), {}
    for path in PROSE + MESSAGES:
        text = text_of(path)
        spans = code_spans(text) if path.suffix in (".md", ".rst") else re.findall(r"[`'\"(]\s*(make [^`'\"\n]+)", text)
        for span in spans:
            for args in re.findall(r"(?:^|&&|;|\|\|)\s*make\s+([^;&|#]*)", span):
                named.update({t: path.name for t in targets_of(args.split())})
    assert {"run", "test", "uv", "data", "rerun"} <= set(named)
    missing = {t: where for t, where in named.items() if t not in targets}
    assert not missing, f"make targets named but not in the Makefile: {missing}"


def test_every_rule_named_exists():
    """Rules given to --forcerun / RULES=, and lists of backticked names that include a rule (only rules there)."""
    rules, bad = rule_names(), []
    for path in PROSE + MESSAGES:
        text = text_of(path)
        for group in re.findall(r'RULES=\\?"([\w ]+)\\?"|--forcerun((?: [a-z_]+)+)', text):
            bad += [(path.name, r) for r in " ".join(group).split() if r not in rules]
        for run in re.findall(r"(`[a-z_]+`(?:(?:,| and| or|,? \(and) `[a-z_]+`)+)", text):
            names = re.findall(r"`([a-z_]+)`", run)
            if sum(n in rules for n in names) >= 2:
                bad += [(path.name, n) for n in names if n not in rules]
    assert not bad, f"rule names that no rule has: {bad}"


def test_commands_name_modules_scripts_options_and_files_that_exist():
    options = set(re.findall(r"--[\w-]+", subprocess.run([SNAKEMAKE, "--help"], capture_output=True, text=True,
                                                          check=True).stdout))
    problems = []
    for path in PROSE:
        for span in code_spans(text_of(path)):
            words = span.split()
            if not words or words[0] not in ("make", "snakemake", ".venv/bin/snakemake", "python",
                                             ".venv/bin/python", "python3.11"):
                continue
            for module in re.findall(r"-m (prunelab[\w.]*)", span):
                file = REPO / "src" / Path(*module.split("."))
                if not (file.with_suffix(".py").is_file() or (file / "__main__.py").is_file()):
                    problems.append(f"{path.name}: {span}: no module {module}")
            for script in re.findall(r"\b((?:benchmarks|scripts|tools)/[\w/]+\.(?:py|sh))", span):
                if not (REPO / script).is_file():
                    problems.append(f"{path.name}: {span}: no file {script}")
            if "snakemake" in words[0]:
                problems += [f"{path.name}: {span}: snakemake has no option {o}"
                             for o in re.findall(r"(?<!\S)(--[\w-]+)", span) if o not in options]
                after = re.search(r"--configfiles? ((?:[^-\s]\S* ?)+)", span)
                for f in after.group(1).split() if after else []:  # --configfile takes files until the next option
                    if not re.search(r"\.(ya?ml|json)$|^\.\.\.$", f):
                        problems.append(f"{path.name}: {span}: '{f}' after --configfile is read as a config file")
            for f in re.findall(r"(?<![\w/<{])((?:config|profiles|tests|workflow)/[\w./-]+\.(?:yaml|py|sh|smk|rst))", span):
                if not (REPO / f).is_file():
                    problems.append(f"{path.name}: {span}: no file {f}")
    assert not problems, "\n".join(problems)


def test_config_paths_named_in_prose_exist():
    missing = []
    for path in PROSE:
        for f in set(re.findall(r"`((?:config|profiles|tests|workflow|benchmarks|tools|scripts|src)/[\w./-]+)`",
                                text_of(path))):
            if not (REPO / f).exists() and not (REPO / f.rstrip("/")).exists():
                missing.append(f"{path.name}: {f}")
    assert not missing, missing
