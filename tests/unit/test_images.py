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
