"""CTS: command lines in each dialect, and the summary parser.

The sample output below is CTS 2.1.5's own: its message lines were printed by
the 2.1.5 code itself (Scenario.summarize with stub tests, and LogFactory.log
for the header and progress lines), from a tree prepared by labctl.cts:
- cts/lab/logging.py:16 `TimeFormat = "%b %d %H:%M:%S\\t"`; :60 stderr lines are
  stamp + message; :85 output-file lines are stamp + hostname + " " + message,
  and only the file receives debug lines ("debug: ...").
- cts/lab/CTSlab.py.in:122 ">>>>>>>>>>>>>>>> BEGINNING N TESTS" (stripped).
- cts/lab/CTSscenarios.py:162 "Running test NAME".ljust(35) + " (NODE) ".ljust(15)
  + "[" + N.rjust(3) + "]".
- cts/lab/CTStests.py:130 "Test NAME".ljust(35) + " FAILED: reason".
- cts/lab/CTSscenarios.py:217-238 summarize(): "****************",
  "Overall Results:" + repr(Stats) (Stats starts as {success, failure, BadNews,
  skipped}), "****************", "Test Summary", per test
  ("Test %s: " % name).ljust(25) + " " + repr({calls, failure, skipped,
  auditfail}), debug "Detailed Results" with the full per-test dicts, and
  "<<<<<<<<<<<<<<<< TESTS COMPLETED".
- cts/lab/CTS.py:90-97 the exit status: the failure count, else 1 when
  success != requested iterations, else 0.
"""

import shlex
from pathlib import Path

import pytest

from labctl import cts
from labctl.errors import UsageError

SRC = Path("/var/tmp/cts/pacemaker-2.1.5-1+deb12u1")
OUT = Path("/var/lib/labctl/labs/demo/cts.log")
NODES = ["demo-c1", "demo-c2", "demo-c3"]
STAMP = "Nov 25 21:34:41\t"

TEST_NAMES = [
    "Flip",
    "Restart",
    "Stonithd",
    "StartOnebyOne",
    "SimulStart",
    "SimulStop",
    "StopOnebyOne",
    "RestartOnebyOne",
    "PartialStart",
    "Standby",
    "MaintenanceMode",
    "ResourceRecover",
    "ComponentFail",
    "SplitBrain",
    "Reattach",
    "SpecialTest1",
    "NearQuorumPoint",
]
RAN = {"Flip", "ResourceRecover", "Standby", "ComponentFail", "NearQuorumPoint"}

RUN = [
    ">>>>>>>>>>>>>>>> BEGINNING 5 TESTS",
    "Stack:                  corosync 2+ (crm-corosync)",
    "Scenario:               Random Test Execution",
    "Random Seed:            42",
    "Base IP for resources:  10.213.1.200",
    "Running test Flip                   (demo-c2)     [  1]",
    "Running test ResourceRecover        (demo-c1)     [  2]",
    "Test ResourceRecover                FAILED: Resource rsc_demo-c1 not recovered",
    "BadNews: pacemaker-controld[1234]: error: Result of monitor operation for rsc_demo-c1 "
    "on demo-c1: not running",
    "Running test Standby                (demo-c3)     [  3]",
    "Running test ComponentFail          (demo-c1)     [  4]",
    "Running test NearQuorumPoint        (demo-c2)     [  5]",
]


def _summary(stats: str, per_test: dict[str, tuple[int, int, int, int]]) -> list[str]:
    lines = ["****************", f"Overall Results:{stats}", "****************", "Test Summary"]
    for name in TEST_NAMES:
        c, f, s, a = per_test.get(name, (0, 0, 0, 0))
        lines.append(
            f"Test {name}: ".ljust(25)
            + f" {{'calls': {c}, 'failure': {f}, 'skipped': {s}, 'auditfail': {a}}}"
        )
    return [*lines, "<<<<<<<<<<<<<<<< TESTS COMPLETED"]


FAILED_RUN = RUN + _summary(
    "{'success': 4, 'failure': 1, 'BadNews': 1, 'skipped': 0}",
    {n: (1, int(n == "ResourceRecover"), 0, 0) for n in RAN},
)


def _stderr(lines: list[str]) -> str:
    return "".join(f"{STAMP}{line}\n" for line in lines)


