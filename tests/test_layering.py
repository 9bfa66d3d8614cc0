"""The package's layering (docs/layout.md): a module imports only from its own folder, the folders listed above it,
and the root's helper modules, which import nothing from the package. Checked on the source, lazy imports
included, so an upward import fails here before it becomes an import cycle."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "rubric_rft"
LAYERS = ["rubrics", "llm", "judges", "reward", "pairwise", "rubricgen", "training", "evaluation", "testing"]
HELPERS = {"config_values", "stats", "logs", "__init__"}  # the root's modules any layer may use
TOP = {"cli"}  # may import anything; nothing imports it


def imported_modules(source: Path) -> list[tuple[int, str]]:
    """(line, module) for every `rubric_rft` import in `source`, wherever in the file it is."""
    found = []
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"), str(source))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("rubric_rft")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("rubric_rft"):
            if node.module == "rubric_rft":  # `from rubric_rft import stats`: a module; `__version__`: __init__'s
                found += [(node.lineno, "rubric_rft" if alias.name.startswith("__") else f"rubric_rft.{alias.name}")
                          for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def rank(part: str) -> float:
    """Where a top-level name of the package sits: helpers lowest, then the layers in order, the top last."""
    if part in HELPERS:
        return -1
    if part in TOP:
        return len(LAYERS)
    return LAYERS.index(part)


def upward_imports(package: Path) -> list[str]:
    """Every import in `package` of a layer above the importing module's own, as `file:line imports module`."""
    problems = []
    for source in sorted(package.rglob("*.py")):
        relative = source.relative_to(package)
        own = relative.parts[0].removesuffix(".py")
        if own not in HELPERS and own not in TOP and own not in LAYERS:
            problems.append(f"{relative}: {own} is in no layer: add it to the README's Layout and to LAYERS")
            continue
        for line, module in imported_modules(source):
            target = module.split(".")[1] if "." in module else "__init__"
            if target not in HELPERS and target not in TOP and target not in LAYERS:
                problems.append(f"{relative}:{line} imports {module}, which is in no layer")
            elif own in HELPERS and target != own or own not in TOP and rank(target) > rank(own) or (
                    target in TOP and own != target):
                problems.append(f"{relative}:{line} imports {module} from a layer above its own ({own})")
    return problems


def test_no_module_imports_from_a_layer_above_its_own():
    assert upward_imports(PACKAGE) == []


def test_a_planted_upward_import_is_reported_with_its_file_and_line(tmp_path):
    for folder, text in {"rubrics": "import json\nfrom rubric_rft.training.monitor import onset\n",
                         "training": "from rubric_rft.rubrics.format import Rubric\n"}.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "mod.py").write_text(text)
    (tmp_path / "stats.py").write_text("def lazy():\n    from rubric_rft.llm import client\n")
    (tmp_path / "extras").mkdir()
    (tmp_path / "extras" / "x.py").write_text("")
    assert upward_imports(tmp_path) == [
        "extras/x.py: extras is in no layer: add it to the README's Layout and to LAYERS",
        "rubrics/mod.py:2 imports rubric_rft.training.monitor from a layer above its own (rubrics)",
        "stats.py:2 imports rubric_rft.llm from a layer above its own (stats)",
    ]


def test_the_layout_page_lists_the_layers_in_this_order():
    layout = (PACKAGE.parent / "docs" / "layout.md").read_text(encoding="utf-8")
    listed = [line.split("/")[0].strip() for line in layout.splitlines() if line.startswith("  ") and "/ " in line
              and not line.startswith("   ")]
    assert listed[:len(LAYERS)] == LAYERS
