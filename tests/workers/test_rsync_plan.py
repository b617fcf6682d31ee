"""Table tests of the rsync handler's pure half: argv, list encoding, exit codes."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.transfer import Verdict
from workers.transfer.rsync_plan import build_argv, classify, encode_list, failed_paths, transferred_bytes

BASE = [
    "-a",
    "-H",  # hard links, ACLs and xattrs (file capabilities) by default
    "-A",
    "-X",
    "--numeric-ids",
    "--from0",
    "--files-from=-",
    "--delete-missing-args",
    "--force",
    "--exclude=/.tandem-backup",  # split-brain backups stay on their side
    "--stats",
]


def test_argv_incremental_with_rsh_and_extra() -> None:
    argv = build_argv(
        "/usr/bin/rsync", "/src", "host:/d/", full=False, rsh="ssh -p 2222", extra=("--bwlimit=9", "-z")
    )
    assert argv == [
        "/usr/bin/rsync",
        *BASE,
        "--ignore-times",
        "--modify-window=-1",  # also decides whether rsync sets a new symlink's time
        "-e",
        "ssh -p 2222",
        "--bwlimit=9",
        "-z",
        "/src/",
        "host:/d/",
    ]


@pytest.mark.parametrize(
    ("full", "rsh", "extra"),
    [(True, None, ()), (False, None, ()), (True, "ssh", ("-v",)), (False, "ssh -i k", ("-v", "--x"))],
)
def test_argv_shape(full: bool, rsh: str | None, extra: tuple[str, ...]) -> None:
    argv = build_argv("rsync", "/src", "/dst/", full=full, rsh=rsh, extra=extra)
    assert argv[0] == "rsync"
    assert argv[1 : 1 + len(BASE)] == BASE
    assert ("--ignore-times" in argv) is (not full)
    assert argv[-2:] == ["/src/", "/dst/"]  # SOURCE/ and DEST are always last
    assert argv[-2 - len(extra) : -2] == list(extra)  # extra args right before them
    if rsh:
        e = argv.index("-e")
        assert argv[e + 1] == rsh and e < len(argv) - 2 - len(extra)
    else:
        assert "-e" not in argv
    assert "-r" not in argv and "--recursive" not in argv  # exactly the listed paths


@pytest.mark.parametrize(
    ("source", "arg"),
    [("/src", "/src/"), ("/src/", "/src/"), ("/src///", "/src/"), ("rel/dir", "rel/dir/"), ("/", "/")],
)
def test_source_gets_exactly_one_trailing_slash(source: str, arg: str) -> None:
    assert build_argv("rsync", source, "/d/", full=True)[-2] == arg


@pytest.mark.parametrize(
    ("paths", "encoded"),
    [
        ([], b""),
        (["a"], b"a\0"),
        (["a", "dir/b"], b"a\0dir/b\0"),
        ([""], b".\0"),  # the root
        (["", "x"], b".\0x\0"),
        (["new\nline"], b"new\nline\0"),
        (["caf\u00e9 \u2603"], "caf\u00e9 \u2603".encode() + b"\0"),
        (["bad\udcff"], b"bad\xff\0"),  # invalid UTF-8 name read via surrogateescape
        (("t",), b"t\0"),
    ],
)
def test_encode_list(paths: list[str], encoded: bytes) -> None:
    assert encode_list(paths) == encoded


_NAME = st.text(st.characters(exclude_characters="\0", codec="utf-8"), min_size=1) | st.binary(
    min_size=1
).filter(lambda b: b"\0" not in b).map(os.fsdecode)


@given(st.lists(_NAME, max_size=8))
def test_encode_list_round_trips(paths: list[str]) -> None:
    encoded = encode_list(paths)
    assert encoded.endswith(b"\0") or not paths
    assert [os.fsdecode(raw) for raw in encoded.split(b"\0")[:-1]] == paths


LISTED = ("a.txt", "dir/b", "dir/c", "top", 'say "hi"', "sp ace/f")
ROOTS = ("/src", "/dst/")


def err(*lines: str) -> bytes:
    return "".join(line + "\n" for line in lines).encode() + (
        b"rsync error: some files/attrs were not transferred (see previous errors) (code 23)"
        b" at main.c(1338) [sender=3.2.7]\n"
    )


@pytest.mark.parametrize(
    ("stderr", "failed"),
    [
        (err('rsync: [sender] send_files failed to open "/src/a.txt": Permission denied (13)'), ("a.txt",)),
        (err('rsync: [sender] read errors mapping "dir/b": Input/output error (5)'), ("dir/b",)),
        (
            err('rsync: [generator] failed to set times on "/dst/dir/b": Operation not permitted (1)'),
            ("dir/b",),
        ),
        (err('rsync: [receiver] mkstemp "/dst/dir/.c.AbC123" failed: Permission denied (13)'), ("dir/c",)),
        (err('rsync: [receiver] mkstemp "/dst/.top.x1Y2z3" failed: No space left on device (28)'), ("top",)),
        (err('rsync: [receiver] mkstemp "dir/.c.AbC123" failed: Permission denied (13)'), ("dir/c",)),
        (err('rsync: [receiver] rename "/dst/dir/.c.AbC123" -> "dir/c": Permission denied (13)'), ("dir/c",)),
        (
            err('rsync: [sender] send_files failed to open "/src/say "hi"": Permission denied (13)'),
            ('say "hi"',),
        ),
        (
            err('rsync: [sender] send_files failed to open "/src/sp ace/f": Permission denied (13)'),
            ("sp ace/f",),
        ),
        (err('rsync: recv_generator: mkdir "/dst/dir/b/" failed: Permission denied (13)'), ("dir/b",)),
        (
            err(
                'rsync: [sender] send_files failed to open "/src/dir/b": Permission denied (13)',
                'rsync: [sender] send_files failed to open "/src/a.txt": Permission denied (13)',
            ),
            ("a.txt", "dir/b"),
        ),
    ],
)
def test_code_23_with_named_paths_is_partial(stderr: bytes, failed: tuple[str, ...]) -> None:
    result = classify(23, stderr, LISTED, ROOTS)
    assert result.verdict is Verdict.PARTIAL
    assert result.failed == failed


@pytest.mark.parametrize(
    "stderr",
    [
        b"",
        err(),
        err('rsync: [sender] send_files failed to open "/src/not-listed": Permission denied (13)'),
        err('rsync: [receiver] mkstemp "/dst/.zz.AbC123" failed: Permission denied (13)'),
        b"garbage \xff\xfe without quotes\n",
    ],
)
def test_code_23_without_a_listed_path_retries_everything(stderr: bytes) -> None:
    result = classify(23, stderr, LISTED, ROOTS)
    assert result.verdict is Verdict.RETRY
    assert result.failed == ()


@pytest.mark.parametrize(
    ("listed", "failed"),
    [
        (("",), ("deep/in/tree",)),  # a full sync of the root: anything inside
        (("dir",), ("dir/deep/in/tree",)),  # a walked directory
        (("other",), ()),  # not below anything listed: the whole run is retried
    ],
)
def test_recursive_runs_place_failures_inside_listed_directories(
    listed: tuple[str, ...], failed: tuple[str, ...]
) -> None:
    path = "/src/" + ("dir/" if listed == ("dir",) else "") + "deep/in/tree"
    stderr = err(f'rsync: [sender] send_files failed to open "{path}": Permission denied (13)')
    result = classify(23, stderr, listed, ROOTS, recursive=True)
    assert result.failed == failed
    assert result.verdict is (Verdict.PARTIAL if failed else Verdict.RETRY)
    assert classify(23, stderr, listed, ROOTS).verdict is Verdict.RETRY  # a list names each path


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (0, Verdict.OK),
        (24, Verdict.OK),  # vanished source files: their deletion events follow
        *[(code, Verdict.FATAL) for code in (1, 2, 4, 25, 126, 127)],
        *[(code, Verdict.RETRY) for code in (3, 5, 6, 10, 11, 12, 13, 14, 20, 21, 22, 30, 35, 255, -9)],
    ],
)
def test_exit_codes(code: int, verdict: Verdict) -> None:
    stderr = b'rsync: [sender] send_files failed to open "/src/a.txt": Permission denied (13)\n'
    result = classify(code, stderr, LISTED, ROOTS)
    assert result.verdict is verdict
    assert result.failed == ()


def test_a_directory_renamed_under_the_sender_is_a_race_not_a_bad_option() -> None:
    """Seen in the soak: rsync 3.4+ aborts with exit 2 (as for a protocol mismatch)
    when a listed directory vanished mid-run and a listed path below it did not."""
    stderr = (
        b'file has vanished: "/src/d/f521"\n'
        b"ABORTING due to invalid path from sender: d/f521/data_859/tmp.881\n"
        b"rsync error: protocol incompatibility (code 2) at generator.c(1715) [generator=3.5.0]\n"
    )
    assert classify(2, stderr, LISTED, ROOTS).verdict is Verdict.RETRY
    mismatch = b"rsync error: protocol incompatibility (code 2)\n"
    assert classify(2, mismatch, LISTED, ROOTS).verdict is Verdict.FATAL


@pytest.mark.parametrize(
    ("code", "ignore", "verdict"),
    [
        (23, (23,), Verdict.OK),
        (1, (1,), Verdict.OK),
        (12, (12, 30), Verdict.OK),
        (30, (12, 30), Verdict.OK),
        (12, (23,), Verdict.RETRY),
        (1, (23,), Verdict.FATAL),
    ],
)
def test_ignored_exit_codes_are_ok(code: int, ignore: tuple[int, ...], verdict: Verdict) -> None:
    stderr = err('rsync: [sender] send_files failed to open "/src/a.txt": Permission denied (13)')
    assert classify(code, stderr, LISTED, ROOTS, ignore=ignore).verdict is verdict


@pytest.mark.parametrize("recursive", [True, False])
def test_recursive_only_when_asked(recursive: bool) -> None:
    argv = build_argv("rsync", "/s", "/d/", full=True, recursive=recursive)
    assert ("-r" in argv) is recursive


@pytest.mark.parametrize(
    ("stderr", "failed"),
    [
        # rsync escapes a newline in a name as \#012
        (
            b'rsync: [receiver] mkstemp "/d/i2/.nl\\#012b.AbC123" failed: Operation not permitted (1)\n',
            ("i2/nl\nb",),
        ),
        # a failed deletion is reported without quotes
        (b"delete_file: unlink(i1/old) failed: Operation not permitted (1)\n", ("i1/old",)),
        # a line naming a path that was not listed: retry everything (nothing may be dropped)
        (b'rsync: [sender] send_files failed to open "/s/not-listed": Permission denied (13)\n', ()),
        # one line tandem cannot place: retry everything
        (b'rsync: [receiver] mkstemp "/d/i2/.x.AbC123" failed: x (1)\nsomething odd happened\n', ()),
    ],
)
def test_failed_paths_every_error_line_must_map(stderr: bytes, failed: tuple[str, ...]) -> None:
    listed = ("i1/old", "i2/nl\nb", "i2/x")
    assert failed_paths(stderr, listed, ("/s", "/d")) == failed


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        (b"Number of files: 3\nTotal transferred file size: 12,345 bytes\nTotal bytes sent: 9\n", 12345),
        (b"Total transferred file size: 0 bytes\n", 0),
        (b"Total transferred file size: 1.234.567 bytes\n", 1234567),  # a locale's separator
        (b"", 0),
    ],
)
def test_transferred_bytes_from_stats(stdout: bytes, expected: int) -> None:
    assert transferred_bytes(stdout) == expected


@pytest.mark.parametrize(
    ("window", "arg"),
    [(0.0, "--modify-window=-1"), (0.001, "--modify-window=-1"), (2.0, "--modify-window=2")],
)
def test_runs_compare_mtimes_to_the_nanosecond_unless_told_coarser(window: float, arg: str) -> None:
    full = build_argv("rsync", "/s", "/d", full=True, modify_window=window)
    assert arg in full and "--ignore-times" not in full
    incremental = build_argv("rsync", "/s", "/d", full=False, modify_window=window)
    assert "--ignore-times" in incremental and arg in incremental


XATTR_95 = (
    'rsync: [receiver] rsync_xal_set: lsetxattr("/dst/dir/.b.iQAjCd","user.x") failed: '
    "Operation not supported (95)"
)
ACL_95 = "rsync: [receiver] set_acl: sys_acl_set_file(dir/c, ACL_TYPE_ACCESS): Operation not supported (95)"
DENIED = 'rsync: [sender] send_files failed to open "/src/a.txt": Permission denied (13)'


@pytest.mark.parametrize(
    ("stderr", "verdict", "failed", "unsupported"),
    [
        # a DEST that cannot hold xattrs or ACLs: the files went; said, not retried for ever
        (err(XATTR_95), Verdict.OK, (), {"xattrs"}),
        (err(ACL_95, XATTR_95), Verdict.OK, (), {"ACLs", "xattrs"}),
        # beside a real failure, only the real one is retried
        (err(XATTR_95, DENIED), Verdict.PARTIAL, ("a.txt",), {"xattrs"}),
        # EOPNOTSUPP outside the attribute functions is a real failure
        (
            err('rsync: [receiver] mknod "/dst/oracle.sock" failed: Operation not supported (95)'),
            Verdict.RETRY,
            (),
            set(),
        ),
    ],
)
def test_attributes_a_dest_cannot_hold(
    stderr: bytes, verdict: Verdict, failed: tuple[str, ...], unsupported: set[str]
) -> None:
    result = classify(23, stderr, LISTED, ROOTS)
    assert (result.verdict, result.failed, set(result.unsupported)) == (verdict, failed, unsupported)
