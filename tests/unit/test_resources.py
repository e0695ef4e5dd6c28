"""`up --resources N`: N Dummy primitives, validated counts, and where `status` says they run."""

import pytest

from labctl import pacemaker as pcmk
from labctl.errors import UsageError
from labctl.lab import resource_places as where_resources
from labctl.spec import MAX_RESOURCES, make_spec


def test_resources_default_to_none_and_take_a_count():
    assert make_spec("r", 3).resources == 0
    assert make_spec("r", 3, resources=4).resources == 4


@pytest.mark.parametrize("n", [-1, MAX_RESOURCES + 1])
def test_a_bad_resource_count_is_one_usage_line(n):
    with pytest.raises(UsageError, match="--resources must be between 0") as e:
        make_spec("r", 3, resources=n)
    assert "\n" not in str(e.value)


def test_dummy_primitives_are_numbered_from_one_with_a_monitor():
    els = pcmk.dummy_primitives(3)
    assert [e.get("id") for e in els] == ["dummy-1", "dummy-2", "dummy-3"]
    d = els[0]
    assert (d.get("class"), d.get("provider"), d.get("type")) == ("ocf", "pacemaker", "Dummy")
    ops = d.findall("operations/op")
    assert [(o.get("name"), o.get("interval")) for o in ops] == [("monitor", "10s")]
    assert pcmk.dummy_primitives(0) == []


CRM_MON = """<pacemaker-result api-version="2.29" request="crm_mon">
  <summary><current_dc present="true" name="a-c1" with_quorum="true"/></summary>
  <nodes/>
  <resources>
    <resource id="dummy-1" resource_agent="ocf:pacemaker:Dummy" role="Started" active="true"
      failed="false"><node name="a-c2" id="2" cached="true"/></resource>
    <resource id="dummy-2" resource_agent="ocf:pacemaker:Dummy" role="Stopped" active="false"
      failed="false"/>
  </resources>
</pacemaker-result>"""


def test_status_says_where_each_test_resource_runs_and_which_are_stopped():
    view = pcmk.parse_crm_mon(CRM_MON)
    assert where_resources(view, 3) == {"dummy-1": "a-c2", "dummy-2": "", "dummy-3": ""}
    assert where_resources(None, 1) == {"dummy-1": ""}
    assert where_resources(view, 0) == {}