def _outputfile(lines: list[str]) -> str:
    out = [f"{STAMP}vm {line}" for line in lines]
    # The file also gets summarize()'s debug block, just before TESTS COMPLETED;
    # its (made-up) numbers must not leak into the parsed summary.
    detailed = [f"{STAMP}vm debug: Detailed Results"] + [
        f"{STAMP}vm debug: " + f"Test {n}: ".ljust(25) + " {'calls': 9, 'success': 9, "
        "'failure': 9, 'skipped': 0, 'auditfail': 0}"
        for n in TEST_NAMES
    ]
    return "\n".join(out[:-1] + detailed + out[-1:]) + "\n"


# ------------------------------------------------------------------ versions


@pytest.mark.parametrize(
    ("version", "upstream", "dialect"),
    [
        ("2.1.5-1+deb12u1", (2, 1, 5), "ctslab"),
        ("1:2.1.5-1", (2, 1, 5), "ctslab"),
        ("2.0.5-2", (2, 0, 5), "ctslab"),
        ("2.1.6-1", (2, 1, 6), "ctslab"),
        ("2.1.7-1", (2, 1, 7), "cts-lab-2.1.7"),
        ("2.1.8-1~bpo12+1", (2, 1, 8), "cts-lab"),
        ("3.0.0~rc3-1", (3, 0, 0), "cts-lab"),
        ("3.0.1-1", (3, 0, 1), "cts-lab"),
        ("3.0.2-1", (3, 0, 2), "cts-lab-fencing"),
        ("3.1.0", (3, 1, 0), "cts-lab-fencing"),
    ],
)
def test_versions_map_to_their_dialect(version, upstream, dialect):
    assert cts.upstream_version(version) == upstream
    assert cts.cts_dialect(version) == dialect


def test_a_version_that_is_not_one_is_a_usage_error():
    with pytest.raises(UsageError):
        cts.upstream_version("latest")


@pytest.mark.parametrize(
    ("version", "suite"),
    [
        ("2.1.5-1+deb12u1", "bookworm"),
        ("2.0.5-2+deb11u1", "bullseye"),
        ("2.1.8-1~bpo12+1", "bookworm-backports"),
        ("2.1.5-1", None),
    ],
)
def test_the_debian_suite_comes_from_the_version_when_it_says(version, suite):
    assert cts.debian_suite(version) == suite


def test_source_suites_cover_point_release_updates_and_security():
    assert cts.source_suites("2.1.5-1+deb12u1", "trixie") == [
        "bookworm",
        "bookworm-updates",
        "bookworm-security",
    ]
    assert cts.source_suites("2.1.5-1", "bookworm")[0] == "bookworm"
    assert cts.source_suites("2.1.8-1~bpo12+1", "bookworm")[-1] == "bookworm-backports"
    # trixie's own version names no release: the nodes' image's suite is used.
    assert cts.source_suites("3.0.0-2", "trixie") == ["trixie", "trixie-updates", "trixie-security"]


def test_deb_src_list_has_one_deb_src_line_per_source():
    text = cts.deb_src_list(
        [cts.AptSource("http://mirror.invalid/debian", "bookworm")], "/k.gpg"
    ) + cts.deb_src_list([cts.AptSource("http://sec.invalid/d", "bookworm-security")], None)
    assert text.splitlines() == [
        "deb-src [signed-by=/k.gpg] http://mirror.invalid/debian bookworm main",
        "deb-src http://sec.invalid/d bookworm-security main",
    ]


def test_apt_options_keep_everything_private_to_the_workdir():
    opts = cts.apt_options(Path("/w"))
    values = opts[1::2]
    assert opts[0::2] == ["-o"] * len(values)
    assert "Dir::Etc::SourceList=/w/apt/sources.list" in values
    assert "Dir::Etc::SourceParts=/dev/null" in values
    assert "Dir::State::Lists=/w/apt/lists" in values
    assert "Dir::Cache=/w/apt/cache" in values


# ------------------------------------------------------------------ command


def _cmd(version: str, **kw) -> list[str]:
    args = {
        "iterations": 5,
        "seed": 42,
        "test_ip_base": "10.213.1.200",
        "outputfile": OUT,
        "fencing_agent": "fence_xvm",
        "fencing_params": {"pcmk_host_list": "all", "delay": "0"},
        "extra": [],
    }
    args.update(kw)
    return cts.cts_command(version, SRC, NODES, **args)


