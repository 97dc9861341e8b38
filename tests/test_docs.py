"""README.md and docs/*.md stay true to the repository.

**Links.** Every markdown link or image ``[text](target)`` outside code whose target is not an
absolute URL (``scheme:``) is resolved against the document's folder and must name an existing
file or folder. An anchor (``#heading``, alone or after a ``.md`` target) must be the GitHub slug of
a heading of that document (lower case; characters other than letters, digits, ``_``, ``-`` and
spaces dropped; spaces to ``-``; repeated headings get ``-1``, ``-2``). :data:`PENDING` names the
documents other developers are writing: links to them pass until they exist, then they are checked
like any other.

**Commands.** A command is a line of a fenced code block that starts with ``cld-train``, or an
inline code span that starts with ``cld-train `` (it may wrap across lines). It is split like a
shell line (``# comments`` dropped), and composed with Hydra's compose API from ``conf/train.yaml``
(as ``tests/conftest.py`` does), then checked by ``check_train_config``, as ``cld-train`` does
before training. Parsing rules:

- ``--help`` / ``-h``: nothing to compose, the command is skipped;
- ``-m`` / ``--multirun``: a sweep; an override with several values (``a=1,2``, ``choice(...)``,
  ``range(...)``, ``interval(...)``) is composed with its first value;
- ``...`` alone is an elision and is dropped; ``...`` inside a value (``outputs/.../last.ckpt``)
  is kept as text;
- an override whose value holds a placeholder ``<...>`` is not composed, but its key must exist
  in the composed config (``hydra.*`` keys in Hydra's own config);
- ``$HOME`` and ``$PWD`` expand to a temporary folder whose ``configs/experiment/my_recipe.yaml``
  is the README's example user config (its ``# @package _global_`` YAML block);
- any other flag (a token starting with ``-``) fails the test: teach this file about it first.

A command fails when Hydra rejects an override (unknown key, wrong type, unknown group option) or
when ``check_train_config`` rejects the composed config.

**Import rules.** The table under "Layers and import rules" in ``docs/ARCHITECTURE.md`` is checked
against the ``import`` statements (lazy ones included) of ``src/cld_lightning``.
"""

from __future__ import annotations

import ast
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from cld_lightning.app.config_check import check_train_config, register_schemas

ROOT = Path(__file__).resolve().parents[1]
register_schemas()
CONF_DIR = str(ROOT / "conf")
SRC = ROOT / "src" / "cld_lightning"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: documents being written by other developers: linked before they exist
PENDING: set[Path] = set()

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
PLACEHOLDER = re.compile(r"<[^<>]+>")
SWEEP_FLAGS = {"-m", "--multirun"}
HELP_FLAGS = {"--help", "-h"}


