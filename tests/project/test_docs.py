"""The README and the documentation pages (``docs/``), checked against the repository.

- the README stays a front page: at most 250 lines;
- every relative link in ``README.md`` and ``docs/*.md`` points at a file that exists (the
  strict mkdocs build, ``make docs``, checks the pages' links and headings too, but not the
  README's);
- every page is in the site's navigation (``mkdocs.yml``), and the navigation names no page
  that is missing;
- the package layout page names every subpackage of ``src/fedmllm/``, the benchmarks page
  every shipped grid, the configuration page's section table every key of
  ``fedmllm config show --doc``, and the README's command table every ``fedmllm`` command.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import ROOT

from fedmllm.cli import main

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))

# [text](target) and ![alt](target), the target up to a space, a title or the closing bracket
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def relative_links(path: Path) -> list[str]:
    """The relative link targets of a Markdown file, without their ``#anchor``; code blocks and
    code spans are not Markdown links and are left out."""
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # https:, mailto: ..., or a heading of the same page
        targets.append(target.split("#", 1)[0])
    return targets


def test_readme_is_at_most_250_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move the details to docs/"


@pytest.mark.parametrize("path", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_every_relative_link_points_at_a_file(path):
    links = relative_links(path)
    missing = [t for t in links if not (path.parent / t).exists()]
    assert not missing, f"{path.relative_to(ROOT)}: links to missing files {missing}"


def test_relative_links_are_found():
    """The link pattern itself: the README links its pages, and a code span is not a link."""
    assert "docs/usage.md" in relative_links(ROOT / "README.md")
    assert not [t for t in relative_links(DOCS / "development.md") if t.startswith("examples")]


def nav_pages() -> list[str]:
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text[text.index("\nnav:"):]
    return re.findall(r"^\s+- (?:[^\n]*: )?([\w./-]+\.md)\s*$", nav, re.MULTILINE)


def test_every_page_is_in_the_nav():
    nav = nav_pages()
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    assert sorted(nav) == [p.name for p in PAGES]


def test_layout_page_names_every_subpackage():
    page = (DOCS / "layout.md").read_text(encoding="utf-8")
    packages = [p.parent.relative_to(ROOT / "src" / "fedmllm").as_posix()
                for p in (ROOT / "src" / "fedmllm").glob("*/__init__.py")]
    assert packages
    missing = [name for name in packages if not re.search(rf"\b{re.escape(name)}/", page)]
    assert not missing, f"docs/layout.md does not describe {missing}"
    assert "runtime/flower/" in page


def test_benchmarks_page_names_every_grid():
    page = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    grids = sorted(p.name for p in (ROOT / "benchmarks" / "grids").glob("*.toml"))
    missing = [g for g in grids if f"`{g}`" not in page]
    assert not missing, f"docs/benchmarks.md does not describe {missing}"


def test_configuration_page_names_every_key(capsys):
    """Each key ``a.b[.c]`` of the reference has ``b`` in the row of section ``a`` (``fl.yoco.*``
    under ``yoco.*``, ``fl.client.prox_mu`` under ``client.objective``); ``seed`` its own row."""
    assert main(["config", "show", "--doc", "--format", "markdown"]) == 0
    keys = re.findall(r"^\| `([\w.]+)` \|", capsys.readouterr().out, re.MULTILINE)
    assert len(keys) > 50
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(0) for m in
            re.finditer(r"^\| `(\w+)` \|.*$", page, re.MULTILINE)}
    missing = []
    for key in keys:
        section, _, rest = key.partition(".")
        if not rest:
            found = re.search(rf"^\| \| `{section}` \|", page, re.MULTILINE)
        else:
            found = f"`{rest.split('.')[0]}" in rows.get(section, "")
        if not found:
            missing.append(key)
    assert not missing, f"docs/configuration.md's sections table lacks {missing}"


def test_readme_names_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    listing = text[text.index("COMMAND\n"):text.index("options:")]
    commands = re.findall(r"^    (\w[\w-]*) ", listing, re.MULTILINE)
    assert "run" in commands and "flower" in commands
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [c for c in commands if f"| `fedmllm {c}" not in readme]
    assert not missing, f"README's command table lacks {missing}"
