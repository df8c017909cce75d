"""The documentation holds together: the design notes the code cites exist with every cited section, every
relative link of README.md and docs/ resolves (file and heading), and every command and program shown
parses: shell blocks as bash, each ``hapruned`` command against the real parser, each ``make`` target,
script and test file named exists, each Python block compiles."""

import re
import shlex
from pathlib import Path

import pytest

import processes
from hapruned.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# programs the pages show that are not hapruned's (installers, Ray's and TensorBoard's own commands, the shell)
OTHER_PROGRAMS = {"pip", "ray", "tensorboard", "export", "cd", "git", "sudo", "apt-get", ".", "source", "deactivate",
                  "python3", "nvidia-smi", "taskset", "cat", "rm", "kill"}


def tracked_text_files():
    names = processes.run(["git", "ls-files"], timeout=60, cwd=REPO).stdout.split()
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


def blocks(page: Path, language: str) -> list[str]:
    """The fenced code blocks of ``language`` in a Markdown page."""
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), flags=re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than - and _ dropped, spaces as -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)  # a '#' in a code block is no heading
    return {slug(heading) for heading in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def broken_links(page: Path) -> list[str]:
    """The relative links of a page whose file, or heading in that file, does not exist."""
    broken = []
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
            broken.append(f"{target} (no such heading in {linked.name})")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    assert not broken_links(page), f"{page.relative_to(REPO)} links to what does not exist"


def commands(block: str) -> list[list[str]]:
    """The simple commands of a shell block: continuation lines joined, comments dropped, split at ; & | &&."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split, lexer.commenters = True, "#"
        words = []
        for token in [*lexer, ";"]:
            if set(token) <= set(";&|"):
                if words:
                    commands.append(words)
                words = []
            else:
                words.append(token)
    return commands


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), flags=re.M))


def check_command(words: list[str]) -> None:
    """The command parses: hapruned's parser accepts it, the make target, script or file exists."""
    while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value before the program
        words = words[1:]
    program, args = words[0], words[1:]
    if program in ("python", "python3") and args[:2] == ["-m", "hapruned"]:
        program, args = "hapruned", args[2:]
    if program == "hapruned":
        try:
            build_parser().parse_args(args)
        except SystemExit as exit_:
            assert exit_.code == 0, f"`hapruned {' '.join(args)}` does not parse"
    elif program == "make":
        missing = {arg for arg in args if "=" not in arg and not arg.startswith("-")} - make_targets()
        assert not missing, f"`make {' '.join(args)}`: the Makefile has no target {', '.join(sorted(missing))}"
    elif program in ("python", "python3") and args[:2] == ["-m", "pytest"]:
        assert all((REPO / arg.split("::")[0]).exists() for arg in args[2:] if not arg.startswith("-")), words
    elif program in ("python", "python3") and args and not args[0].startswith("-"):
        assert (REPO / args[0]).is_file(), f"`{' '.join(words)}`: no such script"
    elif "/" in program:
        assert (REPO / program).is_file(), f"`{' '.join(words)}`: no such program in the repository"
    else:
        assert program in OTHER_PROGRAMS, f"`{' '.join(words)}`: unknown program {program!r}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_shown_parses(page):
    for block in blocks(page, "bash"):
        result = processes.run(["bash", "-n"], timeout=60, input=block)
        assert result.returncode == 0, f"not bash: {result.stderr}\n{block}"
        for words in commands(block):
            check_command(words)
    for block in blocks(page, "python"):
        compile(block, f"{page.name}, a python block", "exec")


def test_the_checks_catch_what_they_look_for(tmp_path):
    """A command that does not parse, a missing make target or script, a dead link: each is caught."""
    for words in (["hapruned", "train", "--no-such-flag"], ["hapruned", "nosuchcommand"], ["make", "nosuchtarget"],
                  ["tools/no_such_script.sh"], ["frobnicate", "--all"]):
        with pytest.raises(AssertionError):
            check_command(words)
    check_command(["hapruned", "demo", "--help"])
    assert commands("a --x 1 && b # c\nd \\\n  e | f; g &") == [["a", "--x", "1"], ["b"], ["d", "e"], ["f"], ["g"]]
    assert slug("The paper's own budget (`--preset paper-budget`)") == "the-papers-own-budget---preset-paper-budget"
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# A heading\n")
    page.write_text("[a](other.md#a-heading) [b](missing.md) [c](other.md#no-heading) [d](#here)\n## Here\n"
                    "```bash\n# [e](not-a-link.md)\n```\n")
    assert broken_links(page) == ["missing.md (no such file)", "other.md#no-heading (no such heading in other.md)"]
