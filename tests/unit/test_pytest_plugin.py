"""The pytest plugin with a fake lab maker (pytester): labs made once per parameters,
reset when asked, taken down at the end whatever happened, kept with --labctl-keep."""

from __future__ import annotations

import pytest

FAKE = """
import json
import pytest

LOG = {log!r}


def note(*words):
    with open(LOG, "a") as f:
        f.write(" ".join(words) + "\\n")


class FakeLab:
    def __init__(self, name, **params):
        self.name = name
        note("up", name, json.dumps(params, sort_keys=True))

    def reset(self):
        note("reset", self.name)

    def down(self):
        note("down", self.name)


@pytest.fixture(scope="session")
def labctl_up():
    return FakeLab
"""


@pytest.fixture
def log(pytester: pytest.Pytester):
    path = pytester.path / "labs.log"
    pytester.makeconftest(FAKE.format(log=str(path)))

    def lines() -> list[str]:
        return path.read_text().splitlines() if path.exists() else []

    return lines


def test_labs_are_made_once_per_parameters_and_taken_down_at_the_end(pytester, log):
    pytester.makepyfile(
        """
        def test_a(labctl_lab):
            assert labctl_lab(nodes=3, mode="guest").name.startswith("pt")

        def test_b(labctl_lab):
            labctl_lab(mode="guest", nodes=3)

        def test_c(labctl_lab):
            labctl_lab(nodes=1, mode="remote")
        """
    )
    pytester.runpytest("--labctl-prefix=pt").assert_outcomes(passed=3)
    ups = [line.split() for line in log() if line.startswith("up ")]
    assert len(ups) == 2, log()
    first, second = ups[0][1], ups[1][1]
    assert first != second
    assert log()[-2:] == [f"down {first}", f"down {second}"]


def test_reset_only_when_marked_and_only_a_lab_an_earlier_test_had(pytester, log):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.labctl(reset=True)
        def test_first_use_needs_no_reset(labctl_lab):
            labctl_lab(nodes=2)

        def test_unmarked(labctl_lab):
            labctl_lab(nodes=2)

        @pytest.mark.labctl(reset=True)
        def test_marked(labctl_lab):
            labctl_lab(nodes=2)
        """
    )
    pytester.runpytest().assert_outcomes(passed=3)
    words = [line.split()[0] for line in log()]
    assert words == ["up", "reset", "down"], log()


def test_labs_go_down_when_tests_fail(pytester, log):
    pytester.makepyfile(
        """
        def test_fails(labctl_lab):
            labctl_lab(nodes=2)
            assert False
        """
    )
    pytester.runpytest().assert_outcomes(failed=1)
    assert [line.split()[0] for line in log()] == ["up", "down"]


def test_labs_go_down_when_the_run_is_interrupted(pytester, log):
    pytester.makepyfile(
        """
        def test_interrupted(labctl_lab):
            labctl_lab(nodes=2)
            raise KeyboardInterrupt

        def test_never_run(labctl_lab):
            labctl_lab(nodes=5)
        """
    )
    # In a process of its own: an interrupt in-process would end this run too.
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert [line.split()[0] for line in log()] == ["up", "down"]


def test_keep_leaves_the_labs_and_says_which(pytester, log):
    pytester.makepyfile(
        """
        def test_a(labctl_lab):
            labctl_lab(nodes=2)
        """
    )
    result = pytester.runpytest("--labctl-keep", "-s")
    result.assert_outcomes(passed=1)
    assert [line.split()[0] for line in log()] == ["up"]
    name = log()[0].split()[1]
    result.stdout.fnmatch_lines([f"*labctl: kept lab {name} (`labctl down {name}` removes it)*"])


def test_off_unless_used(pytester, log):
    pytester.makepyfile("def test_plain():\n    pass\n")
    pytester.runpytest().assert_outcomes(passed=1)
    assert log() == []


def test_a_name_is_refused_the_plugin_names_its_labs(pytester, log):
    pytester.makepyfile(
        """
        def test_named(labctl_lab):
            labctl_lab(nodes=2, name="mine")
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*labctl_lab names its labs itself*"])
    assert log() == []
