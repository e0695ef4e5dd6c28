"""What labctl keeps and prints of a --image URL: never its query string."""

import json

import pytest

from labctl import plan, state
from labctl.cloudimage import redact
from labctl.errors import UsageError
from labctl.spec import make_spec

SIGNED = "https://bucket.example.org/img/debian.qcow2?X-Amz-Signature=abc123&X-Amz-Expires=60#frag"


@pytest.mark.parametrize(
    ("ref", "shown"),
    [
        (SIGNED, "https://bucket.example.org/img/debian.qcow2"),
        ("https://user:pw@example.org/a.qcow2?token=s3cr3t", "https://user@example.org/a.qcow2"),
        ("http://example.org:8080/a.qcow2", "http://example.org:8080/a.qcow2"),
        ("file:///srv/a.qcow2?x=1", "file:///srv/a.qcow2"),
        ("/srv/images/a?b.qcow2", "/srv/images/a?b.qcow2"),  # a path is a path
    ],
)
def test_redact_drops_query_fragment_and_password_of_urls_only(ref, shown):
    assert redact(ref) == shown


def test_the_lab_record_keeps_no_query_string_of_the_image_url(tmp_path):
    spec = make_spec("demo", 1, mode="remote", backend="vm", image=SIGNED, image_checksum="0" * 64)
    assert spec.cloud_image == SIGNED  # up itself needs the whole URL to fetch it
    p = plan.make_plan(spec, 1, tmp_path)
    p.dir.mkdir(parents=True)
    state.write_record(p, "up")
    text = p.record.read_text()
    assert "abc123" not in text and "X-Amz" not in text
    assert json.loads(text)["spec"]["cloud_image"] == "https://bucket.example.org/img/debian.qcow2"
    assert state.read_record(tmp_path, "demo").spec.cloud_image == redact(SIGNED)


def test_spec_errors_name_the_url_without_its_query_string():
    with pytest.raises(UsageError) as e:
        make_spec("demo", 1, mode="remote", backend="vm", image=SIGNED)
    assert "abc123" not in str(e.value) and "debian.qcow2" in str(e.value)
    with pytest.raises(UsageError) as e:
        make_spec("demo", 1, mode="remote", image=SIGNED, image_checksum="0" * 64)
    assert "abc123" not in str(e.value)