def test_cts_2_1_5_command_is_ctslab_with_stonith_options():
    assert _cmd("2.1.5-1+deb12u1", extra=["--no-unsafe-tests"]) == [
        f"{SRC}/cts/lab/CTSlab.py",
        "--nodes",
        "demo-c1 demo-c2 demo-c3",
        "--stack",
        "corosync",
        "--outputfile",
        str(OUT),
        "--clobber-cib",
        "--populate-resources",
        "--test-ip-base",
        "10.213.1.200",
        "--stonith-type",
        "fence_xvm",
        "--stonith-args",
        "pcmk_host_list=all,delay=0",
        "--seed",
        "42",
        "--set",
        "LogWatcher=journal",
        "-y",
        "--no-unsafe-tests",
        "5",
    ]


_COMMON = [
    "--outputfile",
    str(OUT),
    "--clobber-cib",
    "--populate-resources",
    "--test-ip-base",
    "10.213.1.200",
]
_STONITH = ["--stonith-type", "fence_xvm", "--stonith-args", "pcmk_host_list=all,delay=0"]
_CTS_LAB = ["/usr/bin/env", f"PYTHONPATH={SRC}/python", f"{SRC}/cts/cts-lab"]
_NODES = ["--nodes", "demo-c1 demo-c2 demo-c3"]
_SEED = ["--seed", "42"]


@pytest.mark.parametrize(
    ("version", "argv"),
    [
        (
            "2.1.6-1",
            [
                f"{SRC}/cts/lab/CTSlab.py",
                *_NODES,
                "--stack",
                "corosync",
                *_COMMON,
                *_STONITH,
                *_SEED,
                "--set",
                "LogWatcher=journal",
                "-y",
                "5",
            ],
        ),
        # 2.1.7 takes `-L journal` for a log file name and ignores LogWatcher=journal
        (
            "2.1.7-1",
            [*_CTS_LAB, *_NODES, "--stack", "corosync", *_COMMON, *_STONITH, *_SEED, "-y", "5"],
        ),
        (
            "2.1.8-1",
            [
                *_CTS_LAB,
                *_NODES,
                "--stack",
                "corosync",
                *_COMMON,
                *_STONITH,
                *_SEED,
                "-L",
                "journal",
                "-y",
                "5",
            ],
        ),
        (
            "3.0.1-1",
            [
                *_CTS_LAB,
                *_NODES,
                "--stack",
                "corosync",
                *_COMMON,
                *_STONITH,
                *_SEED,
                "-L",
                "journal",
                "-y",
                "5",
            ],
        ),
        (
            "3.0.2-1",
            [
                *_CTS_LAB,
                *_NODES,
                *_COMMON,
                "--fencing-agent",
                "fence_xvm",
                "--fencing-params",
                "pcmk_host_list=all delay=0",
                *_SEED,
                "-L",
                "journal",
                "-y",
                "5",
            ],
        ),
    ],
)
def test_each_dialect_boundary_gives_its_own_command_line(version, argv):
    assert _cmd(version) == argv


def test_cts_2_1_without_fencing_says_stonith_no():
    argv = _cmd("2.1.5-1+deb12u1", fencing_agent=None, fencing_params={})
    i = argv.index("--stonith")
    assert argv[i + 1] == "no"
    assert "--stonith-type" not in argv and "--stonith-args" not in argv


def test_cts_2_1_fencing_without_params_has_no_stonith_args():
    argv = _cmd("2.1.5-1+deb12u1", fencing_params={})
    assert argv[argv.index("--stonith-type") + 1] == "fence_xvm"
    assert "--stonith-args" not in argv


def test_cts_2_1_cannot_pass_a_parameter_holding_a_comma():
    with pytest.raises(UsageError, match="comma"):
        _cmd("2.1.5-1+deb12u1", fencing_params={"pcmk_host_list": "a,b"})


def test_fencing_params_need_an_agent():
    with pytest.raises(UsageError):
        _cmd("2.1.5-1+deb12u1", fencing_agent=None)


