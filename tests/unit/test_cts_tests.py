"""CTS's tests: enabled ones read from the source, --list-tests output, reasons.

The snippets copy the shapes of the real sources: 2.1.5's cts/lab/CTStests.py
(AllTestClasses.append after each class, some commented out, RemoteDriver
naming its subclasses by class name, flags set to 0/1 in __init__) and 2.1.7+'s
python/pacemaker/_cts/tests (enabled_test_classes in test_list(), True/False).
"""

from pathlib import Path

import pytest

from labctl import cts_tests
from labctl.cts_tests import EnabledTest, LabFacts, NotApplicable

CTSTESTS_215 = """
AllTestClasses = [ ]

class CTSTest(object):
    def __init__(self, cm):
        #self.name="the unnamed test"
        self.is_loop = 0
        self.is_unsafe = 0
        self.is_experimental = 0
        self.is_container = 0
        self.is_valgrind = 0
        self.benchmark = 0  # which tests to benchmark

    def is_applicable(self):
        return self.is_applicable_common()

    def is_applicable_common(self):
        if self.is_loop and not self.Env["loop-tests"]:
            return 0
        elif self.is_unsafe and not self.Env["unsafe-tests"]:
            return 0
        elif self.is_valgrind and not self.Env["valgrind-tests"]:
            return 0
        elif self.is_experimental and not self.Env["experimental-tests"]:
            return 0
        elif self.is_container and not self.Env["container-tests"]:
            return 0
        elif self.Env["benchmark"] and self.benchmark == 0:
            return 0
        return 1

class FlipTest(CTSTest):
    def __init__(self, cm):
        CTSTest.__init__(self,cm)
        self.name = "Flip"

AllTestClasses.append(FlipTest)

class ComponentFail(CTSTest):
    def __init__(self, cm):
        CTSTest.__init__(self,cm)
        self.name = "ComponentFail"
        self.is_unsafe = 1

AllTestClasses.append(ComponentFail)

class PartialStart(CTSTest):
    def __init__(self, cm):
        CTSTest.__init__(self,cm)
        self.name = "PartialStart"
        #self.is_unsafe = 1

AllTestClasses.append(PartialStart)

class StandbyLoopTest(CTSTest):
    def __init__(self, cm):
        CTSTest.__init__(self,cm)
        self.name = "StandbyLoop"

#AllTestClasses.append(StandbyLoopTest)

class SplitBrainTest(CTSTest):
    def __init__(self, cm):
        CTSTest.__init__(self,cm)
        self.name = "SplitBrain"
        self.is_experimental = 1

AllTestClasses.append(SplitBrainTest)

class RemoteDriver(CTSTest):
    def __init__(self, cm):
        CTSTest.__init__(self, cm)
        self.name = self.__class__.__name__

# RemoteDriver is just a base class for other tests, so it is not added to AllTestClasses

class RemoteBasic(RemoteDriver):
    def __call__(self, node):
        return 1

AllTestClasses.append(RemoteBasic)

class RemoteMigrate(RemoteDriver):
    pass

AllTestClasses.append(RemoteMigrate)
"""

INIT_218 = """
from pacemaker._cts.tests.fliptest import FlipTest
from pacemaker._cts.tests.splitbraintest import SplitBrainTest
from pacemaker._cts.tests.remotebasic import RemoteBasic

def test_list(cm, audits):
    # Note that just because a test is listed here doesn't mean it will
    # definitely be run - is_applicable is still taken into consideration.
    enabled_test_classes = [
        FlipTest,
        SplitBrainTest,
        RemoteBasic,
    ]

    result = []
    for testclass in enabled_test_classes:
        bound_test = testclass(cm)
        if bound_test.is_applicable():
            result.append(bound_test)
    return result
"""

CTSTEST_302 = """
class CTSTest:
    def __init__(self, cm):
        self.name = None
        self.benchmark = True  # which tests to benchmark
        self.is_experimental = False
        self.is_loop = False
        self.is_unsafe = False
        self.is_valgrind = False

    def is_applicable(self):
        if self.is_unsafe and not self._env["unsafe-tests"]:
            return False
        if self._env["benchmark"] and not self.benchmark:
            return False
        return True
"""

