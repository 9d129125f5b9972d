"""A fresh clone has no ../shared beside it. A test that reads ../shared must ask for the `shared` fixture (or for a
fixture that does), so that it skips there instead of failing; CI turns those skips into failures
(YOLO_REQUIRE_SHARED=1) and so never sees what a clone sees. This reads the tests and names each that reaches
../shared's paths (conftest's SHARED, DARKNET, COCO_TINY, or a module constant made of them), itself or through a
function of its module, without such a fixture."""
import ast
import glob
import os
from typing import Dict, Set

from conftest import REPO

TESTS = os.path.join(REPO, "tests")
SHARED_NAMES = {"SHARED", "DARKNET", "COCO_TINY"}
GUARDS = {"shared"}  # fixtures that skip (or, in CI, fail) without ../shared
FALLS_BACK = {  # functions that read ../shared only where it exists, and why that is safe
    "tiny_weights_file": "takes ../shared's weights if there, else downloads them as the demo does",
}


def names_in(node: ast.AST) -> Set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def is_fixture(fn: ast.FunctionDef) -> bool:
    return any("fixture" in ast.unparse(d) for d in fn.decorator_list)


def parse(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read())


def module_shared_names(tree: ast.Module) -> Set[str]:
    """SHARED_NAMES and the module constants built from them."""
    shared = set(SHARED_NAMES)
    assigns = [n for n in tree.body if isinstance(n, ast.Assign)]
    grew = True
    while grew:
        grew = False
        for node in assigns:
            targets = {t.id for t in node.targets if isinstance(t, ast.Name)}
            if names_in(node.value) & shared and not targets <= shared:
                shared |= targets
                grew = True
    return shared


def functions(tree: ast.Module) -> Dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def guarded_fixtures() -> Set[str]:
    """GUARDS and every fixture (conftest's or a test module's) that asks for one of them."""
    fixtures = {}
    for path in glob.glob(os.path.join(TESTS, "*.py")):
        fixtures.update({name: fn for name, fn in functions(parse(path)).items() if is_fixture(fn)})
    guarded = set(GUARDS)
    grew = True
    while grew:
        grew = False
        for name, fn in fixtures.items():
            if name not in guarded and {a.arg for a in fn.args.args} & guarded:
                guarded.add(name)
                grew = True
    return guarded


def unguarded(path: str, guarded: Set[str]) -> Set[str]:
    """The test functions and fixtures of one file that reach ../shared without a guard."""
    tree = parse(path)
    shared = module_shared_names(tree)
    fns = functions(tree)
    reaches = {name for name, fn in fns.items() if names_in(fn) & shared and name not in FALLS_BACK}
    grew = True
    while grew:  # through the module's own functions they call
        grew = False
        for name, fn in fns.items():
            if name not in reaches and name not in FALLS_BACK and names_in(fn) & reaches - {name}:
                reaches.add(name)
                grew = True
    found = set()
    for name in reaches:
        fn = fns[name]
        if not (name.startswith("test_") or is_fixture(fn)) or name in GUARDS:
            continue
        if not {a.arg for a in fn.args.args} & guarded:
            found.add(f"{os.path.basename(path)}::{name}")
    return found


def test_every_test_that_reads_shared_asks_for_it():
    guarded = guarded_fixtures()
    assert {"shared", "tiny_ckpt"} <= guarded
    bad = set()
    for path in sorted(glob.glob(os.path.join(TESTS, "*.py"))):
        bad |= unguarded(path, guarded)
    assert not bad, f"these read ../shared but do not ask for the `shared` fixture: {sorted(bad)}"


def test_the_check_finds_a_test_that_reads_shared_unasked(tmp_path):
    """The check itself: a test using a constant made of COCO_TINY without the fixture is found, with it not."""
    sample = tmp_path / "test_sample.py"
    sample.write_text("import os\nfrom conftest import COCO_TINY\nVAL = os.path.join(COCO_TINY, 'val2017')\n\n"
                      "def images():\n    return os.listdir(VAL)\n\n"
                      "def test_bad(tmp_path):\n    assert images()\n\n"
                      "def test_good(shared):\n    assert images()\n")
    assert unguarded(str(sample), guarded_fixtures()) == {"test_sample.py::test_bad"}
