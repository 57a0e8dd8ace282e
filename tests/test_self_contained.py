"""The repository stands alone: nothing outside it is cited or needed, and every "spec §n" citation points
at a section of its own reference document (docs/official_code.md; WeCLIP+'s "Doc §n" at
docs/official_code_plus.md)."""

import os
import re

from helpers import REPO

# where the product lives (tests may look for the team's fallback fixtures, see tests/parity/conftest.py)
PRODUCT = (
    "weclip",
    "configs",
    "tools",
    "docs",
    "benchmarks",
    "README.md",
    "Makefile",
    "pyproject.toml",
)
TEXT_SUFFIXES = (".py", ".md", ".sh", ".toml", ".txt", ".yml", ".yaml", "Makefile")


def _files():
    for entry in PRODUCT:
        path = os.path.join(REPO, entry)
        if os.path.isfile(path):
            yield path
            continue
        for folder, _, names in os.walk(path):
            for name in names:
                if name.endswith(TEXT_SUFFIXES) and "__pycache__" not in folder:
                    yield os.path.join(folder, name)


def _sections(doc: str) -> set:
    """Section numbers of a markdown document: its headings ("## 4. ..." -> "4", "### 4.2 ..." -> "4.2")
    and the numbered items of a section without subsections ("## 12. ..." then "3. ..." -> "12.3")."""
    with open(os.path.join(REPO, "docs", doc), encoding="utf-8") as f:
        text = f.read()
    found = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", text, re.M))
    for major, body in re.findall(r"^## (\d+)\. [^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S):
        if not re.search(r"^### ", body, re.M):
            found |= {f"{major}.{item}" for item in re.findall(r"^(\d+)\. ", body, re.M)}
    return found


def test_nothing_outside_the_repository_is_cited():
    offenders = []
    for path in _files():
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if "../shared" in line or "shared/spec" in line or "shared/fixtures" in line:
                    offenders.append(f"{os.path.relpath(path, REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_every_spec_citation_has_its_section():
    spec, plus = _sections("official_code.md"), _sections("official_code_plus.md")
    assert {"1.1", "3.1", "4.6", "5.1", "8.1", "9.1", "12", "13.2"} <= spec
    missing = []
    pattern = re.compile(r"(spec|[Dd]oc|plus)?\s*§(\d+)(?:\.(\d+))?")
    for path in _files():
        if os.path.basename(path) in ("official_code.md", "official_code_plus.md"):
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        which, end = None, -1
        for match in pattern.finditer(text):
            prefix, major, minor = match.groups()
            # "doc §1.2, §4.1": a list goes on citing the document it started with
            listed = re.fullmatch(r"(,| and|/|;)?\s*", text[end : match.start()]) is not None
            which = prefix if prefix or not listed else which
            end = match.end()
            sections = plus if which in ("Doc", "doc", "plus") else spec
            cited = major if minor is None else f"{major}.{minor}"
            if cited not in sections:
                line = text.count("\n", 0, match.start()) + 1
                missing.append(f"{os.path.relpath(path, REPO)}:{line}: §{cited}")
    assert not missing, "citations of missing sections:\n" + "\n".join(missing)