# ----------------------------------------------------------------------------- markdown
def strip_fences(text: str) -> str:
    """The text with fenced code blocks blanked out (line numbers kept)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading (before de-duplication)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for match in HEADING.finditer(strip_fences(text)):
        base = slug(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def link_errors(doc: Path, text: str | None = None) -> list[str]:
    """Broken relative links of one markdown document (``text`` overrides the file's content)."""
    text = doc.read_text() if text is None else text
    prose = CODE_SPAN.sub("", strip_fences(text))
    errors = []
    for match in LINK.finditer(prose):
        target = match.group(1)
        if SCHEME.match(target):
            continue  # https:, mailto: ...
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        where = f"{doc.name}: link {target!r}"
        if path_part and not dest.exists():
            if dest not in PENDING:
                errors.append(f"{where}: {dest} does not exist")
            continue
        if anchor and dest.suffix == ".md":
            dest_text = text if dest == doc else dest.read_text()
            if anchor not in anchors(dest_text):
                errors.append(f"{where}: no heading with anchor #{anchor} in {dest.name}")
    return errors


# ----------------------------------------------------------------------------- commands
@dataclass
class Command:
    doc: str
    line: int
    text: str
    tokens: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def find_commands(doc: Path, text: str | None = None) -> Iterator[Command]:
    """The ``cld-train`` commands of a document: fenced-code lines and inline code spans."""
    text = doc.read_text() if text is None else text
    name = doc.relative_to(ROOT).as_posix() if doc.is_relative_to(ROOT) else doc.name
    for block in FENCE.finditer(text):
        first = text.count("\n", 0, block.start()) + 1
        for i, line in enumerate(block.group(0).splitlines()):
            if line.strip().startswith("cld-train"):
                yield Command(name, first + i, line.strip())
    prose = strip_fences(text)
    for span in CODE_SPAN.finditer(prose):
        inner = span.group(0)[1:-1].replace("\n", " ").strip()
        if inner.startswith("cld-train "):
            yield Command(name, prose.count("\n", 0, span.start()) + 1, inner)


def user_config_dir(tmp: Path) -> Path:
    """``tmp/configs/experiment/my_recipe.yaml`` = the README's example user config."""
    readme = (ROOT / "README.md").read_text()
    blocks = [
        b.group(0).split("\n", 1)[1].rsplit("```", 1)[0]
        for b in FENCE.finditer(readme)
        if b.group(0).startswith("```yaml") and "# @package _global_" in b.group(0)
    ]
    assert blocks, "README.md lost its example user config (a ```yaml block, # @package _global_)"
    path = tmp / "configs" / "experiment" / "my_recipe.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(blocks[0])
    return tmp


def parse_command(cmd: Command, home: Path) -> tuple[list[str], list[str]] | None:
    """``(overrides to compose, keys that must exist)``; None for a ``--help`` command."""
    line = cmd.text.replace("$HOME", str(home)).replace("$PWD", str(home))
    tokens = shlex.split(line, comments=True)
    assert tokens and tokens[0] == "cld-train", cmd.text
    multirun = False
    overrides: list[str] = []
    placeholders: list[str] = []
    for token in tokens[1:]:
        if token in HELP_FLAGS:
            return None
        if token in SWEEP_FLAGS:
            multirun = True
        elif token == "...":
            continue
        elif token.startswith("-"):
            raise AssertionError(f"{cmd.id}: tests/test_docs.py does not know the flag {token!r}")
        elif PLACEHOLDER.search(token.partition("=")[2]):
            placeholders.append(token.partition("=")[0].lstrip("+~"))
        else:
            overrides.append(token)
    if multirun:
        overrides = [first_sweep_value(o) for o in overrides]
    return overrides, placeholders


def first_sweep_value(override: str) -> str:
    """``key=a,b`` / ``key=choice(a,b)`` / ``key=range(...)`` -> ``key=<first value>``."""
    parsed = OverridesParser.create().parse_overrides([override])[0]
    if not parsed.is_sweep_override():
        return override
    first = next(iter(parsed.sweep_string_iterator()))
    return f"{parsed.get_key_element()}={first}"


def compose_command(overrides: list[str], placeholders: list[str], out: Path) -> DictConfig:
    """Compose as ``cld-train`` would, check it as ``cld-train`` does; return the config."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(
                config_name="train",
                overrides=[*overrides, f"paths.output_dir={out}"],
                return_hydra_config=True,
            )
        HydraConfig().set_config(cfg)
        for key in placeholders:
            assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", (
                f"unknown key {key!r} (its value is a placeholder)"
            )
        check_train_config(cfg)
        return cfg
    finally:
        GlobalHydra.instance().clear()


COMMANDS = [c for doc in DOCS for c in find_commands(doc)]


def test_docs_hold_commands_and_links() -> None:
    """The collection above found what it should (a regex gone wrong would check nothing)."""
    assert sum(c.doc == "README.md" for c in COMMANDS) >= 15
    assert any(c.text.startswith("cld-train -m ") for c in COMMANDS)
    readme = (ROOT / "README.md").read_text()
    assert len(LINK.findall(CODE_SPAN.sub("", strip_fences(readme)))) >= 15


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    assert link_errors(doc) == []


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c.id)
def test_cld_train_command_composes(cmd: Command, tmp_path: Path) -> None:
    parsed = parse_command(cmd, user_config_dir(tmp_path))
    if parsed is None:
        return  # --help
    try:
        compose_command(*parsed, tmp_path / "run")
    except Exception as err:  # noqa: BLE001 - report which command, with Hydra's message
        pytest.fail(f"{cmd.id}: `{cmd.text}` does not compose: {err}")


def test_checker_catches_broken_links_and_bad_keys(tmp_path: Path) -> None:
    """The rules above fail where they should (a checker that passes everything checks nothing)."""
    doc = ROOT / "docs" / "_example.md"
    text = (
        "# Title\n\n## A section: with `code`\n\n"
        "[ok](../README.md) [ok](#a-section-with-code) [web](https://example.org/x)\n"
        "[gone](NOPE.md) [bad anchor](#nope) [bad anchor](../README.md#nope)\n"
        "`[not a link](NOPE2.md)`\n\n```bash\n[not a link](NOPE3.md)\ncld-train cld.wieght=2\n```\n"
        "and `cld-train -m cld.weight=0.5,1 cld.num_clusters=<k>\ntrainer.max_epochs=2 ...`\n"
    )
    errors = link_errors(doc, text)
    assert len(errors) == 3, errors
    assert "NOPE.md" in errors[0] and "#nope" in errors[1] and "README.md" in errors[2]
    bad, sweep = list(find_commands(doc, text))
    home = user_config_dir(tmp_path)
    with pytest.raises(Exception, match="wieght"):
        compose_command(*parse_command(bad, home), tmp_path / "run")
    overrides, placeholders = parse_command(sweep, home)
    assert overrides == ["cld.weight=0.5", "trainer.max_epochs=2"]
    assert placeholders == ["cld.num_clusters"]
    cfg = compose_command(overrides, placeholders, tmp_path / "run")
    assert cfg.cld.weight == 0.5 and cfg.trainer.max_epochs == 2
    with pytest.raises(AssertionError, match="cld.nope"):
        compose_command([], ["cld.nope"], tmp_path / "run")
    with pytest.raises(Exception, match="tempreature"):  # rejected by check_train_config
        compose_command(["+method.tempreature=0.1"], [], tmp_path / "run")
    assert first_sweep_value("cld.num_clusters=choice(10,20)") == "cld.num_clusters=10"
    assert parse_command(Command("x", 1, "cld-train --help"), home) is None


# ----------------------------------------------------------------------------- import rules
def layer_table() -> dict[str, tuple[set[str], set[str]]]:
    """``{package: (may import from the project, never imports)}`` from docs/ARCHITECTURE.md."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("## Layers and import rules", 1)[1].split("\n## ", 1)[0]
    table = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].isdigit():
            names = [re.findall(r"`([^`]+)`", c) for c in cells[1:]]
            for package in names[0]:  # a row may name several modules that share one rule
                table[package] = (set(names[1]), set(names[2]))
    return table


