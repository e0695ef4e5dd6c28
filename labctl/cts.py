"""Pacemaker's Cluster Test Suite (CTS) for labs: source tree, node files, command, summary.

Debian ships no pacemaker-cts package, so CTS comes from the Pacemaker source of
the nodes' own version, configured with Debian's paths and never compiled:
`configure` alone generates every CTS script (CONFIG_FILES_EXEC in configure.ac).
Measured on the development host (Debian 12, 2 cores) for 2.1.5-1+deb12u1:
private `apt-get update` 0.3-1.1 s, `apt-get source --download-only` 0.1-0.8 s,
`dpkg-source -x` 0.6-1.6 s, `./autogen.sh` 9-11 s, `./configure` 16-21 s: about
30 s in all, and no `make` at all.

Four command-line dialects exist (see `cts_dialect`), each boundary read in
the release's own source (git tags Pacemaker-2.1.6 ... 3.0.2):
- "ctslab" (2.1.0 to 2.1.6): cts/lab/CTSlab.py, a hand-written option loop
  (cts/lab/environment.py), `--stack corosync`, fencing as `--stonith-type AGENT
  --stonith-args k=v,k=v` (the value is split on commas, cts/lab/CIB.py); the
  journals are read with `--set LogWatcher=journal`.
- "cts-lab-2.1.7" (2.1.7 only): cts/cts-lab on python/pacemaker/_cts
  (argparse), same option names, but no way to ask for the journals: `-L X`
  makes X a log file name read on the nodes (REMOTE_FILE), and `--set
  LogWatcher=journal` sets a string its watcher compares with an Enum. No log
  option at all: CTS probes for the journal itself.
- "cts-lab" (2.1.8 to 3.0.1): as 2.1.7, and `-L journal` reads the journals.
- "cts-lab-fencing" (3.0.2 and later): `--fencing-agent AGENT --fencing-params
  "k=v k=v"` (shlex-split), `--disable-fencing`, no `--stack`, no `--set`.
`check_tree` checks a prepared tree agrees with its version's dialect.

Pure functions first; the few that run commands are at the end.
"""

from __future__ import annotations

import ast
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from labctl import locks
from labctl.errors import HostError, UsageError
from labctl.proc import run as run_cmd
from labctl.safety import check_version

Progress = Callable[[str], None]

SOURCE_PACKAGE = "pacemaker"
MARKER = ".labctl-cts.json"

# Debian's own configure call (debian/rules: dh_auto_configure adds --prefix,
# --sysconfdir, --localstatedir and --runstatedir; the package adds the rest).
# --with-systemdsystemunitdir is explicit because configure only finds it when
# systemd support is enabled, which needs libdbus-1-dev and a working systemctl
# on the build host; without it cts-support gets UNIT_DIR="" and never installs
# the dummy daemon's unit. /lib/systemd/system exists on every Debian with systemd.
CONFIGURE_ARGS: tuple[str, ...] = (
    "--prefix=/usr",
    "--sysconfdir=/etc",
    "--localstatedir=/var",
    "--runstatedir=/run",
    "--libexecdir=/usr/lib",
    "--with-configdir=/etc/default",
    "--with-systemdsystemunitdir=/lib/systemd/system",
    # Else configure takes corosync.pc's corosysconfdir, the directory /etc/corosync,
    # and CTS's CIB.get_node_id() runs awk on a directory (node IDs never found).
    "--with-corosync-conf=/etc/corosync/corosync.conf",
    "BASH_PATH=/bin/bash",
    # Else the scripts' first line is whatever python3 configure finds first on
    # the build host's PATH (a venv, say), which does not exist on the nodes.
    "PYTHON=/usr/bin/python3",
)

# Verified in a debootstrap --variant=minbase bookworm chroot holding only these
# (and their dependencies): dpkg-source -x, ./autogen.sh and ./configure succeed,
# and removing any one of the library/autotools packages makes one of them fail.
HOST_PACKAGES: tuple[str, ...] = (
    # unpacking and the toolchain configure probes
    "dpkg-dev",
    "gcc",
    "libc6-dev",
    "make",
    "pkgconf",
    "python3",
    # ./autogen.sh (autoreconf -fisv: libtoolize --ltdl, autopoint)
    "autoconf",
    "automake",
    "libtool",
    "libltdl-dev",
    "autopoint",
    # libraries configure requires
    "libglib2.0-dev",
    "libxml2-dev",
    "libxslt1-dev",
    "uuid-dev",
    "libbz2-dev",
    "libqb-dev",
    # "At least one cluster stack must be supported": all five corosync ones
    "libcpg-dev",
    "libcfg-dev",
    "libcmap-dev",
    "libquorum-dev",
    "libcorosync-common-dev",
)