MODULES_218 = [
    CTSTEST_302,
    """
from pacemaker._cts.tests.ctstest import CTSTest

class FlipTest(CTSTest):
    def __init__(self, cm):
        CTSTest.__init__(self, cm)
        self.name = "Flip"
""",
    """
class SplitBrainTest(CTSTest):
    def __init__(self, cm):
        CTSTest.__init__(self, cm)
        self.name = "SplitBrain"
        self.is_experimental = True
        self.is_unsafe = True
""",
    """
class RemoteDriver(CTSTest):
    def __init__(self, cm):
        CTSTest.__init__(self, cm)
        self.name = "RemoteDriver"

class RemoteBasic(RemoteDriver):
    def __init__(self, cm):
        RemoteDriver.__init__(self, cm)
        self.name = "RemoteBasic"
""",
]


# ------------------------------------------------------------------ enabled tests


def test_ctslab_enabled_tests_are_the_appended_classes_in_order_with_their_names():
    defs = cts_tests.enabled_tests_ctslab(CTSTESTS_215)
    assert [d.name for d in defs] == [
        "Flip",
        "ComponentFail",
        "PartialStart",
        "SplitBrain",
        "RemoteBasic",
        "RemoteMigrate",
    ]


def test_ctslab_flags_come_from_init_and_commented_lines_count_for_nothing():
    defs = {d.name: d.flags for d in cts_tests.enabled_tests_ctslab(CTSTESTS_215)}
    assert defs["ComponentFail"] == {"is_unsafe"}
    assert defs["PartialStart"] == frozenset()
    assert defs["SplitBrain"] == {"is_experimental"}
    assert defs["RemoteBasic"] == frozenset()


def test_cts_lab_enabled_tests_are_the_enabled_test_classes_list():
    defs = cts_tests.enabled_tests_cts_lab(INIT_218, MODULES_218)
    assert [d.name for d in defs] == ["Flip", "SplitBrain", "RemoteBasic"]


def test_cts_lab_keeps_only_the_flags_its_base_class_checks():
    # 3.0.2's CTSTest.is_applicable reads is_unsafe and benchmark, not is_experimental
    defs = {d.name: d.flags for d in cts_tests.enabled_tests_cts_lab(INIT_218, MODULES_218)}
    assert defs["SplitBrain"] == {"is_unsafe", "benchmark"}
    assert defs["Flip"] == {"benchmark"}


def test_enabled_tests_reads_the_tree_of_each_layout(tmp_path: Path):
    (tmp_path / "cts/lab").mkdir(parents=True)
    (tmp_path / "cts/lab/CTStests.py").write_text(CTSTESTS_215)
    assert len(cts_tests.enabled_tests(tmp_path, "ctslab")) == 6
    pkg = tmp_path / "python/pacemaker/_cts/tests"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(INIT_218)
    for i, text in enumerate(MODULES_218):
        (pkg / f"m{i}.py").write_text(text)
    names = [d.name for d in cts_tests.enabled_tests(tmp_path, "cts-lab")]
    assert names == ["Flip", "SplitBrain", "RemoteBasic"]


# ------------------------------------------------------------------ --list-tests

STAMP = "Nov 26 12:40:01\t"


def test_parse_list_tests_reads_the_names_after_the_total():
    text = "".join(
        f"{STAMP}{line}\n"
        for line in [
            "Random seed is: 1",
            "Total 3 tests",
            "Flip",
            "Restart",
            "RemoteBasic",
        ]
    )
    assert cts_tests.parse_list_tests(text) == ["Flip", "Restart", "RemoteBasic"]


def test_parse_list_tests_of_an_empty_list_is_empty():
    assert cts_tests.parse_list_tests(f"{STAMP}Total 0 tests\n") == []


@pytest.mark.parametrize(
    "text",
    [
        "",
        f"{STAMP}Total 3 tests\n{STAMP}Flip\n",
        f"{STAMP}Traceback (most recent call last):\n",
    ],
)
def test_parse_list_tests_without_a_complete_list_is_none(text):
    assert cts_tests.parse_list_tests(text) is None


