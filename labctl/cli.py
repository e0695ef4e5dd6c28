"""The command line: parse, call one function, render. No libvirt or SSH here."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from labctl import (
    __version__,
    cloudimage,
    collect,
    complete,
    cts_run,
    deploy,
    execute,
    host,
    images,
    inventory,
    lab,
    locks,
    net,
    pcmkbuild,
    proc,
    progress,
    restore,
    snapshot,
    sshconfig,
    state,
    upgrade,
    virt,
)
from labctl import ssh as ssh_module
from labctl.errors import CommandTimeout, HostError, LabctlError, UsageError
from labctl.spec import (
    DEFAULT_CLUSTER_NODES,
    MAX_CLUSTER_NODES,
    MAX_OTHER_NODES,
    make_spec,
    validate_name,
)
from labctl.state import DEFAULT_STATE_DIR

# Click's UsageError (an unknown option, a missing argument), found through the one
# subclass Typer exports: Typer vendors Click under a private name.
_CLICK_USAGE_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)


class _OneLineErrors(typer.core.TyperGroup):
    """Every command's failure as one line: LabctlError, and what escaped translation
    further in (libvirt, paramiko, OSError such as a full disk, a subprocess timeout),
    and a subcommand's usage error (Click's own is a box of several lines)."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except _CLICK_USAGE_ERROR as e:  # labctl's own options: `labctl --bogus`
            _usage_failure(e)
            raise

    def invoke(self, ctx: typer.Context) -> object:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except LabctlError as e:
            _fail(e)
        except _CLICK_USAGE_ERROR as e:
            _usage_failure(e)
            raise
        except Exception as e:
            translated = as_labctl_error(e)
            if translated is None or _debug:
                raise
            _fail(translated)
        return None


def _usage_failure(e: Exception) -> None:
    """A usage error as one line naming the command's --help (returns only for what
    Click must show itself: a group's help when it is given no command)."""
    if _debug or type(e).__name__ == "NoArgsIsHelpError":
        return
    where = e.ctx.command_path if e.ctx else "labctl"  # type: ignore[attr-defined]
    message = e.format_message().rstrip(".")  # type: ignore[attr-defined]
    _fail(UsageError(f"{message}: `{where} --help` shows the usage"))


def as_labctl_error(e: BaseException) -> LabctlError | None:
    """E as a LabctlError with a one-line message, or None if it is a bug (a traceback)."""
    if isinstance(e, LabctlError):
        return e
    for translate in (virt.as_labctl_error, ssh_module.as_labctl_error):
        translated = translate(e)
        if translated is not None:
            return translated
    if isinstance(e, subprocess.TimeoutExpired):
        argv = e.cmd if isinstance(e.cmd, list) else [str(e.cmd)]
        return CommandTimeout("host", proc.describe([str(a) for a in argv]), e.timeout)
    if isinstance(e, OSError):
        return _os_error(e)
    return None


def _os_error(e: OSError) -> LabctlError:
    where = " ".join(f"{f}" for f in (e.filename, e.filename2) if f is not None)
    what = e.strerror or str(e) or type(e).__name__
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        at = f" at {where}" if where else ""
        return HostError(
            f"no space left on device{at}: free some (`df -h`), then run the command "
            "again (`labctl down LAB` removes what a failed `up` kept)"
        )
    if e.errno in (errno.EACCES, errno.EPERM):
        return HostError(f"{what}: {where or 'an operation'}: labctl runs as root (sudo)")
    name = errno.errorcode.get(e.errno or 0, type(e).__name__)
    return LabctlError(f"{what}{': ' + where if where else ''} ({name})")


app = typer.Typer(
    cls=_OneLineErrors,
    no_args_is_help=True,
    help="Throwaway Pacemaker test labs on one libvirt host.",
)
image_app = typer.Typer(no_args_is_help=True, help="Base images shared by all labs.")
host_app = typer.Typer(no_args_is_help=True, help="The host labctl runs on.")
authkey_app = typer.Typer(no_args_is_help=True, help="The lab's Pacemaker authkey.")
app.add_typer(image_app, name="image")
app.add_typer(host_app, name="host")
snapshots_app = typer.Typer(no_args_is_help=True, help="A lab's snapshots.")
app.add_typer(authkey_app, name="authkey")
app.add_typer(snapshots_app, name="snapshots")

out = Console()
err = Console(stderr=True)
_debug = False
_plain = False


def _completion_state_dir(ctx: typer.Context) -> Path:
    given = ctx.params.get("state_dir")
    return Path(given or os.environ.get("LABCTL_STATE_DIR") or DEFAULT_STATE_DIR)


def _complete_lab(ctx: typer.Context, incomplete: str) -> list[str]:
    return complete.lab_names(_completion_state_dir(ctx), incomplete)


