"""clsync filter rules: ``[+-][fdWwms*]REGEX`` per line, first match wins.

A rule's letters say which decisions it takes part in:

- ``f`` non-directories (files, symlinks, fifos...)
- ``w`` walking into a directory (scans), ``m`` monitoring events inside it,
  ``s`` syncing the directory entry itself; ``W`` = ``w`` + ``m``, ``d`` = ``w``+``m``+``s``
- ``*`` all of the above.

The regex is searched (``re.search``) in the path relative to SOURCE, without a
leading slash; the root is the empty string. A path is synced only when every
ancestor directory may be walked (and, for events, monitored) and the path
itself passes its own decision. Nothing matches: include. The root itself is
always synced (it is DEST); rules only choose what is inside it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache

_LETTERS = {"f": "f", "w": "w", "m": "m", "s": "s", "W": "wm", "d": "wms", "*": "fwms"}


class RulesError(ValueError):
    """A rule that cannot be parsed; the message names where and why."""


@dataclass(frozen=True)
class Rule:
    include: bool
    aspects: frozenset[str]
    pattern: re.Pattern[str]
    origin: str  # "FILE:LINE" or "--exclude" for messages


def parse_rule(text: str, origin: str) -> Rule:
    """Parse one ``[+-][fdWwms*]REGEX`` line."""
    if len(text) < 2 or text[0] not in "+-":
        raise RulesError(f"{origin}: rule {text!r} must start with + or - and a type letter")
    letter = text[1]
    if letter not in _LETTERS:
        raise RulesError(f"{origin}: unknown type {letter!r} in {text!r} (use one of f d W w m s *)")
    try:
        pattern = re.compile(text[2:])
    except (re.error, OverflowError, RecursionError) as err:
        raise RulesError(f"{origin}: bad regex {text[2:]!r}: {err}") from None
    return Rule(text[0] == "+", frozenset(_LETTERS[letter]), pattern, origin)


def parse_lines(lines: list[str], name: str) -> list[Rule]:
    """Parse a rules file's lines; ``#`` comments and blank lines are skipped."""
    rules = []
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        rules.append(parse_rule(line, f"{name}:{number}"))
    return rules


def load(rules_file: str | None, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> Rules:
    """Build the rule list: every ``--include``, then every ``--exclude``, then the file."""
    rules = [parse_rule("+*" + regex, "--include") for regex in include]
    rules += [parse_rule("-*" + regex, "--exclude") for regex in exclude]
    if rules_file is not None:
        try:
            with open(rules_file, encoding="utf-8", newline="") as handle:
                text = handle.read()
        except OSError as err:
            raise RulesError(f"{rules_file}: cannot read rules file: {err.strerror}") from None
        except UnicodeDecodeError as err:
            raise RulesError(f"{rules_file}: not UTF-8 text: {err}") from None
        rules += parse_lines(text.split("\n"), rules_file)
    return Rules(tuple(rules))


@dataclass(frozen=True)
class Rules:
    """An immutable rule list with cached per-path decisions."""

    rules: tuple[Rule, ...] = ()
    _cache: dict[tuple[str, str], bool] = field(default_factory=dict, compare=False, repr=False)

    def decide(self, path: str, aspect: str) -> bool:
        """First matching rule for this aspect wins; no match includes."""
        key = (path, aspect)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        result = True
        for rule in self.rules:
            if aspect in rule.aspects and rule.pattern.search(path):
                result = rule.include
                break
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[key] = result
        return result

    def can_enter(self, directory: str, *, events: bool = False) -> bool:
        """May a scan walk into DIRECTORY (and, with events, are its events watched)?

        The root ('') and every ancestor must allow it too.
        """
        for ancestor in _self_and_ancestors(directory):
            if not self.decide(ancestor, "w"):
                return False
            if events and not self.decide(ancestor, "m"):
                return False
        return True

    def allows(self, path: str, is_dir: bool, *, events: bool = False) -> bool:
        """Is PATH synced? Its parent chain must be enterable and PATH itself included."""
        if not path:
            return True
        if not self.can_enter(os.path.dirname(path), events=events):
            return False
        return self.decide(path, "s" if is_dir else "f")

    @property
    def empty(self) -> bool:
        return not self.rules


@lru_cache(maxsize=65536)
def _self_and_ancestors(directory: str) -> tuple[str, ...]:
    """'a/b/c' -> ('', 'a', 'a/b', 'a/b/c'); '' -> ('',)."""
    chain = [""]
    if directory:
        parts = directory.split("/")
        chain += ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return tuple(chain)
