"""The documentation's links hold: every relative link in README.md and docs/*.md names a file of the
repository, and every `#anchor` a heading of that file (GitHub's slugs); the README stays short.

Plain Python, no subprocess: it reads the Markdown files and the file tree, in well under a second.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 220

# [text](target) or ![alt](target), target up to the first space or ')' (an optional "title" follows).
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# [label]: target  (a reference-style definition)
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)[0] * 3
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        lines.append((number, line))
    return lines


def without_code_spans(line: str) -> str:
    return re.sub(r"(`+)(?:(?!\1).)+?\1", lambda m: " " * len(m.group(0)), line)


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link in a Markdown file, outside code."""
    found = []
    for number, raw in prose_lines(path.read_text(encoding="utf-8")):
        line = without_code_spans(raw)
        found += [(number, m.group(1)) for m in INLINE_LINK.finditer(line)]
        ref = REFERENCE_DEF.match(line)
        if ref:
            found.append((number, ref.group(1)))
    return found


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: the rendered text, lower case, punctuation dropped
    (letters, digits, '_', '-' and spaces stay), spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"(?<![A-Za-z0-9])_+|_+(?![A-Za-z0-9])", "", text)  # _emphasis_ markers, not snake_case
    text = text.strip().lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 ... for repeated headings."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        heading = HEADING.match(line)
        if not heading:
            continue
        slug = github_slug(heading.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the links of one Markdown file of the repository at `root`, one line per
    broken link."""
    problems = []
    for number, target in links(path):
        where = f"{path.relative_to(root)}:{number}: {target}"
        if EXTERNAL.match(target) or target.startswith("//"):
            continue  # not a file of the repository
        file_part, _, anchor = target.partition("#")
        if file_part.startswith("/"):
            problems.append(f"{where}: absolute path; link relative to the file")
            continue
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.is_relative_to(root):
            problems.append(f"{where}: points outside the repository")
        elif not linked.exists():
            problems.append(f"{where}: no such file")
        elif anchor and linked.suffix == ".md" and unquote(anchor) not in anchors(linked):
            problems.append(f"{where}: no heading #{anchor} in {linked.relative_to(root)}")
    return problems


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    problems = broken_links(path)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_readme_fits_a_screen_or_two() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, f"README.md has {len(text.splitlines())} lines"
    for command in ("./launch.sh demo", "./launch.sh test"):
        assert command in text


def test_the_checker_sees_a_broken_link(tmp_path: Path) -> None:
    """The checks above can fail: a missing file, a missing heading and a path out of the repository
    are each reported; good links and code that merely looks like a link are not."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# voc-trainer\n", encoding="utf-8")
    (tmp_path / "docs" / "training.md").write_text("# Training\n\n## Resume\n", encoding="utf-8")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# A page\n\n## The `--resume` flag (and more)\n\n"
        "[good](training.md#resume) [self](#the---resume-flag-and-more) [readme](../README.md)\n"
        "[web](https://example.org/x.md) [gone](no-such-page.md) [anchor](training.md#no-such-heading)\n"
        "[out](../../elsewhere.md) `[code](not-checked.md)`\n\n```\n[fenced](not-checked-either.md)\n```\n",
        encoding="utf-8")
    problems = broken_links(page, root=tmp_path)
    assert [p.split(": ")[1] for p in problems] == [
        "no-such-page.md", "training.md#no-such-heading", "../../elsewhere.md"], problems


@pytest.mark.parametrize("heading, slug", [
    ("Every wait has a deadline (`--hang-timeout`)", "every-wait-has-a-deadline---hang-timeout"),
    ("A SLURM job's exit code", "a-slurm-jobs-exit-code"),
    ("VOC years and 07+12", "voc-years-and-0712"),
    ("Evaluate a run's weights (`trainer.evaluate_run`)", "evaluate-a-runs-weights-trainerevaluate_run"),
    ("SLURM (a real 2-node cluster on localhost: tests/slurm_cluster.py)", "slurm-a-real-2-node-cluster-on-localhost-testsslurm_clusterpy"),
])
def test_github_slugs(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug
