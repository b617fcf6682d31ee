"""Table tests of clsync-style rules: parsing, first match wins, ancestors."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from workers.rules import Rules, RulesError, load, parse_lines, parse_rule


def rules(*lines: str) -> Rules:
    return Rules(tuple(parse_lines(list(lines), "t")))


def verdicts(r: Rules, path: str) -> tuple[bool, bool, bool, bool]:
    """(file synced, dir synced, dir walked, dir walked+monitored) for PATH."""
    return (
        r.allows(path, False),
        r.allows(path, True),
        r.can_enter(path),
        r.can_enter(path, events=True),
    )


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # letter: (f, s, w, w+m)
        ("-f^x$", (False, True, True, True)),
        ("-d^x$", (True, False, False, False)),
        ("-W^x$", (True, True, False, False)),
        ("-w^x$", (True, True, False, False)),
        ("-m^x$", (True, True, True, False)),
        ("-s^x$", (True, False, True, True)),
        ("-*^x$", (False, False, False, False)),
        ("+*^x$", (True, True, True, True)),
    ],
)
def test_each_type_letter_takes_part_in_its_decisions(rule: str, expected: tuple[bool, ...]) -> None:
    assert verdicts(rules(rule), "x") == expected
    assert verdicts(rules(rule), "y") == (True, True, True, True)  # regex does not match


@pytest.mark.parametrize(
    ("lines", "path", "is_dir", "synced"),
    [
        (["+f^a", "-f."], "a.txt", False, True),  # first match wins
        (["-f.", "+f^a"], "a.txt", False, False),
        (["+d^a", "-f."], "a.txt", False, False),  # a rule of another type does not match
        (["-f^a"], "b", False, True),  # nothing matches: include
        ([], "anything/deep", False, True),
        (["-f\\.tmp$"], "dir/x.tmp", False, False),  # search, not match: anywhere in the path
        (["-f^x$"], "dir/x", False, True),  # anchored to the relative path
    ],
)
def test_first_match_wins_and_default_include(
    lines: list[str], path: str, is_dir: bool, synced: bool
) -> None:
    assert rules(*lines).allows(path, is_dir) is synced


@pytest.mark.parametrize(
    ("lines", "path", "is_dir", "events", "synced"),
    [
        (["-d^build$"], "build/x.o", False, False, False),  # inside an excluded dir
        (["-d^build$"], "build/sub/x.o", False, False, False),  # deeper
        (["-d^build$"], "build/sub", True, False, False),
        (["-d^build$"], "src/build", True, False, True),  # regex is anchored at the root
        (["-s^build$"], "build/x.o", False, False, True),  # dir entry not synced, content is
        (["-m^logs$"], "logs/a", False, False, True),  # scans still walk in
        (["-m^logs$"], "logs/a", False, True, False),  # events need 'm' too
        (["-m^logs$"], "logs/sub/a", True, True, False),
        (["-w^logs$"], "logs/a", False, True, False),
    ],
)
def test_ancestors_must_allow_walking(
    lines: list[str], path: str, is_dir: bool, events: bool, synced: bool
) -> None:
    assert rules(*lines).allows(path, is_dir, events=events) is synced


def test_root_is_the_empty_path() -> None:
    assert rules().allows("", True)
    assert rules().can_enter("")
    assert rules("-d^$").can_enter("") is False  # '^$' names the root only
    assert rules("-d^$").allows("a", False) is False
    assert rules("-d^$").can_enter("a/b") is False
    assert rules("-d^$").allows("a", True) is False


def test_exclude_all() -> None:
    r = rules("-*")
    assert r.can_enter("") is False
    for path, is_dir in [("a", False), ("a", True), ("a/b/c", False), (".hidden", False)]:
        assert r.allows(path, is_dir) is False
        assert r.allows(path, is_dir, events=True) is False


@pytest.mark.parametrize(
    ("path", "is_dir", "synced"),
    [
        ("passwd", False, True),
        ("group", False, True),
        ("shadow", False, False),
        ("ssh", True, True),
        ("ssh/sshd_config", False, False),  # ssh/ may be walked, its files are not whitelisted
        ("ssh/known", True, False),
        ("other", True, False),
        ("other/passwd", False, False),  # cannot walk into other/
        ("xpasswd", False, False),
    ],
)
def test_whitelist_like_the_clsync_man_page(path: str, is_dir: bool, synced: bool) -> None:
    r = rules("+f^passwd$", "+f^group$", "+d^$", "+d^ssh$", "-*")
    assert r.can_enter("")
    assert r.allows(path, is_dir) is synced
    assert r.allows(path, is_dir, events=True) is synced


def test_walk_root_only_whitelist() -> None:
    r = rules("+W^$", "-*")
    assert r.can_enter("") and r.can_enter("", events=True)
    assert r.allows("a", False) is False
    assert r.allows("a", True) is False


@pytest.mark.parametrize(
    ("text", "path", "excluded"),
    [
        ("# a comment\n\n   \n-f^a$\n", "a", True),
        ("  # indented comment\n-f^a$\n", "a", True),
        ("#-f^a$\n", "a", False),  # commented-out rule
        ("-f^a$\r\n-f^b$\r\n", "a", True),  # CRLF: '\r' is not part of the regex
        ("-f^a$\r\n-f^b$\r\n", "b", True),
        ("-f^a$\n-f^b$", "b", True),  # last line without newline
        ("-f^b$", "b", True),
        ("\n\n\n", "a", False),
        ("", "a", False),
    ],
)
def test_file_format(tmp_path: Path, text: str, path: str, excluded: bool) -> None:
    f = tmp_path / "rules.txt"
    f.write_bytes(text.encode())
    assert load(str(f)).allows(path, False) is not excluded


def test_load_order_include_then_exclude_then_file(tmp_path: Path) -> None:
    f = tmp_path / "rules.txt"
    f.write_text("+f^b$\n-f^c$\n")
    r = load(str(f), include=("^a",), exclude=("^a", "^b"))
    assert [rule.origin for rule in r.rules] == [
        "--include",
        "--exclude",
        "--exclude",
        f"{f}:1",
        f"{f}:2",
    ]
    assert r.allows("a", False)  # --include beats --exclude
    assert r.allows("a", True)  # and applies to every type ('*')
    assert not r.allows("b", False)  # --exclude beats the file
    assert not r.allows("c", False)
    assert r.allows("d", False)


def test_load_without_anything_is_empty() -> None:
    assert load(None).empty
    assert not load(None, exclude=("x",)).empty


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("f^a$\n", "rules.txt:1", "must start with + or -"),
        ("# c\n\n*^a$\n", "rules.txt:3", "must start with + or -"),
        ("+\n", "rules.txt:1", "must start with + or -"),
        ("-f^a$\n+x^b$\n", "rules.txt:2", "unknown type 'x'"),
        ("-f^a$\n\n+f(unclosed\n", "rules.txt:3", "bad regex"),
        ("-f^a$\r\n# c\r\n+f[z-a]\r\n", "rules.txt:3", "bad regex"),
        ("+fa{4294967296}\n", "rules.txt:1", "bad regex"),  # re raises OverflowError here
    ],
)
def test_bad_rules_name_file_and_line(tmp_path: Path, text: str, where: str, words: str) -> None:
    f = tmp_path / "rules.txt"
    f.write_text(text)
    with pytest.raises(RulesError) as info:
        load(str(f))
    assert where in str(info.value)
    assert words in str(info.value)


@pytest.mark.parametrize(("option", "regex"), [("include", "("), ("exclude", "[")])
def test_bad_option_regex_names_the_option(option: str, regex: str) -> None:
    with pytest.raises(RulesError, match=f"--{option}: bad regex"):
        load(None, **{option: (regex,)})


def test_unreadable_rules_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(RulesError, match=r"nope\.txt: cannot read rules file"):
        load(str(missing))
    with pytest.raises(RulesError, match="cannot read rules file"):
        load(str(tmp_path))  # a directory


def test_non_utf8_rules_file(tmp_path: Path) -> None:
    f = tmp_path / "latin1.txt"
    f.write_bytes(b"-f^caf\xe9$\n")
    with pytest.raises(RulesError, match=r"latin1\.txt: not UTF-8"):
        load(str(f))


def test_parse_rule_keeps_origin_and_sign() -> None:
    rule = parse_rule("+W^a/b$", "x.rules:7")
    assert rule.include and rule.aspects == frozenset("wm") and rule.origin == "x.rules:7"
    assert rule.pattern.pattern == "^a/b$"


_RULE_TOKENS = st.sampled_from([*"+-fdWwms*x^$.()[]{}?|\\/09aZ #\r\t,é\0", "999999999999", "(?i)"])
_RULE_LINE = st.lists(_RULE_TOKENS, max_size=12).map("".join) | st.text(max_size=12)


@given(st.lists(_RULE_LINE, max_size=6))
@example(["+fa{4294967296}"])
@example(["-*" + "(" * 1200 + ")" * 1200])
def test_parse_lines_raises_only_rules_error(lines: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. FutureWarning "possible nested set" from re
        try:
            parsed = parse_lines(lines, "prop")
        except RulesError as err:
            assert "prop:" in str(err)
        else:
            assert all(rule.origin.startswith("prop:") for rule in parsed)
