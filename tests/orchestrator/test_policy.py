"""Which container syncs what and where: the layered policy, as tables."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from orchestrator.policy import PolicyError, check_dest, clash, from_labels, plan
from orchestrator.runtimes import Container, Mount
from orchestrator.settings import ContainerPolicy, Rule, Settings

DATA = Mount("data", "/v/data", "/data", "volume")
CONF = Mount("etc-app", "/v/conf", "/etc/app", "bind")
LAYER = Mount("rootfs", "/v/upper", "/", "layer")


def settings(**kw: object) -> Settings:
    base: dict[str, object] = {"host": "h1", "state_dir": Path("/st"), "docker": False, "lxd": False}
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


def web(labels: dict[str, str] | None = None, mounts: tuple[Mount, ...] = (DATA, CONF)) -> Container:
    return Container("docker", "web", "id1", labels or {}, mounts, (LAYER,))


ON = {"tandem.enable": "true", "tandem.dest": "/b/{host}/{container}/{mount}"}


def test_not_opted_in_is_none() -> None:
    assert plan(web(), settings()) is None
    assert plan(web({"tandem.enable": "false", "tandem.dest": "/x/{mount}"}), settings()) is None


def test_labels_give_one_pair_per_mount() -> None:
    spec = plan(web(ON), settings(), parent_pid=42)
    assert spec is not None
    assert spec.name == "web" and spec.pid_file == "/st/workers/web.pid"
    assert [(p.source, p.dest, p.label) for p in spec.pairs] == [
        ("/v/data", "/b/h1/web/data", "web/data"),
        ("/v/conf", "/b/h1/web/etc-app", "web/etc-app"),
    ]
    pair = spec.pairs[0]
    assert pair.json_status and pair.parent_pid == 42 and pair.delay == 1.0
    assert "--mkpath" not in pair.rsync_arg  # the worker makes DEST, never through a symlink


def test_paths_select_mounts_and_the_layer() -> None:
    spec = plan(web({**ON, "tandem.paths": "/, /data"}), settings())
    assert spec is not None
    assert [p.source for p in spec.pairs] == ["/v/upper", "/v/data"]


def test_precedence_override_over_labels_over_rules_over_defaults() -> None:
    s = settings(
        defaults=ContainerPolicy(dest="/d/{container}/{mount}", delay=5),
        rules=(Rule(match="w*", enable=True, delay=3), Rule(match="x*", delay=9)),
    )
    assert plan(web(), s).pairs[0].delay == 3  # type: ignore[union-attr]
    assert plan(web({"tandem.delay": "2"}), s).pairs[0].delay == 2  # type: ignore[union-attr]
    override = ContainerPolicy(delay=0.5, exclude=(r"\.tmp$",))
    pair = plan(web({"tandem.delay": "2"}), s, override).pairs[0]  # type: ignore[union-attr]
    assert (pair.delay, pair.exclude, pair.dest) == (0.5, (r"\.tmp$",), "/d/web/data")
    assert plan(web(), s, ContainerPolicy(enable=False)) is None


def test_rules_match_runtime() -> None:
    s = settings(
        defaults=ContainerPolicy(dest="/d/{mount}"), rules=(Rule(match="*", runtime="lxd", enable=True),)
    )
    assert plan(web(), s) is None


def test_exclude_list_as_json_keeps_commas() -> None:
    policy = from_labels({"tandem.exclude": r'["a{1,3}", "\\.swp$"]'})
    assert policy.exclude == ("a{1,3}", r"\.swp$")
    assert from_labels({"tandem.exclude": "cache/, tmp/"}).exclude == ("cache/", "tmp/")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"tandem.enable": "maybe"}, "tandem.enable"),
        ({"tandem.delay": "soon"}, "tandem.delay"),
        ({"tandem.delay": "-1"}, "tandem.delay"),
        ({"tandem.dets": "/x"}, "unknown label 'tandem.dets'"),
        ({"tandem.exclude": "(["}, "bad regex"),
        ({"tandem.split-brain": "coin"}, "split-brain"),
        ({"tandem.paths": "data"}, "not an absolute container path"),
        ({"tandem.exclude": "[1]"}, "JSON list of strings"),
    ],
)
def test_bad_labels_say_what_is_wrong(labels: dict[str, str], message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace("[", r"\[")):
        plan(web({**ON, **labels}), settings())


@pytest.mark.parametrize(
    ("labels", "mounts", "message"),
    [
        ({"tandem.dest": ""}, (DATA,), "no destination"),
        ({"tandem.dest": "/b/{container}"}, (DATA, CONF), "has no {mount}"),
        ({"tandem.dest": "/b/{nope}/{mount}"}, (DATA,), "{nope} is not one of"),
        ({"tandem.dest": "/b/{mount"}, (DATA,), "destination template"),
        ({"tandem.dest": "rel/{mount}"}, (DATA,), "absolute path"),
        ({"tandem.paths": "/srv"}, (DATA,), "/srv not a mount of web"),
        ({}, (), "no volume or bind mount"),
    ],
)
def test_unusable_configuration(labels: dict[str, str], mounts: tuple[Mount, ...], message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("{", r"\{").replace("}", r"\}")):
        plan(web({**ON, **labels}, mounts), settings())


def test_ssh_destination_and_rsh() -> None:
    spec = plan(
        web({**ON, "tandem.dest": "backup:/srv/{host}/{container}/{mount}"}), settings(rsh="ssh -p 2222")
    )
    assert spec is not None
    assert spec.pairs[0].dest == "backup:/srv/h1/web/data" and spec.pairs[0].rsh == "ssh -p 2222"


def test_colliding_mount_names_are_refused() -> None:
    a = Mount("a-b", "/v/1", "/a-b", "volume")
    b = Mount("a-b", "/v/2", "/a/b", "volume")
    with pytest.raises(PolicyError, match="one destination"):
        plan(web(ON, (a, b)), settings())


def test_odd_container_names_are_refused() -> None:
    odd = Container("lxc", "../etc", "x", ON, (DATA,))
    with pytest.raises(PolicyError, match="cannot be used in a path"):
        plan(odd, settings())


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("/srv/{container:d}/{mount}", "is not one of"),
        ("/srv/{container!r}/{mount}", "is not one of"),
        ("/srv/{container:>{mount}}", "is not one of"),
        ("/srv/../../etc/{container}/{mount}", "may not contain '..'"),
        ("-oProxyCommand=id:/x/{mount}", "not a host name or address"),
        ("-l:/x/{mount}", "not a host name or address"),
    ],
)
def test_hostile_destinations_are_refused(template: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        plan(web({**ON, "tandem.dest": template}), settings())


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("/b/{host}/{container}/{mount}", None),
        ("/b/{container}/x/{mount}", None),
        ("/b/h1/web/{mount}", "must keep {container}"),  # names another container's place by its text
        ("/b/{host}-{container}/{mount}", "must keep {container}"),  # part of a name: 'a' + '-b' = 'a-' + 'b'
        ("/b/x{container}/{mount}", "must keep {container}"),
        ("/{container}/{mount}", "outside"),  # above the root
        ("/b/{mount}", "must keep {container}"),
        ("backup:/srv/{container}/{mount}", None),
        ("backup:/srv/{mount}", "must keep {container}"),
    ],
)
def test_a_label_dest_under_dest_roots_keeps_its_own_place(template: str, words: str | None) -> None:
    s = settings(dest_roots=("/b", "backup:/srv"))
    labelled = web({**ON, "tandem.dest": template})
    if words is None:
        assert plan(labelled, s) is not None
        return
    with pytest.raises(PolicyError, match=re.escape(words)):
        plan(labelled, s)
    with pytest.raises(PolicyError, match=re.escape(words)):  # the same through the API's override
        plan(web({"tandem.enable": "true"}), s, ContainerPolicy(dest=template))


def test_a_root_named_like_the_container_is_not_its_place() -> None:
    """Root /b/web, a container 'web', template /b/{container}: renders to the root itself."""
    s = settings(dest_roots=("/b/web",))
    with pytest.raises(PolicyError, match=re.escape("must keep {container}")):
        plan(web({**ON, "tandem.dest": "/b/{container}/{mount}"}), s)


def test_config_templates_are_trusted_without_container() -> None:
    s = settings(dest_roots=("/b",), defaults=ContainerPolicy(dest="/b/fixed/{mount}"))
    assert plan(web({"tandem.enable": "true"}), s) is not None


@pytest.mark.parametrize(
    ("dests", "others", "words"),
    [
        (["/b/h1/web/data"], {"db": ["/b/h1/db/data"]}, None),
        (["/b/h1/web/data"], {"db": ["/b/h1/web/data"]}, "is db's destination"),
        (["/b/h1/web/data/x"], {"db": ["/b/h1/web/data"]}, "overlaps db's"),
        (["/b/h1"], {"db": ["/b/h1/db/data"]}, "overlaps db's"),
        (["/b/h1//web/./data/"], {"db": ["/b/h1/web/data"]}, "is db's"),
        (["/b/h1/web-2"], {"db": ["/b/h1/web"]}, None),  # a prefix of the text, not of the path
        (["peer:/b/h1/web"], {"db": ["/b/h1/web"]}, None),  # another host
        (["PEER:/b/h1/web"], {"db": ["root@peer:/b/h1/web/x"]}, "overlaps db's"),
        (["rsync://peer/m/web"], {"db": ["peer:/m/web"]}, None),
        (["/b/a", "/b/c"], {"db": ["/b/x"], "ee": ["/b/c/d"]}, "overlaps ee's"),
    ],
)
def test_clash(dests: list[str], others: dict[str, list[str]], words: str | None) -> None:
    why = clash(dests, others)
    assert (why is None) if words is None else (why is not None and words in why), why


def test_check_dest_refuses_a_symlink_on_a_local_path(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    roots = (str(tmp_path),)
    assert check_dest(f"{tmp_path}/real/not/yet", roots).path.endswith("/not/yet")
    for dest in (f"{tmp_path}/link", f"{tmp_path}/link/below/{{deeper}}"):
        with pytest.raises(PolicyError, match="'link' on its path is a symbolic link"):
            check_dest(dest, roots)
    assert check_dest(f"peer:{tmp_path}/link", ()).kind == "ssh"  # the worker walks it at the peer


def test_dest_roots_confine_destinations() -> None:
    s = settings(dest_roots=("/b", "backup:/srv"))
    assert plan(web(ON), s) is not None
    assert plan(web({**ON, "tandem.dest": "backup:/srv/{container}/{mount}"}), s) is not None
    for outside in ("/etc/{container}/{mount}", "/bb/{mount}", "other:/srv/{mount}"):
        with pytest.raises(PolicyError, match="outside the allowed dest_roots"):
            plan(web({**ON, "tandem.dest": outside}), s)
