"""cloud-init NoCloud seeds: how a node booted from a user's cloud image learns
its lab identity (host name, pinned SSH host key, lab keys, /etc/hosts).

The documents are JSON, which is YAML too, so they are exact without a YAML
writer. The authkey is not in the seed: it is pushed over SSH like on any node.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import pycdlib

from labctl.plan import LabPlan, NodePlan
from labctl.provision import NodeFile

SEED_LABEL = "cidata"  # what cloud-init's NoCloud data source looks for
# Set by cloud-init itself (hostname, ssh_keys); writing them too would race it.
_CLOUD_INIT_OWNS = frozenset(
    {"/etc/hostname", "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key.pub"}
)


def meta_data(plan: LabPlan, node: NodePlan) -> str:
    return json.dumps(
        {"instance-id": f"labctl-{plan.name}-{node.name}", "local-hostname": node.name}
    )


def network_config(node: NodePlan) -> str:
    """DHCP on the lab NIC, found by its MAC: the lab network hands out fixed addresses."""
    nic = {"match": {"macaddress": node.mac}, "dhcp4": True}
    return json.dumps({"version": 2, "ethernets": {"lab0": nic}})


def user_data(
    node: NodePlan,
    files: list[NodeFile],
    *,
    host_key_private: bytes,
    host_key_public: str,
    lab_key_public: str,
) -> str:
    config = {
        "hostname": node.name,
        "preserve_hostname": False,
        "manage_etc_hosts": False,  # labctl's /etc/hosts names every lab node
        "locale": False,  # the image's own; setting one costs seconds under TCG
        "disable_root": False,  # labctl, CTS and the cluster tools log in as root
        "ssh_pwauth": False,
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {
            "ed25519_private": host_key_private.decode(),
            "ed25519_public": host_key_public,
        },
        "ssh_authorized_keys": [lab_key_public],
        "write_files": [
            {
                "path": f.path,
                "encoding": "b64",
                "content": base64.b64encode(f.data).decode(),
                "owner": "root:root",
                "permissions": f"0{f.mode:o}",
            }
            for f in files
            if f.path not in _CLOUD_INIT_OWNS
        ],
    }
    return "#cloud-config\n" + json.dumps(config, indent=1) + "\n"


def seed_documents(
    plan: LabPlan,
    node: NodePlan,
    files: list[NodeFile],
    *,
    host_key_private: bytes,
    host_key_public: str,
    lab_key_public: str,
) -> dict[str, bytes]:
    """The NoCloud seed's files, by name. Pure."""
    return {
        "meta-data": meta_data(plan, node).encode(),
        "user-data": user_data(
            node,
            files,
            host_key_private=host_key_private,
            host_key_public=host_key_public,
            lab_key_public=lab_key_public,
        ).encode(),
        "network-config": network_config(node).encode(),
    }


def _iso9660_name(name: str) -> str:
    return "/" + re.sub("[^A-Z0-9_]", "", name.upper())[:8] + ".;1"


def write_seed(path: Path, documents: dict[str, bytes]) -> None:
    """An ISO 9660 volume labelled cidata holding DOCUMENTS (Rock Ridge and Joliet
    names, as cloud-localds makes it). 0600: it carries the node's keys."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=SEED_LABEL)
    for name, data in documents.items():
        iso.add_fp(
            io.BytesIO(data), len(data), _iso9660_name(name), rr_name=name, joliet_path="/" + name
        )
    path.unlink(missing_ok=True)
    # 0600 from the moment it exists, before a byte of the keys is in it.
    f = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
    try:
        iso.write_fp(f)
    finally:
        f.close()
        iso.close()
