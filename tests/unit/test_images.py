import dataclasses

from labctl import images


def test_a_layer_script_is_part_of_the_recipe_so_old_images_are_rebuilt():
    d = images.DEBIAN12
    without = dataclasses.replace(d, layer_scripts={})
    other = dataclasses.replace(d, layer_scripts={"cluster": d.layer_scripts["cluster"] + "\n"})
    digests = {images.recipe_digest(x) for x in (d, without, other)}
    assert len(digests) == 3


def test_the_cluster_layer_takes_pacemaker_remoted_without_installing_its_package():
    script = images.DEBIAN12.layer_scripts["cluster"]
    assert "pacemaker-remote" not in images.DEBIAN12.layers["cluster"]
    assert "apt-get download" in script and "dpkg-deb -x" in script
    assert "dpkg -i" not in script and "systemctl enable" not in script
    assert "/usr/sbin/pacemaker-remoted" in script and "pacemaker_remote.service" in script


def _image(tmp_path, created="2026-11-26T10:00:00+00:00", checksum="sha256:aa"):
    return images.Image(
        "debian12", tmp_path / "debian12", {"created": created, "checksum": checksum}
    )


def test_vm_disk_names_differ_per_image_build_so_a_rebuild_never_overwrites_a_used_one(tmp_path):
    old = images.vm_image_paths(_image(tmp_path), "remote")
    new = images.vm_image_paths(_image(tmp_path, created="2026-11-26T11:00:00+00:00"), "remote")
    assert old.disk.parent == new.disk.parent == tmp_path / "debian12" / "vm"
    assert old.disk != new.disk and old.kernel != new.kernel and old.initrd != new.initrd
    assert old.disk.name == f"remote-{images.vm_key(_image(tmp_path), 'remote')}.qcow2"
    assert old.kernel.name.endswith("-vmlinuz") and old.initrd.name.endswith("-initrd.img")
    # Same image, same recipe: the same generation (the cache is reused).
    assert images.vm_image_paths(_image(tmp_path), "remote") == old
    build = tmp_path / "builds" / "debian12" / "pcmk-x"
    build.mkdir(parents=True)
    (build / "manifest.json").write_text('{"created": "1"}')
    under = images.vm_image_paths(_image(tmp_path), "remote", build)
    assert under.disk.parent == build / "vm" and under.disk.name != old.disk.name
    (build / "manifest.json").write_text('{"created": "2"}')  # the build made again
    assert images.vm_image_paths(_image(tmp_path), "remote", build).disk != under.disk


def test_only_old_vm_disk_generations_no_lab_uses_are_garbage():
    names = [
        "remote.qcow2",  # before generations had names: old, unused
        "remote-vmlinuz",
        "remote-initrd.img",
        "remote.recipe",
        "remote-aaaaaaaaaaaa.qcow2",  # old, its kernel still boots a VM
        "remote-aaaaaaaaaaaa-vmlinuz",
        "remote-aaaaaaaaaaaa-initrd.img",
        "remote-bbbbbbbbbbbb.qcow2",  # current
        "remote-bbbbbbbbbbbb.recipe",
        "cluster-cccccccccccc.part",  # an interrupted old build
        "README",  # not labctl's: never touched
    ]
    garbage = images.unused_vm_files(
        names, current={"remote-bbbbbbbbbbbb"}, used={"remote-aaaaaaaaaaaa-vmlinuz"}
    )
    assert garbage == [
        "cluster-cccccccccccc.part",
        "remote-initrd.img",
        "remote-vmlinuz",
        "remote.qcow2",
        "remote.recipe",
    ]


def test_remove_unused_vm_files_keeps_what_a_volume_is_backed_by(tmp_path):
    vm = tmp_path / "vm"
    vm.mkdir()
    for n in (
        "remote-aaaaaaaaaaaa.qcow2",
        "remote-aaaaaaaaaaaa-vmlinuz",
        "remote-dddddddddddd.qcow2",
    ):
        (vm / n).write_text("x")
    gone = images.remove_unused_vm_files(
        vm, current=set(), in_use={str(vm / "remote-aaaaaaaaaaaa.qcow2"), "/elsewhere/x"}
    )
    assert gone == [vm / "remote-dddddddddddd.qcow2"]
    assert sorted(p.name for p in vm.iterdir()) == [
        "remote-aaaaaaaaaaaa-vmlinuz",
        "remote-aaaaaaaaaaaa.qcow2",
    ]
    assert images.remove_unused_vm_files(tmp_path / "none", set(), set()) == []


def test_a_rebuilt_image_or_build_keeps_the_vm_files_of_the_old_one_at_their_paths(tmp_path):
    final, new = tmp_path / "debian12", tmp_path / ".build-debian12-1"
    (final / "vm").mkdir(parents=True)
    (final / "base").mkdir()
    disk = final / "vm" / "remote-aaaaaaaaaaaa.qcow2"
    disk.write_text("running VM's backing file")
    (new / "base").mkdir(parents=True)
    (new / "manifest.json").write_text("{}")
    images.replace_keeping_vm_files(new, final)
    assert disk.read_text() == "running VM's backing file"
    assert (final / "manifest.json").is_file() and not new.exists()
    fresh = tmp_path / "pcmk-x"
    (fresh / "install").mkdir(parents=True)
    images.replace_keeping_vm_files(fresh, tmp_path / "pcmk-y")  # nothing there before
    assert (tmp_path / "pcmk-y" / "install").is_dir()


def test_debian13_is_debian12s_recipe_from_trixie():
    d12, d13 = images.IMAGES["debian12"], images.IMAGES["debian13"]
    assert (d13.suite, d12.suite) == ("trixie", "bookworm")
    assert d13.layers == d12.layers and d13.base_packages == d12.base_packages
    assert images.recipe_digest(d13) != images.recipe_digest(d12)
    assert images.DEFAULT_IMAGE == "debian12"


def test_image_list_shows_the_pacemaker_version_and_size_a_manifest_records():
    m = {
        "layers": {
            "base": {"size_bytes": 400 << 20, "packages": 200},
            "cluster": {"size_bytes": 40 << 20, "added": ["corosync=3.1.9-2", "pacemaker=3.0.0-2"]},
            "remote": {"size_bytes": 10 << 20, "added": ["pacemaker-remote=3.0.0-2"]},
        }
    }
    assert images.manifest_pacemaker_version(m) == "3.0.0-2"
    assert images.manifest_size(m) == 450 << 20
    del m["layers"]["cluster"]
    assert images.manifest_pacemaker_version(m) == "3.0.0-2"
    assert images.manifest_pacemaker_version({}) is None and images.manifest_size({}) == 0
