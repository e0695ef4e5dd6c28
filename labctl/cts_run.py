"""`labctl cts`: prepare Pacemaker's CTS for a lab and run it, streaming its progress."""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from labctl import (
    collect,
    cts,
    cts_tests,
    fencing,
    host,
    images,
    lab,
    locks,
    pcmkbuild,
    proc,
    safety,
    sshconfig,
    state,
    virt,
)
from labctl.errors import CommandStopped, CommandTimeout, HostError, LabctlError, UsageError
from labctl.plan import LabPlan

Emit = Callable[[str], None]
CTS_SUPPORT = "/usr/lib/pacemaker/cts-support"  # where a build with CTS has its node side


@dataclass(frozen=True)
class CtsRun:
    lab: str
    pacemaker_version: str
    source: str
    command: list[str]
    outputfile: str
    exit_status: int
    summary: cts.CtsSummary
    # None: CTS's --list-tests gave no list, so applicability is unknown
    not_applicable: tuple[cts_tests.NotApplicable, ...] | None = None
    evidence: str = ""  # `labctl collect`'s archive, made when CTS reported a failure

    def to_dict(self) -> dict:
        return {
            "lab": self.lab,
            "pacemaker_version": self.pacemaker_version,
            "source": self.source,
            "command": self.command,
            "outputfile": self.outputfile,
            "exit_status": self.exit_status,
            "summary": self.summary.to_dict(),
            "not_applicable": None
            if self.not_applicable is None
            else [n.to_dict() for n in self.not_applicable],
            "evidence": self.evidence,
        }


def write_ssh_config(p: LabPlan) -> Path:
    path = p.ssh_dir / "config"
    path.write_text(sshconfig.ssh_config(p))
    return path


def nodes_version(p: LabPlan) -> str:
    with lab.connect(p, p.cluster_nodes[0]) as c:
        return c.run("dpkg-query -W -f '${Version}' pacemaker").stdout.strip()


_CONFIG_VERSION_RE = re.compile(r'#define PACEMAKER_VERSION "([0-9.]+)"')


def tree_version(src: Path) -> str | None:
    """The upstream version a configured Pacemaker tree was configured as."""
    try:
        m = _CONFIG_VERSION_RE.search((src / "include/config.h").read_text())
    except OSError:
        return None
    return m.group(1) if m else None


def check_lab(p: LabPlan) -> None:
    if len(p.cluster_nodes) < 2:
        raise UsageError(
            f"lab {p.name!r} has {len(p.cluster_nodes)} cluster node(s): CTS needs at least 2; "
            "make one with `labctl up --nodes 3 --mode cluster`"
        )


def test_ip_base(p: LabPlan) -> str:
    """CTS's test-IP base: the addresses CTS takes after it are in the lab subnet and free."""
    base = p.network.cts_ip_base
    wanted = cts.test_ip_addresses(str(base), len(p.cluster_nodes))
    taken = {str(n.ip) for n in p.all_nodes} | {str(p.network.gateway)}
    hosts = {str(a) for a in p.network.subnet.hosts()}
    bad = [ip for ip in wanted if ip in taken or ip not in hosts]
    if bad:
        raise UsageError(f"no free addresses for CTS in {p.network.subnet}: {', '.join(bad)}")
    return str(base)