def test_cts_3_0_2_command_is_cts_lab_with_fencing_options():
    argv = _cmd(
        "3.0.2-1",
        fencing_params={"pcmk_host_map": "remote-demo-c1:demo-c1;x:y", "pcmk_host_list": "a b"},
    )
    assert argv[:3] == ["/usr/bin/env", f"PYTHONPATH={SRC}/python", f"{SRC}/cts/cts-lab"]
    assert "--stack" not in argv and "--stonith-type" not in argv and "--set" not in argv
    assert argv[argv.index("--fencing-agent") + 1] == "fence_xvm"
    params = argv[argv.index("--fencing-params") + 1]
    # cts-lab shlex-splits the value: each NAME=VALUE comes back whole
    assert shlex.split(params) == ["pcmk_host_map=remote-demo-c1:demo-c1;x:y", "pcmk_host_list=a b"]
    assert argv[argv.index("-L") + 1] == "journal"
    assert argv[-2:] == ["-y", "5"]


def test_cts_3_without_fencing_says_disable_fencing():
    argv = _cmd("3.0.2-1", fencing_agent=None, fencing_params={})
    assert "--disable-fencing" in argv and "--fencing-agent" not in argv


def test_cts_lab_before_3_0_2_keeps_stack_and_stonith_options():
    argv = _cmd("3.0.1-1")
    assert argv[2] == f"{SRC}/cts/cts-lab"
    assert argv[argv.index("--stack") + 1] == "corosync"
    assert argv[argv.index("--stonith-args") + 1] == "pcmk_host_list=all,delay=0"
    assert argv[argv.index("-L") + 1] == "journal"


@pytest.mark.parametrize("version", ["2.1.5-1+deb12u1", "2.1.7-1", "3.0.1-1", "3.0.2-1"])
def test_every_dialect_has_the_fixed_options(version):
    argv = _cmd(version, extra=["--once"])
    for opt in ("--clobber-cib", "--populate-resources", "-y"):
        assert opt in argv
    assert argv[argv.index("--nodes") + 1] == "demo-c1 demo-c2 demo-c3"
    assert argv[argv.index("--outputfile") + 1] == str(OUT)
    assert argv[argv.index("--test-ip-base") + 1] == "10.213.1.200"
    assert argv[argv.index("--seed") + 1] == "42"
    assert argv[-2:] == ["--once", "5"]


def test_no_seed_and_auto_logs_leave_the_options_out():
    for version in ("2.1.5-1+deb12u1", "2.1.7-1", "3.0.2-1"):
        argv = _cmd(version, seed=None, log_source="auto")
        assert "--seed" not in argv and "--set" not in argv and "-L" not in argv


@pytest.mark.parametrize(
    "kw",
    [
        {"iterations": 0},
        {"test_ip_base": "not-an-ip"},
        {"log_source": "syslog"},
    ],
)
def test_bad_command_arguments_are_usage_errors(kw):
    with pytest.raises(UsageError):
        _cmd("2.1.5-1+deb12u1", **kw)


def test_node_names_with_spaces_are_refused():
    with pytest.raises(UsageError):
        cts.cts_command(
            "2.1.5-1+deb12u1",
            SRC,
            ["a b"],
            iterations=1,
            seed=None,
            test_ip_base="10.0.0.1",
            outputfile=OUT,
            fencing_agent=None,
            fencing_params={},
        )


def test_test_ip_addresses_start_after_the_base():
    assert cts.test_ip_addresses("10.213.1.200", 3) == [
        "10.213.1.201",
        "10.213.1.202",
        "10.213.1.203",
        "10.213.1.204",
        "10.213.1.205",
    ]
    assert len(cts.test_ip_addresses("10.213.1.200", 2, have_systemd=False)) == 5


def test_cts_exerciser_is_the_first_address_not_127_0_0_1_else_the_name():
    assert cts.cts_exerciser("vm", ["127.0.0.1"]) == "vm"
    assert cts.cts_exerciser("host", ["127.0.0.1", "192.0.2.5"]) == "192.0.2.5"
    assert cts.cts_exerciser("host", ["127.0.1.1"]) == "127.0.1.1"


def test_ssh_wrapper_puts_the_options_before_ctss_own():
    text = cts.ssh_wrapper("/usr/bin/ssh", ["-i", "/lab/id key", "-o", "BatchMode=yes"])
    assert text == "#!/bin/sh\nexec /usr/bin/ssh -i '/lab/id key' -o BatchMode=yes \"$@\"\n"


# ------------------------------------------------------------------ node files

