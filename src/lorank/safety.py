"""Path safety for paths that come from configs: a config must not make lorank write outside its root.

``safe_join(root, relative)`` is the one gate: it accepts a relative path that stays inside ``root``
after resolving ``..`` and symlinks, and raises :class:`ConfigError` for anything else (an absolute
path, a ``..`` that climbs out, a symlink that points out, a NUL byte, an empty path).
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from lorank.errors import ConfigError


def safe_join(root: str | Path, relative: str | Path, *, what: str = "path") -> Path:
    """``root / relative``, resolved, guaranteed to lie inside ``root`` (or be ``root`` itself).

    Symlinks already on disk are followed (a link inside ``root`` that points outside is refused); the
    parts that do not exist yet are resolved lexically. The returned path is absolute.
    """
    rel = os.fspath(relative)
    if not isinstance(rel, str):
        rel = os.fsdecode(rel)
    if not rel or not rel.strip():
        raise ConfigError(f"{what} is empty")
    if "\x00" in rel:
        raise ConfigError(f"{what} {rel!r} contains a NUL byte")
    if (PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).is_absolute() or PureWindowsPath(rel).drive
            or rel.startswith(("~", "\\"))):
        raise ConfigError(f"{what} {rel!r} must be relative to {root}, not absolute")
    base = Path(root).resolve()
    target = (base / rel).resolve()  # strict=False: follows the links that exist, keeps the rest lexical
    if target != base and base not in target.parents:
        raise ConfigError(f"{what} {rel!r} leads outside {base} (to {target})")
    return target


def is_inside(root: str | Path, path: str | Path) -> bool:
    """Whether ``path`` (absolute, or relative to the working directory) resolves inside ``root``."""
    base = Path(root).resolve()
    p = Path(path).resolve()
    return p == base or base in p.parents