def prepare(
    name: str, state_dir: Path, src: Path | None, emit: Emit
) -> tuple[LabPlan, str, Path, dict[str, str]]:
    """Everything before the run: lab checks, the source tree, node files, SSH config;
    returns the plan, the version, the tree and what CTS's environment needs besides."""
    host.require_root("labctl cts")
    p = lab.load_plan(name, state_dir)
    lab.refuse_bare(p, "CTS")
    check_lab(p)
    rec = state.read_record(state_dir, name)
    build = pcmkbuild.resolve(state_dir, rec.build) if rec and rec.build else None
    # A lab made from a source tree runs CTS from that tree (configured with the
    # build); else from the Debian source of the version its nodes have.
    # Either way it becomes part of a path (state_dir/cts/pacemaker-VERSION): checked.
    if build:
        version = safety.check_version(str(build.manifest["version"]), f"build {build.label}")
    else:
        version = safety.check_version(nodes_version(p), p.cluster_nodes[0].name)
    upstream = ".".join(map(str, cts.upstream_version(version)))
    if src is None and build is not None:
        src = pcmkbuild.tree_dir(state_dir, build)
        emit(f"CTS from the lab's own tree: {build.manifest['tree']} (built in {src})")
        if cts.cts_dialect(version) == "ctslab" and not (src / "cts/cts").exists():
            (src / "cts/cts").symlink_to("lab")  # as prepare_source does
    if src is not None:
        have = tree_version(src)
        if have is None:
            raise UsageError(
                f"{src} is not a configured Pacemaker source tree (no include/config.h): "
                "run ./autogen.sh and ./configure there, or leave out --pacemaker-src"
            )
        if have != upstream:
            raise UsageError(
                f"CTS source {src} is Pacemaker {have}, the lab's nodes run {upstream}: "
                f"use a {upstream} tree, or leave out --pacemaker-src"
            )
    else:
        missing = cts.missing_host_packages(cts.host_packages(version))
        if missing:
            emit(f"installing what preparing CTS needs on the host: {' '.join(missing)}")
            _apt_install(missing)
        # Debian's own version names no release ("3.0.0-2"): the nodes' image's suite.
        idef = images.IMAGES.get(p.spec.image)
        sources = cts.host_sources(version, release=idef.suite if idef else None)
        src = cts.prepare_source(version, state_dir / "cts", sources, emit)
    dialect = cts.cts_dialect(version)
    if build is not None and (build.install / CTS_SUPPORT.lstrip("/")).is_file():
        # `make install` put CTS's node side on the nodes with the build (upstream
        # trees; Debian's patches leave CTS out): only the runner is needed here.
        run = cts.runner(src, dialect)
        problems = [] if run.is_file() else [f"no {run.relative_to(src)}"]
        files = []
    else:
        problems = cts.check_tree(src, dialect)
        files = [] if problems else cts.node_files(src)
    if problems:
        raise UsageError(f"CTS tree {src} is not usable: " + "; ".join(problems))

    def install(node: lab.NodePlan) -> None:
        with lab.connect(p, node) as c:
            for local, remote, mode in files:
                c.run(f"mkdir -p {shlex.quote(str(Path(remote).parent))}")
                c.put(local.read_bytes(), remote, mode=mode)

    lab.parallel(install, p.cluster_nodes)
    write_ssh_config(p)
    # CTSlab.py (2.1.6 and older) is plain Python; cts-lab's package needs more.
    if build is not None and dialect != "ctslab":
        return p, version, src, _build_library_env(build, emit)
    if cts.needs_library(src):
        # A distribution's tree: its own libcrmcommon (prepare_source made it), psutil.
        missing = cts.missing_host_packages(("python3-psutil",))
        if missing:
            emit(f"installing what CTS needs on the host: {' '.join(missing)}")
            _apt_install(missing)
        return p, version, src, cts.library_env(src, os.environ.get("PATH", "/usr/bin:/bin"))
    return p, version, src, {}


