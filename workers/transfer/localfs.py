"""Safe operations on a local DEST tree: never through a symlink out of it."""

from __future__ import annotations

import logging
import os
import shutil

from workers.batching import Move

log = logging.getLogger(__name__)


def target(root: str, rel: str) -> str | None:
    """ROOT/REL, or None when a directory on the way is a symlink or not a directory
    (the last component itself is never followed by the callers)."""
    path = os.path.join(root, rel) if rel else root
    parent = os.path.dirname(path) if rel else root
    real_root = os.path.realpath(root)
    real_parent = os.path.realpath(parent)
    if real_parent != real_root and not real_parent.startswith(real_root + os.sep):
        return None
    return path


def remove(path: str) -> None:
    """Delete a file, a symlink or a whole directory tree; missing is fine."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def move(root: str, change: Move) -> bool:
    """Rename at DEST; False when the old path is not there or the rename fails."""
    old, new = target(root, change.old), target(root, change.new)
    if old is None or new is None or not os.path.lexists(old):
        return False
    try:
        os.makedirs(os.path.dirname(new), exist_ok=True)
        os.rename(old, new)
    except OSError as err:
        log.info("rename %s -> %s at DEST failed (%s); sending it instead", change.old, change.new, err)
        return False
    return True