def test_list_tests_command_puts_the_option_before_the_count_and_its_own_log():
    argv = ["cts", "--outputfile", "/lab/cts.log", "-y", "--choose", "Flip", "3"]
    assert cts_tests.list_tests_command(argv, Path("/lab/list.log")) == [
        "cts",
        "--outputfile",
        "/lab/list.log",
        "-y",
        "--choose",
        "Flip",
        "--list-tests",
        "3",
    ]


# ------------------------------------------------------------------ reasons

LAB3 = LabFacts(cluster_nodes=3, fencing=True, remoted_on_all=True)


@pytest.mark.parametrize(
    ("test", "lab", "why"),
    [
        (EnabledTest("Stonithd"), LabFacts(3, False, True), "needs fencing"),
        (EnabledTest("RemoteStonithd"), LabFacts(3, False, True), "needs fencing"),
        (
            EnabledTest("SplitBrain"),
            LabFacts(2, True, True),
            "more than 2 cluster nodes, the lab has 2",
        ),
        (EnabledTest("SplitBrain", frozenset({"is_experimental"})), LAB3, "--experimental-tests"),
        (EnabledTest("RemoteBasic"), LabFacts(3, True, False), "pacemaker-remoted on every"),
        (EnabledTest("RemoteMigrate"), LabFacts(2, True, True), "3 or more cluster nodes"),
        (EnabledTest("RemoteRscFailure"), LabFacts(2, True, True), "3 or more cluster nodes"),
        (EnabledTest("Bandwidth"), LAB3, "never"),
        (EnabledTest("HAERoleTest", frozenset({"is_loop"})), LAB3, "'hae' CIB schema"),
        (EnabledTest("RollingUpgrade"), LAB3, "rpm-dir"),
        (EnabledTest("AddResource"), LAB3, "--bsc"),
        (EnabledTest("RemoteLXC", frozenset({"is_container"})), LAB3, "--container-tests"),
        (
            EnabledTest("ComponentFail", frozenset({"is_unsafe"})),
            LabFacts(3, True, True, ("--no-unsafe-tests",)),
            "--no-unsafe-tests was given",
        ),
        (
            EnabledTest("Flip"),
            LabFacts(3, True, True, ("--benchmark",)),
            "not a benchmark test",
        ),
        (EnabledTest("Flip"), LAB3, "CTS's is_applicable() returned false"),
    ],
)
def test_reason_follows_ctss_is_applicable_rules(test, lab, why):
    assert why in cts_tests.reason(test, lab)


def test_reason_gives_every_rule_that_fails():
    why = cts_tests.reason(EnabledTest("RemoteMigrate"), LabFacts(2, True, False))
    assert "pacemaker-remoted" in why and "3 or more" in why


def test_options_that_enable_a_test_silence_its_reason():
    lab = LabFacts(3, True, True, ("--experimental-tests", "--schema", "hae"))
    assert "experimental" not in cts_tests.reason(
        EnabledTest("SplitBrain", frozenset({"is_experimental"})), lab
    )
    assert "hae" not in cts_tests.reason(EnabledTest("HAEStandbyTest"), lab)


def test_not_applicable_is_enabled_minus_listed_in_order():
    enabled = [
        EnabledTest("Flip"),
        EnabledTest("Stonithd"),
        EnabledTest("RemoteBasic"),
        EnabledTest("Bandwidth"),
    ]
    got = cts_tests.not_applicable(enabled, ["Flip", "RemoteBasic"], LabFacts(3, False, True))
    assert [n.test for n in got] == ["Stonithd", "Bandwidth"]
    assert got[0].to_dict() == {
        "test": "Stonithd",
        "why": "needs fencing, and the lab was made with --no-fencing",
    }
    assert cts_tests.describe(got).startswith("Stonithd (needs fencing")


def test_describe_joins_tests_and_reasons():
    items = [NotApplicable("A", "x"), NotApplicable("B", "y")]
    assert cts_tests.describe(items) == "A (x); B (y)"
