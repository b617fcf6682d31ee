"""Table tests of the worker contract: DEST parsing and WorkerSpec validation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from workers.spec import Destination, Mode, WorkerSpec


@pytest.mark.parametrize(
    ("text", "kind", "host", "user", "path", "root"),
    [
        ("/abs", "local", "", "", "/abs", "/abs/"),
        ("/abs/", "local", "", "", "/abs/", "/abs/"),
        ("/", "local", "", "", "/", "/"),
        ("rel/dir", "local", "", "", "rel/dir", "rel/dir/"),
        ("./x:y", "local", "", "", "./x:y", "./x:y/"),  # a colon after a slash is a local name
        ("/x:y", "local", "", "", "/x:y", "/x:y/"),
        ("host:/p", "ssh", "host", "", "/p", "host:/p/"),
        ("host:/p/", "ssh", "host", "", "/p/", "host:/p/"),
        ("user@host:/p", "ssh", "host", "user", "/p", "user@host:/p/"),
        ("host:rel", "ssh", "host", "", "rel", "host:rel/"),
        ("host:", "ssh", "host", "", ".", "host:./"),  # the login directory
        ("[::1]:/p", "ssh", "[::1]", "", "/p", "[::1]:/p/"),
        ("rsync://h/mod/p", "rsyncd", "h", "", "mod/p", "rsync://h/mod/p/"),
        ("rsync://h/mod/p/", "rsyncd", "h", "", "mod/p", "rsync://h/mod/p/"),
        ("rsync://h/mod", "rsyncd", "h", "", "mod", "rsync://h/mod/"),
        ("rsync://u@h:8873/mod", "rsyncd", "u@h:8873", "", "mod", "rsync://u@h:8873/mod/"),
        ("[fe80::1%eth0]:/p", "ssh", "[fe80::1%eth0]", "", "/p", "[fe80::1%eth0]:/p/"),
        (
            "backup_1@node-b.example:/p",
            "ssh",
            "node-b.example",
            "backup_1",
            "/p",
            "backup_1@node-b.example:/p/",
        ),
    ],
)
def test_destination_parse(text: str, kind: str, host: str, user: str, path: str, root: str) -> None:
    dest = Destination.parse(text)
    assert (dest.kind, dest.host, dest.user, dest.path) == (kind, host, user, path)
    assert dest.rsync_root() == root


@pytest.mark.parametrize(
    "text",
    [
        "",
        "rsync://h",
        "rsync://h/",
        "rsync:///mod",
        # nothing ssh could read as an option, brackets or not (issue 15 item 8)
        "-oProxyCommand=x:/p",
        "[-oProxyCommand=touch /tmp/pwned]:/x",
        "[-o]:/x",
        "-l@host:/p",
        "u@-oX:/p",
        "rsync://-oX/mod/p",
        "rsync://[-oProxyCommand=x]/mod/p",
        "[::1;id]:/p",
    ],
)
def test_destination_parse_errors(text: str) -> None:
    with pytest.raises(ValueError):
        Destination.parse(text)


BASE: dict[str, Any] = {"source": "/src", "dest": "/dst"}


@pytest.mark.parametrize(
    ("fields", "check"),
    [
        ({}, lambda s: s.mode is Mode.RSYNC and s.delay == 1.0 and s.name == "/src"),
        ({"label": "web"}, lambda s: s.name == "web"),
        ({"json": True}, lambda s: s.json_status is True),  # the CLI name is the alias
        ({"mode": "shell", "handler": "/bin/true"}, lambda s: s.mode is Mode.SHELL),
        ({"mode": "python", "handler": "pkg.mod:func"}, lambda s: s.mode is Mode.PYTHON),
        ({"mode": "direct"}, lambda s: s.destination.kind == "local"),
        ({"dest": "user@host:/p"}, lambda s: s.destination.rsync_root() == "user@host:/p/"),
        ({"delay": 0}, lambda s: s.delay == 0.0),
        ({"skip_initial_sync": True}, lambda s: s.skip_initial_sync),
        ({"include": ["a"], "exclude": ["b"]}, lambda s: s.include == ("a",) and s.exclude == ("b",)),
    ],
)
def test_worker_spec_accepts(fields: dict[str, Any], check: Any) -> None:
    spec = WorkerSpec.model_validate({**BASE, **fields})
    assert check(spec)
    assert WorkerSpec.model_validate_json(spec.model_dump_json(by_alias=True)) == spec


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"bogus": 1}, "bogus"),
        ({"json_status": True}, "json_status"),  # only the alias is accepted
        ({"skip_initial_sync": True, "only_initial_sync": True}, "exclude each other"),
        ({"mode": "shell"}, "needs --handler"),
        ({"mode": "python"}, "needs --handler"),
        ({"mode": "python", "handler": "pkg.mod.func"}, "module:function"),
        ({"mode": "direct", "dest": "host:/p"}, "needs a local DEST"),
        ({"mode": "direct", "dest": "rsync://h/mod"}, "needs a local DEST"),
        ({"mode": "nope"}, "mode"),
        ({"delay": -1}, "delay"),
        ({"retries": -1}, "retries"),
        ({"max_batch_paths": 0}, "max_batch_paths"),
        ({"stop_timeout": 0}, "stop_timeout"),
        ({"source": ""}, "SOURCE is empty"),
        ({"dest": ""}, "DEST is empty"),
        ({"dest": "rsync://h"}, "rsync://host/module/path"),
    ],
)
def test_worker_spec_rejects(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as info:
        WorkerSpec.model_validate({**BASE, **fields})
    assert words in str(info.value)
