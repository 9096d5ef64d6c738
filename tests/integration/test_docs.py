"""The README and docs/ stand alone: a clone has every file they point at, and nothing outside it."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Markdown links and images ``[text](target)``, and HTML ``src``/``href`` attributes.
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|(?:src|href)=\"([^\"]+)\"")
EXTERNAL = ("http://", "https://", "mailto:", "#")


def relative_links(document: Path) -> list[str]:
    text = document.read_text()
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not t.startswith(EXTERNAL)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_document_names_no_path_outside_the_repository(document):
    text = document.read_text()

    assert "../" not in text
    assert "shared/docs" not in text


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file_in_the_repository(document):
    for target in relative_links(document):
        path = (document.parent / target.split("#")[0]).resolve()

        assert path.is_relative_to(ROOT), target
        assert path.exists(), f"{document.name} links {target}, which is not in the repository"


def test_the_readme_links_the_design_decisions():
    assert "docs/design.md" in relative_links(ROOT / "README.md")


def test_the_link_pattern_finds_markdown_and_html_links():
    text = '[a](docs/x.md) ![b](docs/y.png "title") <img src="docs/z.png"> [c](https://e.org)'

    assert [a or b for a, b in LINK.findall(text)] == [
        "docs/x.md",
        "docs/y.png",
        "docs/z.png",
        "https://e.org",
    ]
