"""CTS's tests: which a tree enables, which CTS finds applicable on a lab, and why not.

CTS itself decides what can run: `--list-tests` builds its test list exactly as
a run does (every enabled class whose is_applicable() is true), logs "Total N
tests" and each name, and exits 0 (2.1.x cts/lab/CTSlab.py.in, cts-lab from
2.1.7). The enabled tests are read from the source statically:
- 2.1.x (cts/lab/CTStests.py): the classes of module-level
  `AllTestClasses.append(Cls)` calls;
- 2.1.7 and later (python/pacemaker/_cts/tests/): `enabled_test_classes = [...]`
  in __init__.py's test_list(), classes in the package's modules.
A test's name is the `self.name = "..."` of its __init__ (or its base's; 2.1.x's
RemoteDriver sets `self.__class__.__name__`). Not applicable = enabled minus
listed; `reason` explains each from CTS's is_applicable() rules.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

BASE_CLASS = "CTSTest"
# Class attributes CTSTest.is_applicable (2.1.x: is_applicable_common) may test.
FLAG_ATTRS = ("is_loop", "is_unsafe", "is_valgrind", "is_experimental", "is_container", "benchmark")


@dataclass(frozen=True)
class EnabledTest:
    """An enabled CTS test: its name, and the flags its class sets that CTS checks."""

    name: str
    flags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LabFacts:
    """What CTS's is_applicable() rules look at, as the lab and the CTS arguments have it."""

    cluster_nodes: int
    fencing: bool
    remoted_on_all: bool
    cts_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class NotApplicable:
    test: str
    why: str

    def to_dict(self) -> dict[str, str]:
        return {"test": self.test, "why": self.why}


# ------------------------------------------------------------------ source parsing


@dataclass
class _Class:
    bases: list[str]
    name: str | None  # a literal, or "" for self.__class__.__name__, None when unset
    flags: dict[str, bool]
    checked: set[str]  # FLAG_ATTRS its is_applicable/is_applicable_common reads


def _self_attr(node: ast.AST) -> str | None:
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    ):
        return node.attr
    return None


def _classes(texts: Iterable[str]) -> dict[str, _Class]:
    out: dict[str, _Class] = {}
    for text in texts:
        for cls in ast.parse(text).body:
            if not isinstance(cls, ast.ClassDef):
                continue
            bases = [
                b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in cls.bases
            ]
            c = _Class(bases, None, {}, set())
            for fn in cls.body:
                if not isinstance(fn, ast.FunctionDef):
                    continue
                if fn.name in ("is_applicable", "is_applicable_common"):
                    c.checked |= {a for n in ast.walk(fn) if (a := _self_attr(n)) in FLAG_ATTRS}
                if fn.name != "__init__":
                    continue
                for node in ast.walk(fn):
                    if not isinstance(node, ast.Assign) or len(node.targets) != 1:
                        continue
                    attr = _self_attr(node.targets[0])
                    value = node.value
                    if attr == "name":
                        if isinstance(value, ast.Constant) and isinstance(value.value, str):
                            c.name = value.value
                        elif isinstance(value, ast.Attribute) and value.attr == "__name__":
                            c.name = ""
                    elif attr in FLAG_ATTRS and isinstance(value, ast.Constant):
                        c.flags[attr] = bool(value.value)
            out[cls.name] = c
    return out


def _mro(classes: dict[str, _Class], name: str) -> list[str]:
    """NAME and its bases known in CLASSES, most derived first (single inheritance)."""
    chain = []
    while name in classes and name not in chain:
        chain.append(name)
        bases = [b for b in classes[name].bases if b in classes]
        if not bases:
            break
        name = bases[0]
    return chain


def _test_def(classes: dict[str, _Class], cls: str) -> EnabledTest:
    chain = _mro(classes, cls)
    name = next((classes[c].name for c in chain if classes[c].name is not None), None)
    flags: dict[str, bool] = {}
    for c in reversed(chain):
        flags.update(classes[c].flags)
    checked = classes[BASE_CLASS].checked if BASE_CLASS in classes else set(FLAG_ATTRS)
    return EnabledTest(name or cls, frozenset(f for f, on in flags.items() if on and f in checked))


def enabled_tests_ctslab(ctstests_py: str) -> list[EnabledTest]:
    """The enabled tests of a 2.1.x cts/lab/CTStests.py, in order; pure."""
    classes = _classes([ctstests_py])
    names = []
    for stmt in ast.parse(ctstests_py).body:
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "append"
            and isinstance(call.func.value, ast.Name)
            and call.func.value.id == "AllTestClasses"
            and len(call.args) == 1
            and isinstance(call.args[0], ast.Name)
        ):
            names.append(call.args[0].id)
    return [_test_def(classes, n) for n in names]


def enabled_tests_cts_lab(init_py: str, modules: Sequence[str]) -> list[EnabledTest]:
    """The enabled tests of python/pacemaker/_cts/tests (2.1.7+), in order; pure.

    INIT_PY is the package's __init__.py, MODULES the text of its other modules.
    """
    classes = _classes(modules)
    names: list[str] = []
    for node in ast.walk(ast.parse(init_py)):
        if (
            isinstance(node, ast.Assign)
            and any(
                isinstance(t, ast.Name) and t.id == "enabled_test_classes" for t in node.targets
            )
            and isinstance(node.value, ast.List)
        ):
            names = [e.id for e in node.value.elts if isinstance(e, ast.Name)]
    return [_test_def(classes, n) for n in names]