def _complete_node(ctx: typer.Context, incomplete: str) -> list[str]:
    return complete.node_names(_completion_state_dir(ctx), ctx.params.get("name"), incomplete)


# Every command's lab argument: completes to the state directory's labs.
LabArg = Annotated[str, typer.Argument(help="Lab name.", autocompletion=_complete_lab)]
StateDir = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar="LABCTL_STATE_DIR",
        help="Where labs and images are kept.",
        # Absolute: it is written into every domain's metadata and compared with it.
        callback=lambda p: Path(os.path.abspath(p)),
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _fail(e: LabctlError) -> None:
    if _debug:
        raise e
    # escape: messages quote paths and tool output, where "[/...]" is not markup.
    text = str(e)
    # Notes: what went wrong after it (a failed rollback), on the same line.
    notes = [str(n) for n in getattr(e, "__notes__", ())]
    if notes:
        text += f" ({'; '.join(notes)})"
    err.print(f"[red]labctl: {escape(text)}[/red]", highlight=False, soft_wrap=True)
    raise typer.Exit(e.exit_code)


def _note(text: str) -> None:
    err.print(f"[yellow]note:[/yellow] {escape(text)}", highlight=False, soft_wrap=True)


def _reporter() -> lab.Reporter:
    """Live progress on a terminal; today's plain lines otherwise, or with --plain."""
    if err.is_terminal and not _plain:
        return lab.Reporter(listen=progress.LiveProgress(err))
    return lab.Reporter(lambda m: err.print(f"[dim]·[/dim] {escape(m)}", highlight=False))


def _status_table(s: lab.LabStatus) -> Table:
    title = f"lab {s.name} — {s.mode} mode, {s.backend}, {s.subnet} ({s.state})"
    if s.dc:
        title += f"\nDC {s.dc}, {'quorate' if s.quorate else 'NO QUORUM'}"
        if s.dc_version:
            title += f", Pacemaker {s.dc_version}"
    if s.mixed:
        title += "\nmixed Pacemaker versions"
    if len(s.images) > 1:
        title += (
            f" (images {', '.join(s.images)})" if s.mixed else f"\nimages {', '.join(s.images)}"
        )
    if s.properties:
        title += "; " + ", ".join(f"{k}={v}" for k, v in s.properties.items())
    t = Table(title=title)
    captions = []
    if s.pacemaker_build:
        captions.append(f"Pacemaker build {s.pacemaker_build} from {s.pacemaker_tree}")
    if s.resources:
        where = ", ".join(f"{r} on {n or 'STOPPED'}" for r, n in s.resources.items())
        captions.append(f"test resources: {where}")
    if s.qdevice is not None:
        votes = ", ".join(f"{k} {v or 'not connected'}" for k, v in s.qdevice.votes.items())
        captions.append(
            f"quorum device {s.qdevice.node} ({s.qdevice.algorithm}): "
            + (s.qdevice.error or votes or "no cluster node connected")
        )
    if captions:
        t.caption = "\n".join(captions)
    # The image column only where nodes differ in it (a mixed lab): a narrow table.
    per_image = len(s.images) > 1
    columns = ["node", "role", "address", "domain", "pacemaker", "runs on", "version"]
    for col in [*columns, "feature set", *(["image"] if per_image else [])]:
        t.add_column(col)
    for n in s.nodes:
        fine = n.pacemaker.endswith("Online") or n.pacemaker == "unknown" or n.role == "qnetd"
        style = "" if fine else "red"
        version = f"{n.version} ({n.build}, {n.source})" if n.version else ""
        address = "\n".join([n.ip, *n.link_ips])  # link 0's first
        cells = [n.name, n.role, address, n.domain, n.pacemaker, n.runs_on, version, n.feature_set]
        t.add_row(*cells, *([n.image] if per_image else []), style=style)
    return t


def _print_status(s: lab.LabStatus, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(dataclasses.asdict(s)))
        return
    out.print(_status_table(s))
    for note in s.notes:
        out.print(f"[yellow]note:[/yellow] {escape(note)}")


def _version(value: bool) -> None:
    if value:
        out.print(__version__)
        raise typer.Exit(0)


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    plain: Annotated[
        bool,
        typer.Option("--plain", help="Progress as plain lines, also on a terminal."),
    ] = False,
    version: Annotated[
        bool,
        # eager: printed before click asks for the command `labctl --version` has none of
        typer.Option("--version", help="Print the version.", is_eager=True, callback=_version),
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="Wait for a lab another labctl is busy with, instead of refusing."
        ),
    ] = False,
) -> None:
    global _debug, _plain
    _debug = debug
    _plain = plain
    locks.WAIT = wait


