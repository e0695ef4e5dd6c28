"""`labctl deploy`: a new Pacemaker build on a running lab, every node restarted on it.

A container's root is an overlay whose lower layers are fixed when it is mounted,
so swapping the build means a restart of the node: its own upper layer (its
configuration, CIB, keys) stays. The cluster is put in maintenance mode and
stopped first, so that neither the stop nor the restart moves or fences
anything; then every node is stopped, remounted over the new layers and
started, the cluster forms again, the lab's configuration is applied again
(CTS may have replaced the CIB and the authkey), maintenance mode is lifted
(the cluster starts its guests again) and `up`'s readiness rule applies.
"""

from __future__ import annotations

import dataclasses
import io
import tarfile
from functools import partial
from pathlib import Path

from labctl import (
    host,
    images,
    lab,
    locks,
    mounts,
    pcmkbuild,
    plan,
    provision,
    ssh,
    stack,
    state,
    virt,
)
from labctl.errors import LabctlError, NotFoundError, UsageError
from labctl.plan import LabPlan, NodePlan
from labctl.xml import lxc_domain_xml


def deploy(
    name: str, state_dir: Path, tree: Path | None = None, reporter: lab.Reporter | None = None
) -> lab.LabStatus:
    """Build TREE (default: the lab's own tree) and restart every node of lab NAME on it."""
    with locks.hold("lab", name, locks.command_line()):
        return _deploy(name, state_dir, tree, reporter)


def _deploy(
    name: str, state_dir: Path, tree: Path | None, reporter: lab.Reporter | None
) -> lab.LabStatus:
    reporter = reporter or lab.Reporter()
    host.require_root("labctl deploy")
    rec = state.read_record(state_dir, name)
    if rec is None:
        raise NotFoundError(f"no lab {name!r} here: `labctl list` shows the labs on this host")
    src = tree or (Path(rec.spec.pacemaker) if rec.spec.pacemaker else None)
    if src is None and rec.build:
        # Rolled on by `upgrade --to BUILD`: the tree is the one the build was made from.
        made_from = str(pcmkbuild.resolve(state_dir, rec.build).manifest.get("tree") or "")
        src = Path(made_from) if made_from else None
        if src is not None and not (src / "configure.ac").is_file():
            raise UsageError(
                f"lab {name!r} runs build {rec.build}, made from {made_from}, which is no "
                f"source tree any more: give one, `labctl deploy {name} DIR`"
            )
    if src is None and rec.node_builds:
        raise UsageError(
            f"lab {name!r} is part way through an upgrade to a build: finish it with "
            f"`labctl upgrade {name} --to BUILD`, or give a source tree, `labctl deploy "
            f"{name} DIR`"
        )
    if src is None:
        raise UsageError(
            f"lab {name!r} runs {rec.spec.image}'s own Pacemaker: give a source tree, "
            f"`labctl deploy {name} DIR`"
        )
    if rec.spec.cloud_image:
        raise UsageError(f"lab {name!r} runs a cloud image, which cannot take a build")
    lab.refuse_bare(rec.plan(state_dir), "`labctl deploy`")
    if rec.plan(state_dir).mixed:
        # As `up --pacemaker`: one build on every node, made for one image.
        raise UsageError(
            f"lab {name!r} is mixed ({' and '.join(rec.plan(state_dir).images)}): a build goes "
            "on every node and is made for one image, so a mixed lab cannot take one"
        )
    spec = dataclasses.replace(rec.spec, pacemaker=str(src.expanduser().resolve()))
    p = plan.make_plan(spec, rec.subnet_index, state_dir, rec.node_images)
    with reporter.phase("build Pacemaker"):
        b = pcmkbuild.build(
            state_dir,
            src,
            spec.image,
            reporter.emit,
            compiled=reporter.tally("build Pacemaker", "compiler runs"),
        )
    image = images.find_image(state_dir, spec.image)
    if image is None:
        raise NotFoundError(f"image {spec.image!r} of lab {name!r} is gone: rebuild it")
    with reporter.phase("cluster stopped (maintenance mode)"):
        _stop_cluster(p)
    with reporter.phase("nodes restarted on the new build"):
        _swap(p, image, b)
        lab.parallel(partial(_copy_into_vm, p, _layer_tar(b)), list(p.vm_nodes))
        state.write_record(p, rec.state, created=rec.created, build=b.label)
    with reporter.phase("ssh ready"):
        lab.parallel(_reach, [(p, n) for n in p.nodes if n.role != "guest" or n.backend == "vm"])
    with reporter.phase("cluster formed"):
        lab.parallel(_start_cluster_node, [(p, n) for n in p.cluster_nodes])
        with lab.connect(p, p.cluster_nodes[0]) as c:
            stack.wait_online(c, {n.name: "cluster" for n in p.cluster_nodes})
            lab.configure_cluster(p, c)
            lab.register_others(p, c)
            stack.delete_property(c, "maintenance-mode")
    lab.parallel(partial(lab.mark_formed, p), list(p.cluster_nodes))
    with reporter.phase("all online"), lab.connect(p, p.cluster_nodes[0]) as c:
        stack.wait_online(c, {n.name: n.role for n in p.nodes})
    return lab.status(name, state_dir)