def enabled_tests(src: Path, dialect: str) -> list[EnabledTest]:
    """The enabled tests of a Pacemaker source tree in DIALECT's layout."""
    if dialect == "ctslab":
        return enabled_tests_ctslab((src / "cts/lab/CTStests.py").read_text())
    pkg = src / "python/pacemaker/_cts/tests"
    modules = [p.read_text() for p in sorted(pkg.glob("*.py")) if p.name != "__init__.py"]
    return enabled_tests_cts_lab((pkg / "__init__.py").read_text(), modules)


# ------------------------------------------------------------------ --list-tests

_TOTAL_RE = re.compile(r"(?:^|\s)Total (\d+) tests?\s*$")


def list_tests_command(argv: Sequence[str], outputfile: Path | None = None) -> list[str]:
    """ARGV (a CTS command line, the iteration count last) with --list-tests added; pure.

    OUTPUTFILE, when given, replaces the value of --outputfile (so the listing
    does not land in the run's own log).
    """
    out = list(argv)
    if outputfile is not None and "--outputfile" in out[:-1]:
        out[out.index("--outputfile") + 1] = str(outputfile)
    return [*out[:-1], "--list-tests", out[-1]]


def parse_list_tests(text: str) -> list[str] | None:
    """The test names CTS's --list-tests printed (None: no complete list); pure.

    Each line carries CTS's "%b %d %H:%M:%S<TAB>" stamp; "Total N tests" comes
    first, then N lines of one name each.
    """
    lines = [line.rsplit("\t", 1)[-1].strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if m := _TOTAL_RE.search(line):
            n = int(m.group(1))
            names = [w for w in lines[i + 1 :] if w][:n]
            if len(names) == n and all(re.fullmatch(r"[\w.-]+", w) for w in names):
                return names
            return None
    return None


# ------------------------------------------------------------------ why not


def _arg_value(args: Sequence[str], opt: str) -> str | None:
    for i, a in enumerate(args):
        if a == opt and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(opt + "="):
            return a.split("=", 1)[1]
    return None


_FLAG_REASONS = {
    # flag: (the CTS option that lets such tests run, or with --no- keeps them out; reason)
    "is_experimental": ("--experimental-tests", "an experimental test: needs --experimental-tests"),
    "is_container": ("--container-tests", "a container test: needs --container-tests"),
    "is_valgrind": ("--valgrind-tests", "a valgrind test: needs --valgrind-tests"),
    "is_unsafe": ("--no-unsafe-tests", "an unsafe test, and --no-unsafe-tests was given"),
    "is_loop": ("--no-loop-tests", "a loop test, and --no-loop-tests was given"),
}


def reason(test: EnabledTest, lab: LabFacts) -> str:
    """Why CTS's is_applicable() is false for TEST on LAB, from CTS's own rules; pure.

    Rules read in 2.1.5's cts/lab/CTStests.py and 2.1.7 to 3.0.2's
    python/pacemaker/_cts/tests/*.py; one CTS does not know gives the fallback.
    """
    args = lab.cts_args
    why: list[str] = []
    for flag, (opt, text) in _FLAG_REASONS.items():
        if flag in test.flags and ((opt in args) == opt.startswith("--no-")):
            why.append(text)
    if "--benchmark" in args and "benchmark" not in test.flags:
        why.append("not a benchmark test, and --benchmark was given")
    name, n = test.name, lab.cluster_nodes
    if name == "Bandwidth":
        why.append("CTS never runs it, its is_applicable() is always false")
    if name in ("Stonithd", "RemoteStonithd") and not lab.fencing:
        why.append("needs fencing, and the lab was made with --no-fencing")
    if name == "SplitBrain" and n <= 2:
        why.append(f"needs more than 2 cluster nodes, the lab has {n}")
    if name.startswith("Remote") and name != "RemoteLXC" and not lab.remoted_on_all:
        why.append("needs pacemaker-remoted on every cluster node")
    if name in ("RemoteMigrate", "RemoteRscFailure") and n < 3:
        why.append(f"needs 3 or more cluster nodes, the lab has {n}")
    if name.startswith("HAE") and _arg_value(args, "--schema") != "hae":
        why.append("needs the 'hae' CIB schema, --schema hae")
    if name == "RollingUpgrade":
        why.append("needs rpm-dir, current-version and previous-version, a rolling-upgrade setup")
    if name == "AddResource" and "--bsc" not in args:
        why.append("runs only in the basic sanity check, --bsc")
    if name == "Cibsecret":
        why.append("needs 2+ nodes, the first able to SSH to the others without a password")
    return " and ".join(why) or "CTS's is_applicable() returned false"


def not_applicable(
    enabled: Sequence[EnabledTest], applicable: Iterable[str], lab: LabFacts
) -> list[NotApplicable]:
    """The ENABLED tests CTS did not list as APPLICABLE, each with its reason; pure."""
    ok = set(applicable)
    return [NotApplicable(t.name, reason(t, lab)) for t in enabled if t.name not in ok]


def describe(items: Sequence[NotApplicable]) -> str:
    """One line for the user: "X (why); Y (why)"; pure."""
    return "; ".join(f"{i.test} ({i.why})" for i in items)
