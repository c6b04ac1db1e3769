"""The example configurations and the dataset documentation, checked against the code.

- every ``examples/*.toml`` passes ``fedmllm config show`` (the real-dataset ones with their
  placeholder ``data.data_dir`` overridden by an existing folder);
- the examples page's table (``docs/examples.md``) names exactly the files in ``examples/``;
- every path and field of the layouts on the datasets page (``docs/datasets.md``) exists in the
  fixtures built in each dataset's published format (``tests/fixtures_data.py``), and the
  layouts name the files the readers open;
- every ``fedmllm prepare`` command of the datasets page runs on those fixtures.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from helpers import ROOT
from helpers.fixtures_data import make_crisismmd, make_hateful, make_medical

from fedmllm.cli import main
from fedmllm.data.datasets.crisismmd import crisismmd_path
from fedmllm.data.datasets.hateful_memes import hateful_memes_path
from fedmllm.data.datasets.medalpaca import MEDALPACA_FILE
from fedmllm.data.datasets.vqa_rad import VQA_RAD_FILE

README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLES_PAGE = (ROOT / "docs" / "examples.md").read_text(encoding="utf-8")
DATASETS_PAGE = (ROOT / "docs" / "datasets.md").read_text(encoding="utf-8")
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))

# the placeholder dataset folders (examples, datasets page) and the fixture that builds each
BUILDERS = {
    "/data/hateful_memes": make_hateful,
    "/data/crisismmd": make_crisismmd,
    "/data/medical": make_medical,
}


def fenced_blocks(text: str, lang: str | None = None) -> list[str]:
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    return [body for info, body in blocks if lang is None or info == lang]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """Each placeholder dataset folder built as a fixture in the published layout."""
    base = tmp_path_factory.mktemp("datasets")
    return {ph: build(base / Path(ph).name) for ph, build in BUILDERS.items()}


def localise(text: str, datasets: dict[str, Path]) -> str:
    for ph, folder in datasets.items():
        if text == ph or text.startswith(ph + "/"):
            return str(folder) + text[len(ph):]
    return text


# ----------------------------------------------------------------------------- examples


def test_there_are_five_to_eight_examples():
    assert 5 <= len(EXAMPLES) <= 8, [p.name for p in EXAMPLES]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_passes_config_show(path, tmp_path, capsys):
    cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    data = cfg.get("data", {})
    overrides = []
    if data.get("dataset", "synth") != "synth":
        # a placeholder of the datasets page, replaced here by a real folder
        assert data.get("data_dir") in BUILDERS, f"{path.name}: data.data_dir"
        overrides.append(f"data.data_dir={tmp_path}")
    assert main(["config", "show", "--config", str(path), *overrides]) == 0
    out = capsys.readouterr().out
    assert f"algorithm: {cfg['fl']['algorithm']}" in out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_says_what_it_maps_to(path):
    """Each file opens with comments: the paper and setting, and what differs from it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert len(header) >= 10, f"{path.name}: header comment too short"
    assert "Paper:" in text and "Differs" in text, path.name
    assert "2411.14717" in text or "NeurIPS 2025" in text, path.name


def test_examples_page_table_names_exactly_the_files():
    listed = re.findall(r"^\| `examples/([\w.-]+\.toml)` \|", EXAMPLES_PAGE, re.MULTILINE)
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert sorted(listed) == [p.name for p in EXAMPLES]
    mentioned = set(re.findall(r"examples/([\w.-]+\.toml)", EXAMPLES_PAGE))
    assert mentioned == {p.name for p in EXAMPLES}, "docs/examples.md names a file examples/ lacks"


def test_readme_names_only_existing_examples():
    mentioned = set(re.findall(r"examples/([\w.-]+\.toml)", README))
    assert mentioned, "README names no example"
    assert mentioned <= {p.name for p in EXAMPLES}, "README names a file examples/ lacks"


# ----------------------------------------------------------------------------- datasets


def layout_lines() -> list[tuple[str, list[str]]]:
    """``(path, fields)`` for each line of the datasets page's layout blocks: a path, then after
    two or more spaces an optional ``{field, ...}`` and a comment."""
    out = []
    for block in fenced_blocks(DATASETS_PAGE, "text"):
        for line in block.splitlines():
            if not line.startswith("/data/"):
                continue
            parts = re.split(r" {2,}", line, maxsplit=1)
            path, rest = parts[0], parts[1] if len(parts) > 1 else ""
            m = re.match(r"\{([^}]*)\}", rest.strip())
            fields = [f.strip() for f in m.group(1).split(",")] if m else []
            out.append((path, fields))
    return out


def record_keys(path: Path) -> set[str]:
    if path.suffix == ".tsv":
        return set(path.read_text(encoding="utf-8").splitlines()[0].split("\t"))
    if path.suffix == ".jsonl":
        first = next(ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip())
        return set(json.loads(first))
    return set(json.loads(path.read_text(encoding="utf-8"))[0])


def test_datasets_page_layouts_match_the_fixtures(datasets):
    lines = layout_lines()
    assert lines, "no layout lines in docs/datasets.md"
    for doc_path, fields in lines:
        local = Path(localise(doc_path, datasets))
        assert str(local) != doc_path, f"{doc_path}: not under a known placeholder"
        if doc_path.endswith("/"):
            assert local.is_dir(), f"docs layout: {doc_path} is not a folder in the fixture"
            assert not fields
            continue
        assert local.is_file(), f"docs layout: {doc_path} is not a file in the fixture"
        missing = set(fields) - record_keys(local)
        assert not missing, f"docs layout: {doc_path} lacks fields {sorted(missing)}"


def test_datasets_page_layouts_name_the_files_the_readers_open():
    paths = {p for p, _ in layout_lines()}
    hm, cm, med = "/data/hateful_memes", "/data/crisismmd", "/data/medical"
    wanted = {
        str(hateful_memes_path(hm, "train")), str(hateful_memes_path(hm, "test_seen")),
        str(crisismmd_path(cm, "train")), str(crisismmd_path(cm, "test")),
        f"{med}/vqa_rad/{VQA_RAD_FILE}", f"{med}/vqa_rad/images/",
        f"{med}/medalpaca/{MEDALPACA_FILE}",
        f"{med}/slake/Slake1.0/test.json", f"{med}/slake/Slake1.0/imgs/",
    }
    assert wanted <= paths, sorted(wanted - paths)


def prepare_commands() -> list[list[str]]:
    cmds = []
    for block in fenced_blocks(DATASETS_PAGE):
        text = block.replace("\\\n", " ")
        cmds += [shlex.split(ln) for ln in text.splitlines()
                 if ln.startswith("fedmllm prepare ")]
    return cmds


def test_datasets_page_names_a_prepare_command_per_dataset():
    names = {c[c.index("--dataset") + 1] for c in prepare_commands()}
    assert names == {"hateful_memes", "crisismmd", "medical"}


@pytest.mark.parametrize("cmd", prepare_commands(),
                         ids=lambda c: c[c.index("--dataset") + 1])
def test_datasets_page_prepare_command_runs_on_the_fixture(cmd, datasets, tmp_path, capsys):
    args = [localise(a, datasets) for a in cmd[1:]]
    out = tmp_path / Path(args[args.index("--out") + 1]).name
    args[args.index("--out") + 1] = str(out)
    assert main(args) == 0, capsys.readouterr().err
    clients = int(args[args.index("--clients") + 1])
    assert (out / "manifest.json").is_file() and (out / "test.json").is_file()
    assert sorted(p.name for p in out.glob("client_*.json")) == \
        sorted(f"client_{k}.json" for k in range(clients))