def _build_library_env(build: pcmkbuild.Build | None, emit: Emit) -> dict[str, str]:
    """CTS of 3.x loads libcrmcommon with ctypes on the host (python/pacemaker/_library.py,
    found through ctypes.util.find_library, which honours LD_LIBRARY_PATH): point it at
    the build's libraries, and make sure the host has what they link against."""
    found = sorted(build.install.glob("usr/lib/*/libcrmcommon.so")) if build else []
    if build is None or not found:
        return {}
    libdir = str(found[0].parent)
    ldd = proc.run(
        ["ldd", str(found[0])],
        where="host",
        timeout=60.0,
        check=False,
        env={"LD_LIBRARY_PATH": libdir},
    )
    # psutil: what cts-lab's process handling imports (3.x).
    missing = cts.missing_host_packages(("python3-psutil",))
    if "not found" in ldd.stdout:
        missing += cts.missing_host_packages()
    if missing:
        emit(f"installing what CTS needs on the host: {' '.join(missing)}")
        _apt_install(missing)
    # It also runs Pacemaker's own tools on the host (iso8601, say): the build's.
    tools = ":".join(str(build.install / d) for d in ("usr/sbin", "usr/bin"))
    return {"LD_LIBRARY_PATH": libdir, "PATH": f"{tools}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def remoted_on_all(p: LabPlan) -> bool:
    """Whether `which pacemaker-remoted` succeeds on every cluster node (CTS's Remote* check)."""

    def has(node: lab.NodePlan) -> bool:
        with lab.connect(p, node) as c:
            return c.run("which pacemaker-remoted >/dev/null 2>&1", check=False).status == 0

    return all(lab.parallel(has, p.cluster_nodes))


LIST_TESTS_TIMEOUT = 300.0
APT_INSTALL_TIMEOUT = 15 * 60.0
# A CTS run's overall deadline: its setup (the cluster started, the CIB
# clobbered) plus a generous share per iteration (seen: 20-90 s a test).
CTS_SETUP_TIMEOUT = 15 * 60.0
CTS_ITERATION_TIMEOUT = 5 * 60.0


def cts_deadline(iterations: int) -> float:
    """Seconds a CTS run of ITERATIONS tests may take before it is stopped."""
    return CTS_SETUP_TIMEOUT + max(iterations, 1) * CTS_ITERATION_TIMEOUT


def not_applicable(
    argv: list[str],
    tree: Path,
    dialect: str,
    env: dict[str, str],
    facts: cts_tests.LabFacts,
    outputfile: Path,
    emit: Emit,
) -> tuple[cts_tests.NotApplicable, ...] | None:
    """The enabled tests CTS itself finds not applicable (its --list-tests), with reasons.

    None, after a warning, when CTS gives no complete list.
    """
    list_argv = cts_tests.list_tests_command(argv, outputfile)
    try:
        listed = proc.run(
            list_argv,
            where="CTS --list-tests",
            timeout=LIST_TESTS_TIMEOUT,
            check=False,
            env=env,
            cwd=tree,
        )
        output, status = listed.stdout + listed.stderr, str(listed.returncode)
    except CommandTimeout:
        output, status = "", f"no answer in {LIST_TESTS_TIMEOUT:.0f} s"
    applicable = cts_tests.parse_list_tests(output) if status == "0" else None
    if applicable is None:
        tail = output.strip()[-300:]
        emit(f"warning: CTS --list-tests gave no test list (status {status}): {tail}")
        emit("warning: which CTS tests are not applicable on this lab is unknown")
        return None
    try:
        enabled = cts_tests.enabled_tests(tree, dialect)
    except (OSError, SyntaxError) as e:
        emit(f"warning: cannot read CTS's enabled tests in {tree}: {e}")
        return None
    unknown = sorted(set(applicable) - {t.name for t in enabled})
    if unknown:
        emit(f"warning: CTS lists tests not found enabled in its source: {', '.join(unknown)}")
    out = tuple(cts_tests.not_applicable(enabled, applicable, facts))
    if out:
        emit(f"not applicable on this lab: {cts_tests.describe(out)}")
    else:
        emit(f"all {len(enabled)} enabled CTS tests are applicable on this lab")
    return out


def _apt_install(packages: list[str]) -> None:
    installed = proc.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        where="host",
        timeout=APT_INSTALL_TIMEOUT,
        check=False,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    if installed.returncode != 0:
        raise HostError(
            f"apt-get install {' '.join(packages)} failed: {installed.stderr.strip()[-300:]}"
        )


def _wrappers(p: LabPlan, config: Path) -> Path:
    """ssh and scp first on CTS's PATH: CTS calls the plain binaries, prompts fail it."""
    d = p.dir / "cts" / "bin"
    d.mkdir(parents=True, exist_ok=True)
    for tool in ("ssh", "scp"):
        w = d / tool
        w.write_text(cts.ssh_wrapper(f"/usr/bin/{tool}", ["-F", str(config)]))
        w.chmod(0o755)
    return d


def run(
    name: str,
    state_dir: Path,
    *,
    src: Path | None,
    iterations: int,
    seed: int | None,
    extra: list[str],
    emit: Emit,
    timeout: float | None = None,
) -> CtsRun:
    """Prepare and run CTS on lab NAME, holding the lab's lock (CTS restarts and
    fences its nodes; nothing else should change the lab meanwhile)."""
    with locks.hold("lab", name, locks.command_line()):
        return _run(name, state_dir, src, iterations, seed, extra, emit, timeout)


def _run(
    name: str,
    state_dir: Path,
    src: Path | None,
    iterations: int,
    seed: int | None,
    extra: list[str],
    emit: Emit,
    timeout: float | None,
) -> CtsRun:
    p, version, tree, extra_env = prepare(name, state_dir, src, emit)
    if p.spec.fencing:
        fp = fencing.fence_plans(p, virt.default_uri)[0]  # CTS: cluster mode, one backend
        agent: str | None = "fence_xvm"
        params = {
            "multicast_address": fp.address,
            "ipport": str(fp.port),
            "key_file": fencing.NODE_KEY_PATH,
            "pcmk_host_list": "all",
            "pcmk_host_map": cts.remote_host_map([n.name for n in p.cluster_nodes]),
        }
    else:
        agent, params = None, {}
    outdir = p.dir / "cts"
    outdir.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    outputfile = outdir / f"cts-{stamp}.log"
    argv = cts.cts_command(
        version,
        tree,
        [n.name for n in p.cluster_nodes],
        iterations=iterations,
        seed=seed,
        test_ip_base=test_ip_base(p),
        outputfile=outputfile,
        fencing_agent=agent,
        fencing_params=params,
        extra=extra,
    )
    wrappers = _wrappers(p, p.ssh_dir / "config")
    env = {**cts.cts_environment(), **extra_env}
    env["PATH"] = f"{wrappers}:{env['PATH']}"
    facts = cts_tests.LabFacts(
        cluster_nodes=len(p.cluster_nodes),
        fencing=agent is not None,
        remoted_on_all=remoted_on_all(p),
        cts_args=tuple(extra),
    )
    na = not_applicable(
        argv,
        tree,
        cts.cts_dialect(version),
        env,
        facts,
        outdir / f"cts-{stamp}-list-tests.log",
        emit,
    )
    emit(f"running: {shlex.join(argv)}")
    seen = []

    def on_line(line: str) -> None:
        seen.append(line)
        step = cts.parse_progress(line)
        if step:
            emit(f"[{step[0]}/{iterations}] {step[1]} ({step[2]})")
        elif "BadNews" in line or "ERROR" in line or ("Audit" in line and "failed" in line):
            emit(line.rstrip())

    limit = timeout if timeout is not None else cts_deadline(iterations)
    evidence_file = outdir / f"cts-{stamp}-evidence.tar.gz"
    try:
        status = proc.stream(
            argv,
            where="CTS",
            timeout=limit,
            on_line=on_line,
            env=env,
            cwd=tree,
            name="CTS run",
            watch=_power_watch(p),
            watch_every=WATCH_EVERY,
        )
    except CommandStopped as e:
        evidence = _evidence(name, state_dir, evidence_file, started)
        raise CommandStopped(
            f"{e}; its log is {outputfile}; evidence: {evidence or 'none could be collected'}"
        ) from None
    except CommandTimeout:
        evidence = _evidence(name, state_dir, evidence_file, started)
        raise CommandTimeout(
            "CTS",
            "CTS run",
            limit,
            hint=f"its log is {outputfile}; evidence: {evidence or 'none could be collected'}; "
            "`labctl cts --timeout SECONDS` allows longer runs",
        ) from None
    text = outputfile.read_text() if outputfile.exists() else "".join(seen)
    summary = cts.parse_summary(text)
    if not summary.found:
        summary = cts.parse_summary("".join(seen))
    if not summary.found:
        tail = "".join(seen[-5:]).strip()
        raise LabctlError(f"CTS ended (status {status}) without a summary: {tail[-400:]}")
    evidence = ""
    if not summary.ok:
        evidence = _evidence(name, state_dir, evidence_file, started)
        emit(f"evidence: {evidence}" if evidence else "evidence: none could be collected")
    return CtsRun(name, version, str(tree), argv, str(outputfile), status, summary, na, evidence)


# CTS never keeps a node powered off: fencing reboots it, and its own tests stop the
# stack, not the machine. A container is back in seconds, a TCG VM in about a minute.
POWERED_OFF_LIMIT = 180.0
WATCH_EVERY = 10.0


@dataclass
class PoweredOff:
    """Since when each node has been seen powered off; pure (the caller looks)."""

    limit: float = POWERED_OFF_LIMIT
    since: dict[str, float] = field(default_factory=dict)

    def seen(self, now: float, running: Mapping[str, bool]) -> str | None:
        """Record one look (node -> running?); the reason to stop CTS, if any node has
        been off for LIMIT seconds."""
        for node, up in running.items():
            if up:
                self.since.pop(node, None)
            else:
                self.since.setdefault(node, now)
        late = sorted(n for n, t in self.since.items() if now - t >= self.limit)
        if not late:
            return None
        return (
            f"{', '.join(late)} stayed powered off for {now - self.since[late[0]]:.0f} s "
            "(fencing reported it done, but nothing started the node again); CTS would "
            "wait for it until its timeout"
        )


def _power_watch(p: LabPlan) -> Callable[[], str | None]:
    """A look at the cluster nodes' domains for proc.stream's watch: libvirt's answer,
    or nothing said when libvirt does not answer (CTS's own timeout still holds)."""
    tracker = PoweredOff()
    by_uri: dict[str, list[str]] = {}
    for n in p.cluster_nodes:
        by_uri.setdefault(virt.default_uri(n.backend), []).append(n.name)

    def look() -> str | None:
        running: dict[str, bool] = {}
        try:
            for uri, names in by_uri.items():
                with virt.connection(uri) as conn:
                    ids = virt.domain_ids(conn, names)
                running.update({n: i is not None for n, i in ids.items()})
        except LabctlError:
            return None
        return tracker.seen(time.monotonic(), running)

    return look


def _evidence(name: str, state_dir: Path, out: Path, since: dt.datetime) -> str:
    """`labctl collect` of the lab since CTS started, or "" (CTS's result stands alone)."""
    try:
        when = since.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return str(collect.collect(name, state_dir, out, when))
    except LabctlError:
        return ""