def _stop_cluster(p: LabPlan) -> None:
    """Maintenance mode, the lab's authkey back (CTS replaces it), then the stack
    stopped on every cluster node that answers; one that does not is stopped hard."""
    authkey, _ = stack.lab_keys(p)
    reachable = []
    for node in p.cluster_nodes:
        try:
            with lab.connect(p, node) as c:
                c.run("true")
            reachable.append(node)
        except LabctlError:
            continue
    for node in reachable:
        try:
            with lab.connect(p, node) as c:
                stack.set_properties(c, {"maintenance-mode": "true"})
            break
        except LabctlError:
            continue  # no cluster running there (CTS may have left it stopped)

    def stop(node: NodePlan) -> None:
        with lab.connect(p, node) as c:
            stack.push_authkey(c, authkey)
            # The rejoin delay is for fenced nodes; this restart is labctl's own.
            c.run(f"rm -f {provision.FORMED_MARKER}")
            c.run("systemctl stop pacemaker.service corosync.service")

    lab.parallel(stop, reachable)


def _swap(p: LabPlan, image: images.Image, b: pcmkbuild.Build) -> None:
    legacy = host.cgroup_layout() == "hybrid"
    with virt.connection(virt.default_uri("lxc")) as conn:

        def stop(node: NodePlan) -> None:
            virt.remove_domain(conn, node.name, kill_init=True)
            for target in mounts.mounts_under(node.dir):
                mounts.unmount(target)
            mounts.mount_overlay(
                lab.lowers(image, b, node.layer, node.packages), node.upper, node.work, node.root
            )
            # A lab made by a labctl without the init wrapper gets it now.
            lab.write_files(node.root, [provision.lxc_init_file()])

        lab.parallel(stop, [n for n in p.nodes if n.backend == "lxc"])

        def start(node: NodePlan) -> None:
            mounts_ = provision.host_mounts(p, node)
            virt.define_and_start(
                conn, lxc_domain_xml(p, node, legacy_cgroups=legacy, mounts=mounts_)
            )

        # Guests are the cluster's to start, once maintenance mode is lifted.
        lab.parallel(start, [n for n in p.nodes if n.role != "guest" and n.backend == "lxc"])


def _layer_tar(b: pcmkbuild.Build) -> bytes:
    """The build's install layer as a tar.gz, owners numeric (the image's ids)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for entry in sorted(b.install.iterdir()):
            tar.add(entry, arcname=entry.name)
    return buf.getvalue()


def _copy_into_vm(p: LabPlan, layer: bytes, node: NodePlan) -> None:
    """A VM's disk is a copy-on-write image of a file system, whose backing cannot be
    swapped under it: the build's layer is copied into the running VM instead, and
    its Pacemaker restarted on it (the cluster side is stopped, in maintenance mode)."""
    with lab.connect(p, node) as c:
        c.put(layer, "/var/tmp/labctl-build.tar.gz", mode=0o600)
        c.run(
            "tar -xzf /var/tmp/labctl-build.tar.gz --numeric-owner --no-overwrite-dir -C / "
            "&& rm /var/tmp/labctl-build.tar.gz && ldconfig && systemctl daemon-reload"
        )
        if node.role != "cluster":
            c.run("systemctl restart pacemaker_remote.service")


def _reach(item: tuple[LabPlan, NodePlan]) -> None:
    p, node = item
    ssh.wait_for_banner(str(node.ip), timeout=lab.SSH_TIMEOUT)
    with lab.connect(p, node) as c:
        c.run("true")


def _start_cluster_node(item: tuple[LabPlan, NodePlan]) -> None:
    p, node = item
    with lab.connect(p, node) as c:
        # Enabled at boot already, unless a CTS run left them disabled.
        c.run("systemctl enable --now corosync.service pacemaker.service")
