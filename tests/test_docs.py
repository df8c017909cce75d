"""The design notes the code cites are in the repository, with every cited section."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tracked_text_files():
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in names:
        if name.endswith((".py", ".md", ".cpp", ".cu", ".h", ".cuh", ".sh", ".toml")):
            yield REPO / name


def test_every_design_citation_resolves():
    design = (REPO / "docs" / "design.md").read_text()
    sections = set(re.findall(r"^## §(\d+)", design, flags=re.M))
    cited = 0
    for path in tracked_text_files():
        for first, last in re.findall(r"docs/design\.md §(\d+)(?:-§(\d+))?", path.read_text()):
            cited += 1
            for number in filter(None, (first, last)):
                assert number in sections, f"{path.relative_to(REPO)} cites docs/design.md §{number}, which does not exist"
    assert cited > 5