CTS_SUPPORT = """#!/bin/sh
UNIT_DIR="/lib/systemd/system"
RUNTIME_UNIT_DIR="/run/systemd/system"
LIBEXEC_DIR="/usr/lib/pacemaker"
INIT_DIR="/etc/init.d"
PCMK__FENCE_BINDIR="/usr/sbin"
DATA_DIR="/usr/share/pacemaker/tests/cts"
"""


def _tree(tmp_path: Path, support: str = CTS_SUPPORT) -> Path:
    for rel in (
        "cts/lab/CTSlab.py",
        "cts/lab/CTS.py",
        "cts/lab/cts-log-watcher",
        "cts/support/LSBDummy",
        "cts/support/fence_dummy",
        "cts/support/pacemaker-cts-dummyd",
        "cts/support/pacemaker-cts-dummyd@.service",
        "cts/support/cts.conf",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "cts/support/cts-support").write_text(support)
    (tmp_path / "cts/cts").symlink_to("lab")
    return tmp_path


def test_node_files_go_where_the_configured_cts_support_looks(tmp_path):
    src = _tree(tmp_path)
    got = {(str(f.relative_to(src)), dest, mode) for f, dest, mode in cts.node_files(src)}
    assert got == {
        ("cts/support/cts-support", "/usr/lib/pacemaker/cts-support", 0o755),
        ("cts/lab/cts-log-watcher", "/usr/lib/pacemaker/cts-log-watcher", 0o755),
        ("cts/support/LSBDummy", "/usr/share/pacemaker/tests/cts/LSBDummy", 0o755),
        ("cts/support/fence_dummy", "/usr/share/pacemaker/tests/cts/fence_dummy", 0o755),
        (
            "cts/support/pacemaker-cts-dummyd",
            "/usr/share/pacemaker/tests/cts/pacemaker-cts-dummyd",
            0o755,
        ),
        (
            "cts/support/pacemaker-cts-dummyd@.service",
            "/usr/share/pacemaker/tests/cts/pacemaker-cts-dummyd@.service",
            0o644,
        ),
        ("cts/support/cts.conf", "/usr/share/pacemaker/tests/cts/cts.conf", 0o644),
    }
    assert cts.check_tree(src, "ctslab") == []


def test_check_tree_catches_an_empty_unit_dir_and_a_wrong_dialect(tmp_path):
    src = _tree(tmp_path, CTS_SUPPORT.replace('"/lib/systemd/system"', '""'))
    problems = cts.check_tree(src, "cts-lab")
    assert any("cts/cts-lab" in p for p in problems)
    assert any("UNIT_DIR" in p for p in problems)


@pytest.mark.parametrize(
    ("env_text", "dialect"),
    [
        ('parser.add_argument("-L", "--logfile")\nif args.logfile:\n', "cts-lab-2.1.7"),
        ('if args.logfile == "journal":\n', "cts-lab"),
        ('if args.logfile == "journal":\n"--fencing-agent"\n', "cts-lab-fencing"),
    ],
)
def test_check_tree_tells_2_1_7_from_2_1_8_by_its_journal_option(tmp_path, env_text, dialect):
    src = _tree(tmp_path)
    (src / "cts/cts-lab").write_text("x")
    env = src / "python/pacemaker/_cts/environment.py"
    env.parent.mkdir(parents=True)
    env.write_text(env_text)
    assert cts.check_tree(src, dialect) == []
    others = {"cts-lab-2.1.7", "cts-lab", "cts-lab-fencing"} - {dialect}
    for other in others:
        assert any("disagrees" in p for p in cts.check_tree(src, other))


# ------------------------------------------------------------------ summary


def test_parse_summary_of_a_run_with_one_failure_on_stderr():
    s = cts.parse_summary(_stderr(FAILED_RUN))
    assert s.found and s.completed
    assert (s.requested, s.success, s.failure, s.bad_news, s.skipped) == (5, 4, 1, 1, 0)
    assert [t.name for t in s.tests] == TEST_NAMES
    rr = next(t for t in s.tests if t.name == "ResourceRecover")
    assert (rr.calls, rr.failure, rr.passed) == (1, 1, 0)
    assert sum(t.calls for t in s.tests) == 5
    assert sum(t.passed for t in s.tests) == 4
    assert not s.ok


def test_parse_summary_of_the_output_file_ignores_hostnames_and_debug_lines():
    s = cts.parse_summary(_outputfile(FAILED_RUN))
    assert s == cts.parse_summary(_stderr(FAILED_RUN))


