"""The import directions of docs/architecture.md hold: training needs no LLM, evaluation needs no training code."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "trl_crome"

# Sub-package -> sub-packages of trl_crome it must never import. `recipe` wires everything together but, as a library,
# never imports the command line.
FORBIDDEN = {
    "trainer": {"augment", "oracles", "evaluation", "cli", "experiments", "quickstart", "recipe"},
    "evaluation": {"trainer", "augment", "cli", "experiments", "quickstart", "recipe"},
    "oracles": {"trainer", "augment", "evaluation", "cli", "experiments", "quickstart", "recipe"},
    "augment": {"trainer", "cli", "experiments", "quickstart", "recipe"},
    "recipe": {"cli", "experiments", "quickstart"},
    "quickstart.py": {"cli"},
}
# `augment` uses the oracle interface and the cache, never a concrete backend.
CONCRETE_ORACLES = {"gemini", "openai_compat", "local", "make_oracle", "GeminiOracle", "OpenAICompatibleOracle"}
CONCRETE_ORACLES |= {"TransformersOracle"}


def imported_modules(path: Path) -> set[str]:
    """Names of the trl_crome modules a file imports, relative to the package (e.g. "oracles.base")."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = list(parts[: len(parts) - node.level])
                module = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("trl_crome"):
                module = node.module.removeprefix("trl_crome").lstrip(".")
            else:
                continue
            names.add(module)
            names.update(f"{module}.{alias.name}".lstrip(".") for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name.removeprefix("trl_crome.") for a in node.names if a.name.startswith("trl_crome."))
    return names


@pytest.mark.parametrize("subpackage", sorted(FORBIDDEN))
def test_import_directions(subpackage):
    violations = []
    root = PACKAGE / subpackage
    for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top in FORBIDDEN[subpackage]:
                violations.append(f"{path.relative_to(PACKAGE)} imports trl_crome.{module}")
            if subpackage == "augment" and top == "oracles" and CONCRETE_ORACLES & set(module.split(".")):
                violations.append(f"{path.relative_to(PACKAGE)} uses a concrete oracle: trl_crome.{module}")
    assert not violations, "\n".join(violations)


def test_the_checker_sees_relative_imports(tmp_path):
    assert "oracles.base" in imported_modules(PACKAGE / "augment" / "rubrics.py")