def imports_of(package: str) -> dict[str, set[str]]:
    """``{imported top-level name or cld_lightning.<name>: files}`` of a project package or module."""
    found: dict[str, set[str]] = {}
    pkg_dir = SRC / package
    files = sorted(pkg_dir.rglob("*.py")) if pkg_dir.is_dir() else [SRC / f"{package}.py"]
    for path in files:
        module = path.relative_to(SRC.parent).with_suffix("").parts
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = module[: len(module) - node.level]
                    base = ".".join([*parent, base] if base else parent)
                names = (
                    [base]
                    if base != "cld_lightning"
                    else [f"cld_lightning.{a.name}" for a in node.names]
                )
            for name in names:
                parts = name.split(".")
                key = (
                    f"cld_lightning.{parts[1]}"
                    if parts[0] == "cld_lightning" and len(parts) > 1
                    else parts[0]
                )
                found.setdefault(key, set()).add(path.relative_to(SRC).as_posix())
    return found


def test_architecture_import_rules_hold() -> None:
    table = layer_table()
    on_disk = {
        p.stem if p.is_file() else p.name
        for p in SRC.iterdir()
        if (p.suffix == ".py" or (p / "__init__.py").is_file())
    }
    assert on_disk - set(table) == set(), "packages or root modules without a row in the table"
    problems = []
    for package, (allowed, never) in table.items():
        for name, files in imports_of(package).items():
            if name.startswith("cld_lightning."):
                target = name.split(".", 1)[1]
                if target != package and target not in allowed:
                    problems.append(f"{package} imports {target} ({', '.join(sorted(files))})")
            elif name in never:
                problems.append(f"{package} imports {name} ({', '.join(sorted(files))})")
    assert problems == [], "docs/ARCHITECTURE.md's import rules are broken:\n" + "\n".join(problems)


def app_import_graph() -> dict[str, set[str]]:
    """``{app module: app modules it imports (lazy imports included)}``."""
    graph: dict[str, set[str]] = {}
    for path in sorted((SRC / "app").glob("*.py")):
        found = graph.setdefault(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "cld_lightning.app."
            ):
                found.add(node.module.split(".")[2])
            elif isinstance(node, ast.ImportFrom) and node.module == "cld_lightning.app":
                found.update(a.name for a in node.names)
    return graph


def import_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of ``graph`` as a path (first node repeated at the end), or [] when none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_app_modules_import_each_other_without_a_circle() -> None:
    graph = app_import_graph()
    assert {"train", "evaluate", "checkpoints", "config_check", "build", "resume"} <= set(graph)
    assert import_cycle(graph) == []
    # the checker finds a circle where there is one (the one this layout removed)
    old = {"build": {"config_check"}, "config_check": {"resume"}, "resume": {"build"}}
    assert import_cycle(old) == ["build", "config_check", "resume", "build"]