def test_parse_summary_of_a_clean_run_is_ok():
    lines = RUN[:1] + _summary(
        "{'success': 5, 'failure': 0, 'BadNews': 0, 'skipped': 0}",
        {n: (1, 0, 0, 0) for n in RAN},
    )
    s = cts.parse_summary(_stderr(lines))
    assert s.ok
    assert s.to_dict()["ok"] is True
    assert s.to_dict()["tests"][0] == {
        "name": "Flip",
        "calls": 1,
        "failure": 0,
        "skipped": 0,
        "auditfail": 0,
        "passed": 1,
    }


def test_success_short_of_the_requested_iterations_is_not_ok():
    # CTS.py:93-95: "No failure count but success != requested iterations" -> exit 1
    lines = RUN[:1] + _summary(
        "{'success': 4, 'failure': 0, 'BadNews': 0, 'skipped': 0}", {"Flip": (4, 0, 0, 0)}
    )
    s = cts.parse_summary(_stderr(lines))
    assert s.failure == 0 and not s.ok


def test_the_last_summary_wins_when_cts_prints_it_twice():
    # SIGUSR1 (CTSlab.py sig_handler) prints a summary mid-run; the run goes on.
    first = _summary(
        "{'success': 1, 'failure': 1, 'BadNews': 0, 'skipped': 0}", {"Flip": (2, 1, 0, 0)}
    )
    last = _summary(
        "{'success': 4, 'failure': 1, 'BadNews': 2, 'skipped': 0}", {"Flip": (5, 1, 0, 1)}
    )
    s = cts.parse_summary(_stderr(RUN[:1] + first + ["Interrupted by signal 10"] + last))
    assert (s.success, s.bad_news) == (4, 2)
    flip = s.tests[0]
    assert (flip.calls, flip.failure, flip.auditfail, flip.passed) == (5, 1, 1, 4)
    assert len(s.tests) == len(TEST_NAMES)


def test_output_without_a_summary_is_not_found_and_not_ok():
    # e.g. Scenario.SetUp failed (CTS.py:73-74 returns 1 before any summary)
    s = cts.parse_summary(_stderr(RUN[:6]))
    assert not s.found and not s.completed and not s.ok
    assert s.tests == ()
    assert s.requested == 5


def test_a_summary_cut_short_is_found_but_not_completed():
    s = cts.parse_summary(_stderr(FAILED_RUN[:-3]))
    assert s.found and not s.completed and not s.ok
    assert len(s.tests) == len(TEST_NAMES) - 2


def test_parse_progress_reads_running_test_lines():
    assert cts.parse_progress(STAMP + RUN[6]) == (2, "ResourceRecover", "demo-c1")
    assert cts.parse_progress(STAMP + "vm " + RUN[5]) == (1, "Flip", "demo-c2")
    assert cts.parse_progress(STAMP + RUN[7]) is None


def test_summary_of_cts_3_without_a_colon_after_the_test_name():
    # cts-lab 3.x (python/pacemaker/_cts/scenarios.py) prints "Test NAME" padded, no colon.
    out = "\n".join(
        f"Nov 26 13:18:30\tvm {line}"
        for line in [
            ">>>>>>>>>>>>>>>> BEGINNING 1 TEST",
            "****************",
            "Overall Results:{'success': 1, 'failure': 0, 'BadNews': 2, 'skipped': 0}",
            "****************",
            "Test Summary",
            "Test RemoteBasic          {'calls': 1, 'failure': 0, 'skipped': 0, 'auditfail': 0}",
            "<<<<<<<<<<<<<<<< TESTS COMPLETED",
        ]
    )
    s = cts.parse_summary(out)
    assert s.ok and [(t.name, t.calls, t.passed) for t in s.tests] == [("RemoteBasic", 1, 1)]


# 3.0.0's configured python/pacemaker/buildoptions.py (the lines node_files reads).
BUILDOPTIONS_3 = '''class BuildOptions:
    """Variables generated as part of the ./configure && make process."""

    DAEMON_DIR = "/usr/lib/pacemaker"
    DATA_DIR = "/usr/share"
    LIBEXEC_DIR = "/usr/lib"
    UNIT_DIR = "/lib/systemd/system"
'''


