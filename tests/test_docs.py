"""The README and docs/ stay in step with the code: the generated package map, and every link into docs/
(from docstrings, notebooks, tests, the report and the documents themselves) names a file and a heading
that exist."""

from __future__ import annotations

import re
from pathlib import Path

from pcnn.reporting import package_map

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README_MAX_LINES = 220  # a README about use; measured history goes to docs/performance.md and docs/runs.md

# `docs/design.md#likelihood` anywhere; inside docs/, also Markdown links `(design.md#x)`, `(#x)`, `(../x)`.
_CITATION = re.compile(r"docs/([\w-]+\.md)(?:#([\w-]+))?")
_RELATIVE_LINK = re.compile(r"\]\((?!https?:)([^)#\s]*)(?:#([\w-]+))?\)")


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings (lower case, punctuation dropped, spaces to -)."""
    anchors: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"#{1,6} ", line):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


def _sources() -> list[Path]:
    files = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
    for folder, pattern in (("pcnn", "*.py"), ("tests", "*.py"), ("notebooks", "*.py"), ("report", "*.tex")):
        files += sorted((REPO / folder).glob(pattern))
    return files


def _check(target: Path, anchor: str | None, where: str, problems: list[str]) -> None:
    if not target.exists():
        problems.append(f"{where}: {target.relative_to(REPO)} does not exist")
    elif anchor and anchor not in github_anchors(target.read_text(encoding="utf-8")):
        problems.append(f"{where}: no heading for #{anchor} in {target.relative_to(REPO)}")


def test_links_into_docs_name_existing_headings() -> None:
    problems: list[str] = []
    cited = 0
    for source in _sources():
        text = source.read_text(encoding="utf-8")
        for match in _CITATION.finditer(text):
            cited += 1
            line = text.count("\n", 0, match.start()) + 1
            _check(DOCS / match.group(1), match.group(2), f"{source.relative_to(REPO)}:{line}", problems)
        if source.parent == DOCS:
            for match in _RELATIVE_LINK.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                target = (DOCS / match.group(1)).resolve() if match.group(1) else source
                _check(target, match.group(2), f"{source.relative_to(REPO)}:{line}", problems)
    assert cited > 10, "expected the code to cite docs/"
    assert not problems, "broken links into docs/:\n" + "\n".join(problems)


def test_readme_package_map_is_generated() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert package_map.block() in readme, (
        "README's package map drifted from the modules' docstrings: "
        "python -m pcnn.package_map --write README.md"
    )


def test_package_map_rows(tmp_path: Path) -> None:
    (tmp_path / "__init__.py").write_text('"""The package."""\n')
    (tmp_path / "alpha.py").write_text('"""Alpha (docs/design.md#model): the first\nparagraph.\n\nMore."""\n')
    (tmp_path / "beta.py").write_text("x = 1\n")
    for sub, doc in (("part", "A part: what it is.\n\nWhat it must not hold."), ("part/inner", "Inner.")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "__init__.py").write_text(f'"""{doc}"""\n')
    (tmp_path / "part" / "one.py").write_text('"""One."""\n')
    name = tmp_path.name
    assert package_map.package_map(tmp_path).splitlines()[2:] == [
        f"| `{name}/part/`: inner/, one | A part: what it is. |",
        f"| `{name}/alpha.py` | Alpha: the first paragraph. |",
        f"| `{name}/beta.py` | (no docstring) |",
    ]
    text = f"intro\n{package_map.BEGIN}\nstale\n{package_map.END}\nrest\n"
    assert package_map.replace_block(text, tmp_path) == f"intro\n{package_map.block(tmp_path)}\nrest\n"


def test_readme_is_about_use() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines: move history and notes to docs/ (performance.md, runs.md)"
    )


def test_no_citations_of_design_notes_outside_the_repository() -> None:
    """Docstrings cite docs/design.md#<heading>, which users have, not sections of notes they lack."""
    stale = re.compile(r"DESIGN(?:\.md)? (?:section|§)")
    hits = [
        f"{source.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}"
        for source in _sources()
        for text in [source.read_text(encoding="utf-8")]
        for m in stale.finditer(text)
    ]
    assert not hits, "cite docs/design.md#<heading> instead: " + ", ".join(hits)


def test_no_committed_document_keeps_a_placeholder() -> None:
    """Placeholders like `@@T095@@`, written while a number was still being measured, never land."""
    documents = [REPO / "README.md", *DOCS.glob("*.md"), *(REPO / "figures").rglob("*.md")]
    documents += [*(REPO / "report").glob("*.tex")]
    placeholder = re.compile(r"@@\w+@@|\bTODO\b|\bXXX\b")
    hits = [
        f"{path.relative_to(REPO)}: {m.group()}"
        for path in documents
        for m in placeholder.finditer(path.read_text())
    ]
    assert not hits, "placeholders left in committed documents: " + ", ".join(hits)
