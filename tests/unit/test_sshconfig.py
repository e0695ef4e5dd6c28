import shlex
from pathlib import Path

from labctl import sshconfig
from labctl.plan import make_plan
from labctl.spec import make_spec


def _plan(n: int = 3):
    return make_plan(make_spec("demo", n), 1, Path("/s"))


def test_ssh_config_pins_the_labs_key_and_known_hosts():
    cfg = sshconfig.ssh_config(_plan())
    assert cfg.startswith("# labctl lab demo\n")
    assert "Host demo-c1 demo-c2 demo-c3 10.213.1.11 10.213.1.12 10.213.1.13\n" in cfg
    assert "    IdentityFile /s/labs/demo/ssh/id_ed25519\n" in cfg
    assert "    UserKnownHostsFile /s/labs/demo/ssh/known_hosts\n" in cfg
    assert "    StrictHostKeyChecking yes\n" in cfg
    assert "    User root\n" in cfg


def test_option_args_are_the_same_options_as_dash_o_words():
    p = make_plan(make_spec("demo", 2), 1, Path("/state dir"))
    words = shlex.split(sshconfig.option_args(p, leave_out=("User", "IdentityFile")))
    assert words[0::2] == ["-o"] * (len(words) // 2)
    opts = words[1::2]
    assert "UserKnownHostsFile=/state dir/labs/demo/ssh/known_hosts" in opts
    assert "StrictHostKeyChecking=yes" in opts
    assert not any(o.startswith(("User=", "IdentityFile=")) for o in opts)