def _tree_3x(tmp_path: Path, options: str = BUILDOPTIONS_3) -> Path:
    for rel in (
        "cts/cts-lab",
        "cts/support/LSBDummy",
        "cts/support/fence_dummy",
        "cts/support/pacemaker-cts-dummyd",
        "cts/support/pacemaker-cts-dummyd@.service",
        "cts/support/cts.conf",
        "python/pacemaker/__init__.py",
        "python/pacemaker/_library.py",
        "python/pacemaker/exitstatus.py",
        "python/pacemaker/_cts/environment.py",
        "lib/common/.libs/libcrmcommon.so",
        "tools/.libs/iso8601",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "python/pacemaker/_cts/environment.py").write_text('args.logfile == "journal"')
    (tmp_path / "python/pacemaker/buildoptions.py").write_text(options)
    (tmp_path / "cts/support/cts-support").write_text(
        "#!/usr/bin/python3\nfrom pacemaker.buildoptions import BuildOptions\n"
    )
    return tmp_path


def test_3x_node_files_take_python_cts_support_and_the_pacemaker_package(tmp_path):
    src = _tree_3x(tmp_path)
    got = {(str(f.relative_to(src)), dest, mode) for f, dest, mode in cts.node_files(src)}
    data = "/usr/share/pacemaker/tests/cts"
    pkg = "/usr/lib/python3/dist-packages/pacemaker"
    assert got == {
        ("cts/support/cts-support", "/usr/lib/pacemaker/cts-support", 0o755),
        ("cts/support/LSBDummy", f"{data}/LSBDummy", 0o755),
        ("cts/support/fence_dummy", f"{data}/fence_dummy", 0o755),
        ("cts/support/pacemaker-cts-dummyd", f"{data}/pacemaker-cts-dummyd", 0o755),
        (
            "cts/support/pacemaker-cts-dummyd@.service",
            f"{data}/pacemaker-cts-dummyd@.service",
            0o644,
        ),
        ("cts/support/cts.conf", f"{data}/cts.conf", 0o644),
        *(
            (f"python/pacemaker/{m}", f"{pkg}/{m}", 0o644)
            for m in ("__init__.py", "_library.py", "buildoptions.py", "exitstatus.py")
        ),
    }
    assert cts.check_tree(src, "cts-lab") == []
    env = cts.library_env(src, "/usr/bin")
    assert env == {
        "LD_LIBRARY_PATH": f"{src}/lib/common/.libs",
        "PATH": f"{src}/tools/.libs:/usr/bin",
    }


def test_a_3x_tree_without_its_host_library_or_tool_is_not_ready(tmp_path):
    src = _tree_3x(tmp_path)
    (src / "lib/common/.libs/libcrmcommon.so").unlink()
    (src / "tools/.libs/iso8601").unlink()
    problems = cts.check_tree(src, "cts-lab")
    assert any("libcrmcommon.so" in p for p in problems)
    assert any("iso8601" in p for p in problems)
    src2 = _tree_3x(tmp_path / "b", BUILDOPTIONS_3.replace('"/lib/systemd/system"', '""'))
    assert any("UNIT_DIR" in p for p in cts.check_tree(src2, "cts-lab"))


def test_a_2x_tree_needs_no_host_library(tmp_path):
    src = _tree(tmp_path)
    assert not cts.needs_library(src) and cts.library_env(src, "/usr/bin") == {}


def test_preparing_3x_cts_needs_dbus_and_gnutls_headers_on_the_host():
    assert "libdbus-1-dev" not in cts.host_packages("2.1.5-1+deb12u1")
    assert {"libdbus-1-dev", "libgnutls28-dev"} <= set(cts.host_packages("3.0.0-2"))
    assert set(cts.HOST_PACKAGES) <= set(cts.host_packages("3.0.0-2"))


def test_remote_host_map_sends_remote_names_to_the_nodes_domains():
    assert cts.remote_host_map(["lab-c1", "lab-c2"]) == "remote-lab-c1:lab-c1;remote-lab-c2:lab-c2"


def test_remote_host_map_passes_ctslab_comma_split():
    cmd = _cmd(
        "2.1.5-1+deb12u1",
        fencing_params={"pcmk_host_map": cts.remote_host_map(["a", "b"]), "pcmk_host_list": "all"},
    )
    assert (
        cmd[cmd.index("--stonith-args") + 1]
        == "pcmk_host_map=remote-a:a;remote-b:b,pcmk_host_list=all"
    )