# What 3.x's configure requires besides (checked in 3.0.0's configure.ac: dbus-1
# and gnutls are no longer optional), and make for libcrmcommon (`LIBRARY_TARGET`).
HOST_PACKAGES_3X: tuple[str, ...] = ("libdbus-1-dev", "libgnutls28-dev")

DEBIAN_CODENAMES = {
    "9": "stretch",
    "10": "buster",
    "11": "bullseye",
    "12": "bookworm",
    "13": "trixie",
    "14": "forky",
}

CTS_LAB_SINCE = (2, 1, 7)  # first release with cts/cts-lab
CTS_LAB_JOURNAL_SINCE = (2, 1, 8)  # first cts-lab where `-L journal` means the journals
FENCING_OPTIONS_SINCE = (3, 0, 2)  # --fencing-agent/--fencing-params, no --stack/--set


# ------------------------------------------------------------------ versions


def upstream_version(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a Debian version ("1:2.1.5-1+deb12u1" -> (2, 1, 5))."""
    v = version.strip()
    if ":" in v:
        v = v.split(":", 1)[1]
    if "-" in v:
        v = v.rsplit("-", 1)[0]
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", v)
    if not m:
        raise UsageError(f"not a Pacemaker version: {version!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def debian_suite(version: str) -> str | None:
    """The Debian suite a stable-update or backport version comes from, if it says.

    "2.1.5-1+deb12u1" -> "bookworm", "2.1.8-1~bpo12+1" -> "bookworm-backports";
    a plain "2.1.5-1" says nothing (None: use the host's own release).
    """
    if m := re.search(r"[~+]bpo(\d+)", version):
        name = DEBIAN_CODENAMES.get(m.group(1))
        return f"{name}-backports" if name else None
    if m := re.search(r"\+deb(\d+)u\d+", version):
        return DEBIAN_CODENAMES.get(m.group(1))
    return None


def host_packages(version: str) -> tuple[str, ...]:
    """What preparing VERSION's CTS tree needs on the host; pure."""
    return HOST_PACKAGES + (HOST_PACKAGES_3X if upstream_version(version) >= (3, 0, 0) else ())


def cts_dialect(version: str) -> str:
    """ "ctslab", "cts-lab-2.1.7", "cts-lab" or "cts-lab-fencing" (module docstring)."""
    v = upstream_version(version)
    if v < CTS_LAB_SINCE:
        return "ctslab"
    if v < CTS_LAB_JOURNAL_SINCE:
        return "cts-lab-2.1.7"
    if v < FENCING_OPTIONS_SINCE:
        return "cts-lab"
    return "cts-lab-fencing"


# ------------------------------------------------------------------ apt sources


@dataclass(frozen=True)
class AptSource:
    uri: str
    suite: str
    components: str = "main"


def deb_src_list(sources: Sequence[AptSource], keyring: str | None) -> str:
    """A one-line-format sources.list with a deb-src line per source; pure."""
    opt = f"[signed-by={keyring}] " if keyring else ""
    return "".join(f"deb-src {opt}{s.uri} {s.suite} {s.components}\n" for s in sources)


def source_suites(version: str, host_codename: str) -> list[str]:
    """Suites to look in for VERSION's source: its release, -updates and -security."""
    suite = debian_suite(version) or host_codename
    base = suite.removesuffix("-backports")
    suites = [base, f"{base}-updates", f"{base}-security"]
    if suite.endswith("-backports"):
        suites.append(suite)
    return suites


def apt_options(workdir: Path) -> list[str]:
    """apt-get options for a private configuration under WORKDIR.

    Only the source list, the package lists and the cache move; the host's
    apt.conf.d (proxies, retries) still applies and its own lists stay untouched.
    """
    apt = workdir / "apt"
    return [
        "-o",
        f"Dir::Etc::SourceList={apt / 'sources.list'}",
        "-o",
        "Dir::Etc::SourceParts=/dev/null",
        "-o",
        f"Dir::State::Lists={apt / 'lists'}",
        "-o",
        f"Dir::Cache={apt / 'cache'}",
        # files land in root-owned directories the _apt user cannot write
        "-o",
        "APT::Sandbox::User=root",
    ]


# ------------------------------------------------------------------ the tree


def runner(src: Path, dialect: str) -> Path:
    """The CTS lab's executable in a configured tree."""
    return src / ("cts/lab/CTSlab.py" if dialect == "ctslab" else "cts/cts-lab")


# cts-lab of 3.x imports pacemaker.exitstatus, which loads libcrmcommon with ctypes
# (python/pacemaker/_library.py: find_library("crmcommon"), which honours
# LD_LIBRARY_PATH) for crm_exit_str, and its log watcher runs Pacemaker's
# `iso8601` tool on the host. A distribution's CTS tree is only configured, and
# the host has no Pacemaker: make builds that library and that tool in the tree
# (about a minute on 2 cores, once per version); CTS runs with them on
# LD_LIBRARY_PATH and PATH.
LIBRARY_MODULE = "python/pacemaker/_library.py"
LIBRARY_DIR = "lib/common/.libs"
TOOLS_DIR = "tools/.libs"
HOST_TOOLS = ("iso8601",)


def needs_library(src: Path) -> bool:
    """Whether the tree's CTS loads libcrmcommon and runs Pacemaker tools on the host (3.x)."""
    return (src / LIBRARY_MODULE).is_file()


def library_env(src: Path, path: str) -> dict[str, str]:
    """What CTS's environment needs for the tree's own libcrmcommon and tools, PATH
    being the path to extend (empty: nothing)."""
    if not needs_library(src):
        return {}
    return {"LD_LIBRARY_PATH": str(src / LIBRARY_DIR), "PATH": f"{src / TOOLS_DIR}:{path}"}


def configured_value(script: str, name: str) -> str | None:
    """NAME="value" from a configured shell script (cts-support); pure."""
    m = re.search(rf'^{re.escape(name)}="([^"]*)"', script, re.M)
    return m.group(1) if m else None


# (file in the tree, configured variable of cts-support naming its node directory, mode)
_NODE_FILES = (
    ("cts/support/cts-support", "LIBEXEC_DIR", 0o755),
    ("cts/lab/cts-log-watcher", "LIBEXEC_DIR", 0o755),
    ("cts/support/LSBDummy", "DATA_DIR", 0o755),
    ("cts/support/fence_dummy", "DATA_DIR", 0o755),
    ("cts/support/pacemaker-cts-dummyd", "DATA_DIR", 0o755),
    ("cts/support/pacemaker-cts-dummyd@.service", "DATA_DIR", 0o644),
    ("cts/support/cts.conf", "DATA_DIR", 0o644),
)


def _node_files_2x(src: Path) -> list[tuple[Path, str, int]]:
    """(file in SRC, absolute path on a cluster node, mode) for every file CTS needs there.

    Destinations come from the configured cts-support (LIBEXEC_DIR =
    /usr/lib/pacemaker, DATA_DIR = /usr/share/pacemaker/tests/cts on Debian).
    Copying is all there is to do: CTS itself runs `LIBEXEC_DIR/cts-support
    install` on every node when a run starts (Scenario.SetUp ->
    ClusterManager.install_support) and `... uninstall` when it ends. That step
    copies, from DATA_DIR, pacemaker-cts-dummyd to LIBEXEC_DIR, its unit to
    UNIT_DIR (/lib/systemd/system) then `systemctl daemon-reload`, cts.conf to
    /run/systemd/system/corosync.service.d/ (corosync Restart=always), fence_dummy
    (+ fence_dummy_{auto_unfence,no_reboot,no_on} links) to /usr/sbin and LSBDummy
    to /etc/init.d; it needs only sh, install, ln, readlink and systemctl.
    cts-log-watcher is in cts/lab in 2.1.x; later trees may have it in cts/support.
    """
    support = (src / "cts/support/cts-support").read_text()
    dirs = {v: configured_value(support, v) for v in ("LIBEXEC_DIR", "DATA_DIR")}
    out = []
    for rel, var, mode in _NODE_FILES:
        local = src / rel
        if not local.exists() and rel == "cts/lab/cts-log-watcher":
            local = src / "cts/support/cts-log-watcher"
        d = dirs[var]
        if not d:
            raise HostError(f"{src}/cts/support/cts-support has no {var}: is the tree configured?")
        out.append((local, f"{d}/{local.name}", mode))
    return out


# 3.x: cts-support is Python (it also replaces cts-log-watcher: `cts-support watch`)
# and imports the `pacemaker` package (buildoptions, exitstatus, which loads the
# node's own libcrmcommon), which Debian ships in no package: those modules go to
# the nodes too, where python3 finds them. Its directories come from the configured
# buildoptions.py: cts-support in DAEMON_DIR, the rest in DATA_DIR/pacemaker/tests/cts.
PYTHON_NODE_DIR = "/usr/lib/python3/dist-packages/pacemaker"
_PYTHON_MODULES = ("__init__.py", "_library.py", "buildoptions.py", "exitstatus.py")
_NODE_FILES_3X = (
    ("cts/support/cts-support", "DAEMON_DIR", 0o755),
    ("cts/support/LSBDummy", "CTS_DIR", 0o755),
    ("cts/support/fence_dummy", "CTS_DIR", 0o755),
    ("cts/support/pacemaker-cts-dummyd", "CTS_DIR", 0o755),
    ("cts/support/pacemaker-cts-dummyd@.service", "CTS_DIR", 0o644),
    ("cts/support/cts.conf", "CTS_DIR", 0o644),
)


def build_option(text: str, name: str) -> str | None:
    """NAME = "value" from a configured python/pacemaker/buildoptions.py; pure."""
    m = re.search(rf'^\s*{re.escape(name)} = "([^"]*)"', text, re.M)
    return m.group(1) if m else None


def python_support(src: Path) -> bool:
    """Whether the tree's cts-support is 3.x's Python one (it imports `pacemaker`)."""
    try:
        return "from pacemaker" in (src / "cts/support/cts-support").read_text()
    except OSError:
        return False


def _node_files_3x(src: Path) -> list[tuple[Path, str, int]]:
    options = src / "python/pacemaker/buildoptions.py"
    text = options.read_text() if options.is_file() else ""
    data = build_option(text, "DATA_DIR")
    dirs = {
        "DAEMON_DIR": build_option(text, "DAEMON_DIR"),
        "CTS_DIR": f"{data}/pacemaker/tests/cts" if data else None,
    }
    out = []
    for rel, var, mode in _NODE_FILES_3X:
        d = dirs[var]
        if not d:
            raise HostError(f"{options} has no {var}: is the tree configured?")
        out.append((src / rel, f"{d}/{Path(rel).name}", mode))
    for mod in _PYTHON_MODULES:
        out.append((src / "python/pacemaker" / mod, f"{PYTHON_NODE_DIR}/{mod}", 0o644))
    return out


def node_files(src: Path) -> list[tuple[Path, str, int]]:
    """(file in SRC, absolute path on a cluster node, mode) for every file CTS needs there:
    2.x's layout (`_node_files_2x`) or 3.x's (`_node_files_3x`)."""
    return _node_files_3x(src) if python_support(src) else _node_files_2x(src)


def check_tree(src: Path, dialect: str) -> list[str]:
    """What is missing from a configured tree for DIALECT (empty: ready)."""
    problems = []
    run = runner(src, dialect)
    if not run.is_file():
        problems.append(f"no {run.relative_to(src)} (is {dialect!r} the right dialect?)")
    if dialect == "ctslab" and not (src / "cts/cts/CTS.py").is_file():
        problems.append("no cts/cts -> lab link (CTSlab.py imports the package `cts`)")
    if dialect != "ctslab":
        env = src / "python/pacemaker/_cts/environment.py"
        if env.is_file():
            text = env.read_text()
            has_new = "--fencing-agent" in text
            has_journal = 'args.logfile == "journal"' in text
            if has_new != (dialect == "cts-lab-fencing") or has_journal != (
                dialect != "cts-lab-2.1.7"
            ):
                problems.append(f"{env.relative_to(src)} disagrees with dialect {dialect!r}")
    support = src / "cts/support/cts-support"
    if not support.is_file():
        return [*problems, "no cts/support/cts-support"]
    try:
        files = node_files(src)
    except HostError as e:
        return [*problems, str(e)]
    problems += [f"no {f.relative_to(src)}" for f, _, _ in files if not f.is_file()]
    if python_support(src):
        options = src / "python/pacemaker/buildoptions.py"
        unit_dir = build_option(options.read_text(), "UNIT_DIR") if options.is_file() else None
    else:
        unit_dir = configured_value(support.read_text(), "UNIT_DIR")
    if not unit_dir:
        problems.append("cts-support has an empty UNIT_DIR: the dummy daemon would not install")
    if needs_library(src):
        for f in (f"{LIBRARY_DIR}/libcrmcommon.so", *(f"{TOOLS_DIR}/{t}" for t in HOST_TOOLS)):
            if not (src / f).exists():
                problems.append(f"no {f} (cts-lab uses it on the host): run make there")
    return problems


# ------------------------------------------------------------------ the command


def _fencing_args(dialect: str, agent: str | None, params: Mapping[str, str]) -> list[str]:
    if agent is None:
        if params:
            raise UsageError("fencing parameters given without a fencing agent")
        return ["--disable-fencing"] if dialect == "cts-lab-fencing" else ["--stonith", "no"]
    items = [f"{k}={v}" for k, v in params.items()]
    for k in params:
        if not k or "=" in k or any(c.isspace() for c in k):
            raise UsageError(f"bad fencing parameter name {k!r}")
    if dialect == "cts-lab-fencing":
        return ["--fencing-agent", agent, "--fencing-params", shlex.join(items)]
    bad = [i for i in items if "," in i]
    if bad:
        raise UsageError(
            f"CTS {dialect} splits --stonith-args on commas; these cannot be passed: {bad}"
        )
    out = ["--stonith-type", agent]
    if items:
        out += ["--stonith-args", ",".join(items)]
    return out


def remote_host_map(nodes: Sequence[str]) -> str:
    """pcmk_host_map for CTS's fencing device: its remote tests bring a cluster node
    back as remote node "remote-NODE" and fence it by that name, which no libvirt
    domain has; map it to the node's domain (labctl names domains after nodes). Pure."""
    return ";".join(f"remote-{n}:{n}" for n in nodes)


def cts_command(
    version: str,
    src: Path,
    nodes: Sequence[str],
    *,
    iterations: int,
    seed: int | str | None,
    test_ip_base: str,
    outputfile: Path,
    fencing_agent: str | None,
    fencing_params: Mapping[str, str],
    extra: Sequence[str] = (),
    log_source: str = "journal",
) -> list[str]:
    """The argv that runs CTS from the host on NODES, in VERSION's dialect; pure.

    Always: --nodes, --outputfile, --clobber-cib, --populate-resources,
    --test-ip-base (CTS gives its IPaddr2 resources base+1, base+2, ...: see
    `test_ip_addresses`), -y (answer "Y" to every "Continue? [nY]" prompt instead
    of reading stdin; EOF on stdin is read as "n" and aborts), the iteration
    count last; `--seed` when SEED is given; `--stack corosync` where it exists.
    FENCING_AGENT None disables fencing (stonith-enabled=false), else the
    agent and FENCING_PARAMS; the value "all" for pcmk_host_list/hostlist is
    expanded by CTS to every node and its "remote-" name.
    LOG_SOURCE "journal" makes CTS read the nodes' journals over SSH straight
    away (ctslab: `--set LogWatcher=journal`; cts-lab from 2.1.8: `-L journal`;
    2.1.7 has no option for it and gets none, i.e. its own probe); "auto"
    keeps CTS's own probe (a combined syslog read on the host by
    /usr/lib/pacemaker/cts-log-watcher, then the journals, then
    /var/log/messages on the nodes), which costs a 5 s timeout per failing kind.
    EXTRA goes just before the iteration count.
    """
    dialect = cts_dialect(version)
    if iterations < 1:
        raise UsageError("CTS needs at least one iteration")
    bad = [n for n in nodes if not n or any(c.isspace() for c in n)]
    if not nodes or bad:
        raise UsageError(f"CTS needs node names without spaces, got {list(nodes)!r}")
    try:
        ipaddress.ip_address(test_ip_base.strip())
    except ValueError:
        raise UsageError(f"--test-ip-base must be an IP address, not {test_ip_base!r}") from None
    if log_source not in ("journal", "auto"):
        raise UsageError(f"log_source must be 'journal' or 'auto', not {log_source!r}")

    if dialect == "ctslab":
        argv = [str(runner(src, dialect))]
    else:
        # cts-lab imports pacemaker._cts, which a source tree keeps in python/
        argv = ["/usr/bin/env", f"PYTHONPATH={src / 'python'}", str(runner(src, dialect))]
    argv += ["--nodes", " ".join(nodes)]
    if dialect != "cts-lab-fencing":
        argv += ["--stack", "corosync"]
    argv += [
        "--outputfile",
        str(outputfile),
        "--clobber-cib",
        "--populate-resources",
        "--test-ip-base",
        test_ip_base,
    ]
    argv += _fencing_args(dialect, fencing_agent, fencing_params)
    if seed is not None:
        argv += ["--seed", str(seed)]
    if log_source == "journal" and dialect != "cts-lab-2.1.7":
        argv += ["--set", "LogWatcher=journal"] if dialect == "ctslab" else ["-L", "journal"]
    argv += ["-y", *extra, str(iterations)]
    return argv


def test_ip_addresses(base: str, n_nodes: int, have_systemd: bool = True) -> list[str]:
    """The addresses `--populate-resources` gives IPaddr2 resources; pure.

    cts/lab/CIB.py: NextIP() increments the base before each use, so the base
    itself is never used: one rsc_NODE per node, then group-1's IPs (two when the
    nodes run systemd and the group holds the pacemaker-cts-dummyd@10 service,
    three otherwise). IPv4 ones get cidr_netmask=32 and no nic.
    """
    first = ipaddress.ip_address(base.strip())
    count = n_nodes + (2 if have_systemd else 3)
    return [str(first + i) for i in range(1, count + 1)]


def cts_exerciser(hostname: str, addresses: Sequence[str]) -> str:
    """What CTS calls the exerciser, the host the ping-1 clone pings from every node; pure.

    Environment.discover(): the first address of gethostbyname_ex(hostname) that
    is not 127.0.0.1, else the hostname itself. The populated CIB makes
    promotable-1 (and group-1, lsb-dummy after it) depend on that ping working,
    so every node must reach it: when it is a name (no usable address), or an
    address the nodes cannot route to, give the nodes an /etc/hosts entry
    pointing it at the lab's gateway address. 127.0.1.1 (Debian's default for
    the hostname) is pinged on the node's own loopback: it always works.
    """
    return next((a for a in addresses if a != "127.0.0.1"), hostname)


def ssh_wrapper(real: str, options: Sequence[str]) -> str:
    """A shell script that runs REAL (/usr/bin/ssh, /usr/bin/scp) with OPTIONS first.

    CTS runs plain `ssh -l root -n -x ... NODE 'cmd'` and `scp -B -q` from PATH
    with no way to pass a key or known_hosts: put wrappers named ssh and scp in
    a directory first on CTS's PATH, with e.g. `-i KEY -o IdentitiesOnly=yes
    -o UserKnownHostsFile=FILE -o StrictHostKeyChecking=accept-new -o BatchMode=yes`.
    """
    return f'#!/bin/sh\nexec {shlex.join([real, *options])} "$@"\n'


# ------------------------------------------------------------------ the summary


@dataclass(frozen=True)
class TestStats:
    name: str
    calls: int
    failure: int
    skipped: int
    auditfail: int

    @property
    def passed(self) -> int:
        return max(self.calls - self.failure, 0)


@dataclass(frozen=True)
class CtsSummary:
    """CTS's last summary block (Scenario.summarize in cts/lab/CTSscenarios.py).

    success/failure count test runs (a skipped test counts as a success there);
    bad_news counts unexpected log lines ("BadNews:") found by audits.
    requested is N from ">>>>>>>>>>>>>>>> BEGINNING N TESTS". ok mirrors
    CtsLab.run's exit status: no failure and as many successes as requested.
    """

    found: bool
    completed: bool
    requested: int | None
    success: int
    failure: int
    bad_news: int
    skipped: int
    tests: tuple[TestStats, ...]

    @property
    def ok(self) -> bool:
        return (
            self.found
            and self.completed
            and self.failure == 0
            and (self.requested is None or self.success == self.requested)
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        for t, td in zip(self.tests, d["tests"], strict=True):
            td["passed"] = t.passed
        return d


_BEGIN_RE = re.compile(r">>>>>>>>>>>>>>>> BEGINNING (\d+) TESTS?\b")
_OVERALL_RE = re.compile(r"Overall Results:\s*(\{.*\})\s*$")
_TEST_RE = re.compile(r"(?:^|\s)Test (\S+?):?\s+(\{.*\})\s*$")
_DEBUG_RE = re.compile(r"(?:^|\s)debug:\s")


def _literal_dict(text: str) -> dict:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {}
    return value if isinstance(value, dict) else {}


def _int(d: dict, key: str) -> int:
    v = d.get(key, 0)
    return v if isinstance(v, int) else 0


def parse_summary(text: str) -> CtsSummary:
    """Parse CTS's output (its stderr, or the --outputfile) into its last summary; pure.

    Lines carry a "%b %d %H:%M:%S<TAB>" stamp (and, in the output file, the
    host name and a space); debug lines ("debug: Test X: {...}", the file only)
    are ignored. CTS prints the block again when interrupted or aborted, so the
    last one wins.
    """
    requested = None
    overall: dict | None = None
    tests: list[TestStats] = []
    in_tests = completed = False
    for line in text.splitlines():
        if m := _BEGIN_RE.search(line):
            requested = int(m.group(1))
            overall, tests, in_tests, completed = None, [], False, False
        elif m := _OVERALL_RE.search(line):
            overall, tests, in_tests, completed = _literal_dict(m.group(1)), [], False, False
        elif overall is not None and line.rstrip().endswith("Test Summary"):
            in_tests = True
        elif "<<<<<<<<<<<<<<<< TESTS COMPLETED" in line and overall is not None:
            in_tests, completed = False, True
        elif in_tests and not _DEBUG_RE.search(line) and (m := _TEST_RE.search(line)):
            s = _literal_dict(m.group(2))
            tests.append(
                TestStats(
                    m.group(1),
                    _int(s, "calls"),
                    _int(s, "failure"),
                    _int(s, "skipped"),
                    _int(s, "auditfail"),
                )
            )
    o = overall or {}
    return CtsSummary(
        found=overall is not None,
        completed=completed,
        requested=requested,
        success=_int(o, "success"),
        failure=_int(o, "failure"),
        bad_news=_int(o, "BadNews"),
        skipped=_int(o, "skipped"),
        tests=tuple(tests),
    )


_RUNNING_RE = re.compile(r"Running test (\S+)\s+\((\S+)\)\s+\[\s*(\d+)\]")


def parse_progress(line: str) -> tuple[int, str, str] | None:
    """(test number, test name, node) from a "Running test NAME (NODE) [ N]" line; pure."""
    m = _RUNNING_RE.search(line)
    return (int(m.group(3)), m.group(1), m.group(2)) if m else None


# ------------------------------------------------------------------ commands


# Preparing the CTS tree: apt-get source (a download), autogen.sh, configure
# (about 30 s on 2 cores). Generous, finite.
PREPARE_STEP_TIMEOUT = 20 * 60.0
DPKG_QUERY_TIMEOUT = 60.0


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cmd(argv, where="host", timeout=PREPARE_STEP_TIMEOUT, cwd=cwd)


def missing_host_packages(packages: Iterable[str] = HOST_PACKAGES) -> list[str]:
    """The packages of PACKAGES dpkg does not list as installed."""
    proc = run_cmd(
        ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *packages],
        where="host",
        timeout=DPKG_QUERY_TIMEOUT,
        check=False,
    )
    installed = {
        w[0] for w in (line.split() for line in proc.stdout.splitlines()) if w[1:2] == ["ii"]
    }
    return [p for p in packages if p not in installed]


def host_codename() -> str:
    text = Path("/etc/os-release").read_text()
    m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", text, re.M)
    if not m:
        raise HostError("cannot tell the host's Debian release from /etc/os-release")
    return m.group(1)


def host_sources(
    version: str, mirror: str | None = None, release: str | None = None
) -> list[AptSource]:
    """Where the host's apt gets VERSION's release from (its suite, -updates, -security).

    RELEASE is the code name of the nodes' Debian (their image's suite) when the
    version does not name it; default: the host's own. MIRROR, when given,
    replaces the host's archive for every suite but -security.
    """
    from labctl.images import host_mirror

    out = []
    for suite in source_suites(version, release or host_codename()):
        uri = mirror if mirror and not suite.endswith("-security") else None
        if uri is None:
            try:
                uri = host_mirror(suite)
            except HostError:
                continue
        out.append(AptSource(uri, suite))
    if not out:
        raise HostError(f"no apt source on this host for Pacemaker {version}: pass a mirror")
    return out


def _marker(src: Path) -> dict | None:
    try:
        return json.loads((src / MARKER).read_text())
    except (OSError, ValueError):
        return None


def prepare_source(
    version: str,
    workdir: Path,
    sources: Sequence[AptSource],
    progress: Progress = lambda _m: None,
) -> Path:
    """A configured Pacemaker VERSION source tree for CTS under WORKDIR (returned).

    Steps: a private apt configuration in WORKDIR/apt with a deb-src line per
    SOURCES entry (`host_sources`), `apt-get update`, `apt-get source
    --download-only pacemaker=VERSION` into WORKDIR/downloads/VERSION,
    `dpkg-source --no-copy -x` (Debian's patches applied; their "Shipping the CTS
    is not useful" only drops cts from `make`) into WORKDIR/pacemaker-VERSION,
    a cts/cts -> lab
    link for CTSlab.py, `./autogen.sh`, `./configure` with CONFIGURE_ARGS; no
    make. Idempotent: a tree whose marker names the same version and configure
    arguments, and that passes `check_tree`, is returned as is. Each step's
    seconds go to PROGRESS and into the marker's "timings". One labctl at a time
    prepares a version's tree (a host-wide lock); another waits, then reuses it.
    """
    with locks.hold("cts", check_version(version), locks.command_line(), wait=True):
        return _prepare_source(version, workdir, sources, progress)


def _prepare_source(
    version: str, workdir: Path, sources: Sequence[AptSource], progress: Progress
) -> Path:
    dialect = cts_dialect(check_version(version))
    src = workdir / f"{SOURCE_PACKAGE}-{version}"
    mark = _marker(src)
    if (
        mark
        and mark.get("version") == version
        and mark.get("configure") == list(CONFIGURE_ARGS)
        and not check_tree(src, dialect)
    ):
        progress(f"CTS tree for Pacemaker {version} already prepared: {src}")
        return src

    missing = missing_host_packages(host_packages(version))
    if missing:
        raise HostError(
            "preparing CTS needs these packages on the host: "
            f"apt-get install --no-install-recommends {' '.join(missing)}"
        )
    timings: dict[str, float] = {}

    def step(name: str, argv: list[str], cwd: Path | None = None) -> None:
        progress(name)
        t = time.monotonic()
        _run(argv, cwd)
        timings[name] = round(time.monotonic() - t, 1)
        progress(f"{name}: {timings[name]} s")

    unpack_source(version, workdir, src, sources, step)
    if dialect == "ctslab":
        # CTSlab.py puts cts/ first on sys.path and imports the package `cts`,
        # which `make install` would put in pythondir; from the tree it is cts/lab.
        (src / "cts/cts").symlink_to("lab")
    step("./autogen.sh", ["./autogen.sh"], src)
    step("./configure", ["./configure", *CONFIGURE_ARGS], src)
    if needs_library(src):
        jobs = f"-j{os.cpu_count() or 1}"
        step("make libcrmcommon", ["make", "-C", "lib/common", jobs, "libcrmcommon.la"], src)
        step("make iso8601", ["make", "-C", "tools", jobs, *HOST_TOOLS], src)
    problems = check_tree(src, dialect)
    if problems:
        raise HostError(f"CTS tree {src} is not usable: " + "; ".join(problems))
    (src / MARKER).write_text(
        json.dumps(
            {
                "version": version,
                "dialect": dialect,
                "configure": list(CONFIGURE_ARGS),
                "sources": [asdict(s) for s in sources],
                "timings": timings,
                "prepared": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=2,
        )
        + "\n"
    )
    progress(f"CTS tree ready in {sum(timings.values()):.0f} s: {src}")
    return src


Step = Callable[[str, list[str], "Path | None"], None]


def unpack_source(
    version: str, workdir: Path, src: Path, sources: Sequence[AptSource], step: Step
) -> None:
    """Debian's pacemaker=VERSION source, its patches applied, unpacked at SRC.

    A private apt configuration in WORKDIR/apt with a deb-src line per SOURCES
    entry, `apt-get source --download-only` into WORKDIR/downloads/VERSION, then
    `dpkg-source --no-copy -x`; STEP runs each command (name, argv, cwd).
    """
    check_version(version)
    apt = workdir / "apt"
    for d in (apt / "lists/partial", apt / "cache/archives/partial"):
        d.mkdir(parents=True, exist_ok=True)
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    (apt / "sources.list").write_text(
        deb_src_list(sources, keyring if Path(keyring).is_file() else None)
    )
    opts = apt_options(workdir)
    step("apt-get update (private deb-src list)", ["apt-get", *opts, "update"], None)
    downloads = workdir / "downloads" / version
    downloads.mkdir(parents=True, exist_ok=True)
    step(
        f"apt-get source --download-only {SOURCE_PACKAGE}={version}",
        ["apt-get", *opts, "source", "--download-only", f"{SOURCE_PACKAGE}={version}"],
        downloads,
    )
    dsc = downloads / f"{SOURCE_PACKAGE}_{version.split(':', 1)[-1]}.dsc"
    if src.exists():
        shutil.rmtree(src)
    step("dpkg-source -x", ["dpkg-source", "--no-copy", "-x", str(dsc), str(src)], None)


def cts_environment(wrapper_dir: Path | None = None) -> dict[str, str]:
    """The environment to run CTS in: the host's, WRAPPER_DIR first on PATH."""
    env = dict(os.environ)
    if wrapper_dir is not None:
        env["PATH"] = f"{wrapper_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    return env
