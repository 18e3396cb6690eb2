"""The README and docs/ stay true to the code: generated tables current, links that resolve, the
README a front page whose details live once, in docs/."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from service.settings import Settings

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
# Written by training/report.py from the manifests: checked at its generator, not here.
GENERATED_ELSEWHERE = {REPO / "docs" / "quality.md"}
LINK = re.compile(r"\]\(([^)\s]+)\)|<img src=\"([^\"]+)\"")


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prose_lines(path: Path) -> list[str]:
    """The lines outside code blocks, stripped."""
    lines, in_code = [], False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code:
            lines.append(line.strip())
    return lines


def test_training_help_files_are_rendered_from_the_parsers() -> None:
    script = load_script(REPO / "scripts" / "training_help.py")
    assert script.main(["--check"]) == 0, (
        "imagegen/training_help/ is stale: run python scripts/training_help.py"
    )


def test_settings_table_is_rendered_from_settings() -> None:
    script = load_script(REPO / "scripts" / "settings_table.py")
    text = (REPO / "docs" / "service.md").read_text()
    assert script.with_table(text, script.render_table()) == text, (
        "docs/service.md's settings table is stale: run python scripts/settings_table.py"
    )
    table = text[text.index(script.BEGIN) : text.index(script.END)]
    for name in Settings.model_fields:
        assert f"| `IMAGEGEN_{name.upper()}` |" in table


def test_settings_table_would_show_a_new_setting() -> None:
    script = load_script(REPO / "scripts" / "settings_table.py")
    rows = script.render_table().splitlines()
    assert len(rows) == len(script.HEADER) + len(Settings.model_fields)
    undescribed = [row for row in rows[len(script.HEADER) :] if row.endswith("|  |")]
    assert not undescribed, f"settings without a description: {undescribed}"


def test_performance_md_holds_exactly_what_bench_report_renders(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    assert load_script(REPO / "bench" / "report.py").main(["--out", str(out)]) == 0
    rendered = out.read_text().splitlines()
    assert rendered[0].startswith("# ")  # report.py's own title: the sections follow it
    text = (REPO / "docs" / "performance.md").read_text()
    begin, end = "<!-- bench/report.py: begin -->\n", "\n<!-- bench/report.py: end -->"
    committed = text[text.index(begin) + len(begin) : text.index(end)]
    assert committed.strip("\n") == "\n".join(rendered[2:]).strip("\n"), (
        "docs/performance.md differs from bench/report.py's sections: render and paste them"
    )


def test_readme_is_a_front_page_with_ci_test_command() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    assert ".venv/bin/python -m pytest -q" in text
    assert ".venv/bin/python -m pytest -q" in (REPO / ".ci" / "run").read_text()


def test_no_line_of_the_readme_repeats_in_docs() -> None:
    """Details live once: a README prose or table line of some length appears in no docs page."""
    docs_lines = {line for page in DOCS for line in prose_lines(page)}
    repeated = [line for line in prose_lines(README) if len(line) >= 60 and line in docs_lines]
    assert not repeated, repeated


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    missing = []
    for match in LINK.finditer(page.read_text()):
        target = (match.group(1) or match.group(2)).split("#")[0]
        if not target or "://" in target or target.startswith("mailto:"):
            continue
        if not (page.parent / target).exists():
            missing.append(target)
    assert not missing, f"{page.name} links to files not in the repository: {missing}"


HAND_WRITTEN = [README, *[p for p in DOCS if p not in GENERATED_ELSEWHERE]]


@pytest.mark.parametrize("page", HAND_WRITTEN, ids=lambda p: p.name)
def test_no_citation_of_files_outside_the_repository(page: Path) -> None:
    """DESIGN.md, DEVICE.md and STYLE.md are the team's, not ours: cite docs/design.md instead."""
    cited = re.findall(r"(?<![\w/])(DESIGN|DEVICE|STYLE)\.md", page.read_text())
    assert not cited, cited


def test_train_options_named_in_docs_exist() -> None:
    """Every `--option` a command block gives `imagegen train` is one `imagegen train --help` lists."""
    import subprocess
    import sys

    help_text = subprocess.run(
        [sys.executable, "-m", "imagegen.cli", "train", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    known = set(re.findall(r"--[a-z][a-z-]*", help_text))
    unknown = set()
    for page in [README, *DOCS]:
        command = ""
        for line in page.read_text().splitlines():
            command = command + " " + line if command else (line if "imagegen train " in line else "")
            if command and not line.rstrip().endswith("\\"):
                unknown |= set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", command.split("#")[0])) - known
                command = ""
    assert not unknown, f"options imagegen train does not have: {sorted(unknown)}"