@app.command()
def up(
    nodes: Annotated[
        int,
        typer.Option(
            "--nodes",
            "-n",
            help=f"Cluster nodes (cluster mode, 1-{MAX_CLUSTER_NODES}) or remote/guest nodes "
            f"(1-{MAX_OTHER_NODES}); the host's memory and limits may allow fewer.",
        ),
    ] = 3,
    name: Annotated[str, typer.Option("--name", help="Lab name: a host name label.")] = "lab",
    mode: Annotated[str, typer.Option("--mode", help="cluster, remote or guest.")] = "cluster",
    cluster_nodes: Annotated[
        int | None,
        typer.Option(
            "--cluster-nodes",
            help=f"Cluster nodes in remote/guest mode (default {DEFAULT_CLUSTER_NODES}).",
        ),
    ] = None,
    backend: Annotated[str, typer.Option("--backend", help="lxc (containers) or vm.")] = "lxc",
    network: Annotated[
        str, typer.Option("--network", help="isolated (default) or nat.")
    ] = "isolated",
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            help="Every node's image: a built image's name, or (with --backend vm) a cloud "
            f"image: PATH or URL of a qcow2 with cloud-init. [default: {images.DEFAULT_IMAGE}]",
            show_default=False,
        ),
    ] = None,
    cluster_image: Annotated[
        str | None,
        typer.Option(
            "--cluster-image", help="The cluster nodes' built image (a mixed lab), over --image."
        ),
    ] = None,
    remote_image: Annotated[
        str | None,
        typer.Option(
            "--remote-image",
            help="The remote or guest nodes' built image (a mixed lab), over --image.",
        ),
    ] = None,
    image_checksum: Annotated[
        str | None,
        typer.Option(
            "--image-checksum", help="sha256:HEX or sha512:HEX of --image PATH|URL (URL: needed)."
        ),
    ] = None,
    memory: Annotated[int, typer.Option("--memory", help="Memory per node, MiB.")] = 512,
    vcpus: Annotated[int, typer.Option("--vcpus", help="vCPUs per node.")] = 1,
    remote_port: Annotated[
        int, typer.Option("--remote-port", help="pacemaker_remote port.")
    ] = 3121,
    mirror: Annotated[
        str | None, typer.Option("--mirror", help="Debian mirror if the image must be built.")
    ] = None,
    fencing: Annotated[
        bool, typer.Option("--fencing/--no-fencing", help="fence_xvm fencing (default on).")
    ] = True,
    keep_on_failure: Annotated[
        bool, typer.Option("--keep-on-failure", help="Leave a failed lab for inspection.")
    ] = False,
    pacemaker: Annotated[
        Path | None,
        typer.Option(
            "--pacemaker",
            help="A Pacemaker source tree (git checkout or `apt-get source`): the nodes run "
            "a build of it, made when needed.",
        ),
    ] = None,
    resources: Annotated[
        int,
        typer.Option(
            "--resources",
            help="Test resources: N ocf:pacemaker:Dummy primitives (dummy-1..N), started.",
        ),
    ] = 0,
    packages: Annotated[
        list[str] | None,
        typer.Option(
            "--packages",
            help="Debian packages added to every node, comma-separated (containers; a "
            "layer built once per image and list).",
        ),
    ] = None,
    bare: Annotated[
        bool,
        typer.Option(
            "--bare",
            help="No cluster set up: nodes with packages, keys and names only (for pcs, "
            "crmsh, Ansible to set one up).",
        ),
    ] = False,
    links: Annotated[
        int,
        typer.Option(
            "--links",
            help="Corosync knet links: 2 gives every cluster node a second NIC on a "
            "second lab network (containers).",
        ),
    ] = 1,
    qdevice: Annotated[
        bool,
        typer.Option(
            "--qdevice",
            help="A quorum device: a node running corosync-qnetd (LAB-q1, no cluster "
            "member), and corosync-qdevice on the cluster nodes.",
        ),
    ] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: AsJson = False,
) -> None:
    """Create a lab and wait until every node is ready."""
    try:
        spec = make_spec(
            name,
            nodes,
            mode=mode,
            cluster_nodes=cluster_nodes,
            backend=backend,
            network=network,
            image=image,
            memory_mib=memory,
            vcpus=vcpus,
            remote_port=remote_port,
            fencing=fencing,
            image_checksum=image_checksum,
            pacemaker=str(pacemaker) if pacemaker else None,
            cluster_image=cluster_image,
            remote_image=remote_image,
            resources=resources,
            packages=packages or [],
            bare=bare,
            links=links,
            qdevice=qdevice,
        )
        s = lab.up(spec, state_dir, _reporter(), keep_on_failure=keep_on_failure, mirror=mirror)
    except LabctlError as e:
        _fail(e)
        return
    _print_status(s, as_json)


@app.command()
def down(
    name: Annotated[
        str | None, typer.Argument(help="Lab to remove.", autocompletion=_complete_lab)
    ] = None,
    all_labs: Annotated[
        bool, typer.Option("--all", help="Remove every lab of the state directory.")
    ] = False,
    fast: Annotated[
        bool,
        typer.Option(
            "--fast",
            help="Guest labs: maintenance mode instead of having the cluster stop each guest.",
        ),
    ] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Remove a lab and everything it made; safe to run twice."""
    try:
        if all_labs == (name is not None):
            raise LabctlError("give either a lab name or --all")
        if all_labs:
            found = lab.survey(state_dir)
            names = found.mine
            for note in found.notes:
                _note(note)
            for n in found.labs:
                if n not in found.mine:
                    _note(
                        f"lab {n}: not of state directory {state_dir} (no record there, and "
                        f"no domain of it names it), skipped: `labctl down {n} --state-dir DIR` "
                        "with its own state directory removes it"
                    )
        else:
            names = [validate_name(name or "")]
        rep = _reporter()
        for n in names:
            with rep.phase(f"down {n}"):
                r = lab.down(n, state_dir, fast=fast)
            if r.anything:
                out.print(
                    f"lab {n}: removed {len(r.domains)} domain(s), "
                    f"{'the network, ' if r.network else ''}{r.mounts} mount(s), "
                    f"{'its directory' if r.directory else 'no directory'}"
                )
            else:
                out.print(f"lab {n}: nothing left to remove")
    except LabctlError as e:
        _fail(e)


@app.command()
def status(
    name: LabArg = "lab",
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: AsJson = False,
) -> None:
    """What a lab has, and the state of each node."""
    try:
        s = lab.status(validate_name(name), state_dir)
    except LabctlError as e:
        _fail(e)
        return
    _print_status(s, as_json)


@app.command("list")
def list_(state_dir: StateDir = DEFAULT_STATE_DIR, as_json: AsJson = False) -> None:
    """Labs on this host."""
    try:
        found = lab.survey(state_dir)
        labs = [lab.status(n, state_dir) for n in found.labs]
    except LabctlError as e:
        _fail(e)
        return
    for note in found.notes:
        _note(note)
    if as_json:
        out.print_json(json.dumps([dataclasses.asdict(s) for s in labs]))
        return
    t = Table()
    for col in ("lab", "state", "mode", "backend", "subnet", "nodes", "images"):
        t.add_column(col)
    for s in labs:
        running = sum(n.domain == "running" for n in s.nodes)
        imgs = ", ".join(s.images) + (" (mixed)" if s.mixed else "")
        nodes = f"{running}/{len(s.nodes)} running"
        t.add_row(s.name, s.state, s.mode, s.backend, s.subnet, nodes, imgs)
    out.print(t)


@app.command()
def ssh(
    name: LabArg,
    node: Annotated[str, typer.Argument(help="Node name.", autocompletion=_complete_node)],
    command: Annotated[list[str] | None, typer.Argument(help="Command to run (after --).")] = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Log in to a node as root, or run a command there, with the lab's key."""
    try:
        if command:
            r = lab.run_on(validate_name(name), node, " ".join(command), state_dir)
            sys.stdout.write(r.stdout)
            sys.stderr.write(r.stderr)
            raise typer.Exit(r.status)
        argv = lab.ssh_command(validate_name(name), node, state_dir)
    except LabctlError as e:
        _fail(e)
        return
    os.execvp(argv[0], argv)


@app.command()
def build(
    tree: Annotated[Path, typer.Argument(help="A Pacemaker source tree.")],
    image: Annotated[
        str, typer.Option("--image", help="The image whose nodes the build is for.")
    ] = images.DEFAULT_IMAGE,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", help="make -jN (default: cores).")
    ] = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Build a Pacemaker source tree for the nodes of IMAGE (cached; rebuilds what changed)."""
    try:
        r = _reporter()
        phase = f"build Pacemaker from {tree}"
        with r.phase(phase):
            b = pcmkbuild.build(
                state_dir, tree, image, r.emit, jobs=jobs, compiled=r.tally(phase, "compiler runs")
            )
    except LabctlError as e:
        _fail(e)
        return
    out.print(f"build {b.label}: Pacemaker {b.manifest['version']} from {b.manifest['tree']}")


@app.command("deploy")
def deploy_(
    name: LabArg,
    tree: Annotated[
        Path | None, typer.Argument(help="Source tree (default: the one the lab was made from).")
    ] = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: AsJson = False,
) -> None:
    """Rebuild a Pacemaker tree and restart every node of a running lab on the new build."""
    try:
        s = deploy.deploy(validate_name(name), state_dir, tree, _reporter())
    except LabctlError as e:
        _fail(e)
        return
    _print_status(s, as_json)


@app.command("upgrade")
def upgrade_(
    name: LabArg,
    nodes: Annotated[
        list[str] | None, typer.Argument(help="Nodes to upgrade, in order (default: all).")
    ] = None,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="The built image to upgrade to, or a Pacemaker build (IMAGE/NAME, see "
            "`labctl image list`).",
        ),
    ] = "",
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Watch the cluster meanwhile (crm_mon once a second): quorum, resource "
            "downtime, fencing, DC changes; exit 1 if the upgrade broke a promise.",
        ),
    ] = False,
    bound: Annotated[
        float,
        typer.Option("--bound", help="--check: seconds a resource may be down (a failover)."),
    ] = upgrade.check.DEFAULT_BOUND,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: AsJson = False,
) -> None:
    """Rolling upgrade: each node in turn put in standby, restarted on IMAGE, back online."""
    try:
        if not to:
            raise UsageError("give the image to upgrade to: --to IMAGE (see `labctl image list`)")
        r = upgrade.upgrade(
            validate_name(name), state_dir, to, nodes or [], check, bound, _reporter()
        )
    except LabctlError as e:
        _fail(e)
        return
    if as_json:
        out.print_json(json.dumps(r.to_dict()))
    else:
        _print_upgrade(r)
    raise typer.Exit(0 if r.check is None or r.check.ok else 1)


def _print_upgrade(r: upgrade.UpgradeResult) -> None:
    t = Table(title=f"lab {r.lab}: upgrade to {r.to_image} in {r.seconds:.0f} s")
    for col in ("node", "image", "Pacemaker", "DC before", "seconds", "phases (s)"):
        t.add_column(col)
    for n in r.nodes:
        phases = ", ".join(f"{k} {v:.1f}" for k, v in n.phases.items())
        t.add_row(
            n.name,
            f"{n.from_image} → {n.to_image}",
            f"{n.version_before} → {n.version_after}",
            n.dc_before,
            f"{n.seconds:.1f}",
            phases,
        )
    out.print(t)
    if r.skipped:
        out.print(f"already on {r.to_image}: {', '.join(r.skipped)}")
    if not r.nodes:
        out.print("nothing to upgrade")
    c = r.check
    if c is None:
        return
    ct = Table(title=f"while upgrading: {c.samples} crm_mon samples ({c.unanswered} unanswered)")
    ct.add_column("check")
    ct.add_column("result")
    ct.add_row(
        "quorum kept", "yes" if c.quorum_kept else "NO", style="" if c.quorum_kept else "red"
    )
    for res, secs in c.longest_down.items():
        style = "red" if secs > c.bound else ""
        ct.add_row(f"{res} longest down", f"{secs:.1f} s (bound {c.bound:.0f} s)", style=style)
    fenced = ", ".join(f.target for f in c.fenced) or "nobody"
    ct.add_row("fenced", fenced, style="red" if c.fenced else "")
    if c.restarted:
        ct.add_row("restarted by someone else", ", ".join(c.restarted), style="red")
    changes = "; ".join(
        f"{d.t:.0f} s {d.old or '(none)'} → {d.new or '(none)'}" for d in c.dc_changes
    )
    ct.add_row("DC changes", f"{len(c.dc_changes)}: {changes}" if changes else "none")
    ct.add_row("no DC (elections)", f"{c.no_dc_seconds:.1f} s")
    out.print(ct)
    for f in c.findings:
        out.print(f"[red]finding:[/red] {escape(f)}")
    out.print("[green]check passed[/green]" if c.ok else "[red]check failed[/red]")


@image_app.command("build")
def image_build(
    name: Annotated[str, typer.Argument(help="Image name.")] = images.DEFAULT_IMAGE,
    mirror: Annotated[
        str | None, typer.Option("--mirror", help="Debian mirror (default: the host's apt source).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if it exists.")] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Build (or reuse) a base image."""
    try:
        r = _reporter()
        with r.phase(f"image {name}"):
            img = images.build_image(state_dir, name, mirror=mirror, progress=r.emit, force=force)
        lab.collect_vm_garbage(state_dir)
    except LabctlError as e:
        _fail(e)
        return
    out.print(f"image {img.name}: {img.dir} ({img.manifest['checksum'][:19]}…)")


@image_app.command("list")
def image_list(state_dir: StateDir = DEFAULT_STATE_DIR, as_json: AsJson = False) -> None:
    """Built images, and the cloud images cached for --image PATH|URL."""
    imgs = images.list_images(state_dir)
    clouds = cloudimage.list_cached(state_dir)
    builds = pcmkbuild.list_builds(state_dir)
    if as_json:
        cloud_rows = [
            {
                "sha256": c.sha256,
                "source": c.source,
                "virtual_size": c.virtual_size,
                "path": str(c.path),
            }
            for c in clouds
        ]
        out.print_json(
            json.dumps(
                {
                    "built": [
                        {
                            **i.manifest,
                            "size_bytes": images.manifest_size(i.manifest),
                            "pacemaker_version": images.manifest_pacemaker_version(i.manifest),
                        }
                        for i in imgs
                    ],
                    "cloud": cloud_rows,
                    "pacemaker_builds": [{"name": b.label, **b.manifest} for b in builds],
                }
            )
        )
        return
    t = Table()
    for col in ("image", "suite", "pacemaker", "MiB", "layers (MiB)", "created", "checksum"):
        t.add_column(col)
    for i in imgs:
        m = i.manifest
        layers = ", ".join(f"{k} {v['size_bytes'] >> 20}" for k, v in m["layers"].items())
        t.add_row(
            i.name + (" (stale)" if i.stale else ""),
            m["suite"],
            images.manifest_pacemaker_version(m) or "?",
            str(images.manifest_size(m) >> 20),
            layers,
            m["created"],
            m["checksum"][:19] + "…",
        )
    out.print(t)
    if clouds:
        c_t = Table(title="cloud images (--image PATH|URL)")
        for col in ("sha256", "source", "size (GiB)"):
            c_t.add_column(col)
        for c in clouds:
            c_t.add_row(c.sha256[:16] + "…", c.source, f"{c.virtual_size / 2**30:.1f}")
        out.print(c_t)
    if builds:
        b_t = Table(title="Pacemaker builds (--pacemaker DIR)")
        for col in ("build", "version", "tree", "created", "MiB"):
            b_t.add_column(col)
        for b in builds:
            m = b.manifest
            b_t.add_row(b.label, m["version"], m["tree"], m["created"], str(m["size_bytes"] >> 20))
        out.print(b_t)


@image_app.command("rm")
def image_rm(
    name: Annotated[
        str,
        typer.Argument(
            help="A built image's name, a Pacemaker build (pcmk-...), "
            "or the sha256 (prefix) of a cloud image."
        ),
    ],
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Delete a built image or a cached cloud image (refused while a lab uses it)."""
    try:
        host.require_root("labctl image rm")
        if name not in images.IMAGES and re.fullmatch(r"[0-9a-fA-F]{6,64}", name):
            gone = cloudimage.remove_cached(state_dir, name)
            out.print(f"cloud image {gone.sha256[:12]}… ({escape(gone.source)}) removed")
            return
        if name.split("/")[-1].startswith("pcmk-"):
            b = pcmkbuild.resolve(state_dir, name)
            # Every node of a lab may run it, or some (part way through an upgrade).
            used = {
                n: b.label
                for n in state.recorded_labs(state_dir)
                if (r := state.read_record(state_dir, n))
                and b.label in (r.build, *r.node_builds.values())
            }
            pcmkbuild.remove_build(b, used)
            out.print(f"build {b.label} removed")
            return
        lab.remove_image(state_dir, name)
    except LabctlError as e:
        _fail(e)
        return
    out.print(f"image {name} removed")


@app.command()
def fence(
    name: LabArg,
    node: Annotated[str, typer.Argument(help="Node to fence.", autocompletion=_complete_node)],
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Fence a node through the cluster (stonith_admin); return once it is back online."""
    try:
        lab.fence(validate_name(name), node, state_dir, _reporter())
    except LabctlError as e:
        _fail(e)
        return
    out.print(f"{node} was fenced and is back online")


@app.command("net")
def net_(
    name: LabArg,
    action: Annotated[
        str,
        typer.Argument(
            metavar="ACTION",
            help="show | partition A,B C,.. | heal | delay NODE|all 300ms [JITTER] | "
            "loss NODE|all 10% | clear | down NODE|all | up NODE|all",
        ),
    ] = "show",
    args: Annotated[list[str] | None, typer.Argument(metavar="[ARGS]...")] = None,
    link: Annotated[
        int | None, typer.Option("--link", help="down/up: that link only (default: all).")
    ] = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: AsJson = False,
) -> None:
    """Network faults between the lab's nodes, made on the host; `down` removes them."""
    try:
        r = net.net(validate_name(name), action, args or [], link, state_dir)
    except LabctlError as e:
        _fail(e)
        return
    if as_json:
        out.print_json(json.dumps(r.to_dict()))
        return
    lines = r.state.describe()
    if not lines:
        out.print(f"lab {name}: no network faults")
    for line in lines:
        out.print(line, highlight=False)
    if r.state.delays and r.delayer is None:
        _note(
            f"the delayer of lab {name} is not running: `labctl net {name} clear`, then delay again"
        )


@app.command("ssh-config")
def ssh_config(
    name: LabArg,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Print an OpenSSH config block for the lab's nodes (for an Include)."""
    try:
        p = lab.load_plan(validate_name(name), state_dir)
    except LabctlError as e:
        _fail(e)
        return
    sys.stdout.write(sshconfig.ssh_config(p))


@app.command("exec")
def exec_(
    name: LabArg,
    command: Annotated[
        list[str] | None,
        typer.Argument(
            help="After --: one argument is a shell command line; several are quoted words."
        ),
    ] = None,
    roles: Annotated[
        list[str] | None, typer.Option("--role", help="Only nodes of this role (repeatable).")
    ] = None,
    nodes: Annotated[
        list[str] | None, typer.Option("--node", help="Only this node (repeatable).")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds the command may take on each node.")
    ] = execute.DEFAULT_TIMEOUT,
    as_json: AsJson = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Run one command on many nodes at once; output grouped per node; non-zero if any failed."""
    try:
        p = lab.load_plan(validate_name(name), state_dir)
        targets = execute.select(p, roles or [], nodes or [])
        results = execute.run(p, targets, execute.command_line(command or []), timeout)
    except LabctlError as e:
        _fail(e)
        return
    if as_json:
        out.print_json(json.dumps(execute.to_json(results)))
    else:
        for stream, text in execute.plain(results):
            # One stream at a time, flushed, so that a terminal shows each node's block whole.
            f = sys.stdout if stream == "stdout" else sys.stderr
            f.write(text)
            f.flush()
    failed = execute.failures(results)
    if failed:
        _fail(LabctlError(failed))


@app.command("collect")
def collect_(
    name: LabArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Archive to write (default: LAB-evidence-TIME.tar.gz)."
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Journals from this time (journalctl's words; default: up)."),
    ] = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """One archive of the evidence: journals, crm_report, CIB, corosync, cores; no secrets."""
    try:
        host.require_root("labctl collect")
        rep = _reporter()
        with rep.phase(f"collect {name}"):
            path = collect.collect(validate_name(name), state_dir, output, since)
    except LabctlError as e:
        _fail(e)
        return
    out.print(str(path))


@app.command("inventory")
def inventory_(
    name: LabArg,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="yaml (the default: `ansible -i <(labctl inventory LAB)` reads it), json or "
            "ini (from a file only: Ansible reads a pipe once, with its YAML parser first).",
        ),
    ] = "yaml",
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Print an Ansible inventory of the lab: groups by role, the lab's key and host keys."""
    try:
        text = inventory.render(
            inventory.inventory(lab.load_plan(validate_name(name), state_dir)), fmt
        )
    except LabctlError as e:
        _fail(e)
        return
    sys.stdout.write(text)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def cts(
    ctx: typer.Context,
    name: LabArg,
    pacemaker_src: Annotated[
        Path | None,
        typer.Option("--pacemaker-src", help="A configured Pacemaker source tree."),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="CTS's random seed.")] = 1,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout", help="Stop CTS after this many seconds (default: from the iterations)."
        ),
    ] = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: AsJson = False,
) -> None:
    """Run Pacemaker's CTS against a lab: `labctl cts LAB -- [CTS ARGS...] ITERATIONS`."""
    extra = list(ctx.args)
    iterations = 1
    if extra and extra[-1].isdigit():
        iterations = int(extra.pop())
    try:
        rep = _reporter()
        with rep.phase(f"CTS on {name}, {iterations} iteration(s)"):
            r = cts_run.run(
                validate_name(name),
                state_dir,
                src=pacemaker_src,
                iterations=iterations,
                seed=seed,
                extra=extra,
                emit=rep.emit,
                timeout=timeout,
            )
    except LabctlError as e:
        _fail(e)
        return
    if as_json:
        out.print_json(json.dumps(r.to_dict()))
    else:
        s = r.summary
        t = Table(title=f"CTS on lab {name} (Pacemaker {r.pacemaker_version}): {r.outputfile}")
        for col in ("test", "run", "passed", "failed", "skipped", "audit failures", "note"):
            t.add_column(col)
        for ts in (x for x in s.tests if x.calls):
            style = "red" if ts.failure else ""
            t.add_row(
                ts.name,
                str(ts.calls),
                str(ts.passed),
                str(ts.failure),
                str(ts.skipped),
                str(ts.auditfail),
                "",
                style=style,
            )
        for na in r.not_applicable or ():
            t.add_row(na.test, "-", "-", "-", "-", "-", "not applicable", style="dim")
        if r.not_applicable is None:
            t.add_row("?", "", "", "", "", "", "applicability unknown", style="yellow")
        t.add_row(
            "all",
            str(s.success + s.failure),
            str(s.success),
            str(s.failure),
            str(s.skipped),
            f"BadNews {s.bad_news}",
            "",
            style="bold",
        )
        out.print(t)
        for na in r.not_applicable or ():
            out.print(f"not applicable: {na.test}: {na.why}", highlight=False)
        if r.not_applicable is None:
            out.print("CTS --list-tests gave no list: which tests are not applicable is unknown")
        out.print("[green]CTS passed[/green]" if s.ok else "[red]CTS failed[/red]")
    raise typer.Exit(0 if r.summary.ok else 1)


@authkey_app.command("rotate")
def authkey_rotate(
    name: LabArg,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Replace the lab's authkey on every node and re-make remote connections with it."""
    try:
        lab.rotate_authkey(validate_name(name), state_dir, _reporter())
    except LabctlError as e:
        _fail(e)
        return
    out.print(f"lab {name}: authkey replaced on every node; all nodes online")


@app.command("snapshot")
def snapshot_(
    name: LabArg,
    snapshot_name: Annotated[
        str | None, typer.Argument(metavar="[NAME]", help="Snapshot name (default: the time).")
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace a snapshot of that name.")
    ] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: AsJson = False,
) -> None:
    """Save every node's state (the lab paused for a moment): `restore` goes back to it."""
    try:
        s = snapshot.take(validate_name(name), state_dir, snapshot_name, replace)
    except LabctlError as e:
        _fail(e)
        return
    if as_json:
        out.print_json(json.dumps(s.to_dict()))
        return
    out.print(f"lab {name}: snapshot {s.name} taken (paused {s.paused_s:.2f} s)")


@app.command("restore")
def restore_(
    name: LabArg,
    snapshot_name: Annotated[
        str | None, typer.Argument(metavar="[NAME]", help="Snapshot (default: the newest).")
    ] = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: AsJson = False,
) -> None:
    """Put every node back to a snapshot; return once every node is online."""
    try:
        r = restore.restore(validate_name(name), state_dir, snapshot_name, _reporter())
    except LabctlError as e:
        _fail(e)
        return
    _print_restored(r, as_json)


@app.command("reset")
def reset(
    name: LabArg,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: AsJson = False,
) -> None:
    """Put every node back to the state `up` left it in; return once every node is online."""
    try:
        r = restore.reset(validate_name(name), state_dir, _reporter())
    except LabctlError as e:
        _fail(e)
        return
    _print_restored(r, as_json)


def _print_restored(r: restore.Restored, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(dataclasses.asdict(r)))
        return
    online = sum(1 for state in r.nodes.values() if state.endswith("Online"))
    out.print(
        f"lab {r.lab}: back to snapshot {r.snapshot}, {online} of {len(r.nodes)} nodes online "
        f"(as when it was taken) in {r.seconds:.1f} s (`labctl status {r.lab}` for more)"
    )


@snapshots_app.command("list")
def snapshots_list(
    name: LabArg,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: AsJson = False,
) -> None:
    """A lab's snapshots, oldest first (`up` is the one `reset` restores)."""
    try:
        snaps = snapshot.listing(validate_name(name), state_dir)
    except LabctlError as e:
        _fail(e)
        return
    if as_json:
        out.print_json(json.dumps([x.to_dict() for x in snaps]))
        return
    t = Table()
    for col in ("snapshot", "created", "nodes", "KiB", "paused s"):
        t.add_column(col)
    for x in snaps:
        t.add_row(x.name, x.created, str(len(x.nodes)), str(x.size >> 10), f"{x.paused_s:.2f}")
    out.print(t)


@snapshots_app.command("rm")
def snapshots_rm(
    name: LabArg,
    snapshot_name: Annotated[str, typer.Argument(metavar="NAME", help="Snapshot name.")],
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Delete one snapshot of a lab (`down` deletes them all with the lab)."""
    try:
        snapshot.remove(validate_name(name), state_dir, snapshot_name)
    except LabctlError as e:
        _fail(e)
        return
    out.print(f"lab {name}: snapshot {snapshot_name} removed")


@host_app.command("check")
def host_check(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """What this host has ready for labctl, and the command that fixes what is missing."""
    bad = 0
    for c in host.checks(state_dir):
        mark = "[green]ok[/green]  " if c.ok else "[red]MISSING[/red]"
        line = f"{mark} {c.name}: {c.detail}"
        if not c.ok and c.fix:
            line += f"  [yellow]→ {c.fix}[/yellow]"
            bad += 1
        out.print(line, highlight=False)
    raise typer.Exit(1 if bad else 0)


def main() -> None:
    proc.end_on_sigterm()
    app()
