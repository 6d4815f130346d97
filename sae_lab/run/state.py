"""A resumable stage's state and the settings it was made with, in one atomic file.

A stage that keeps a state between sessions (LINE's ``line/state.json``) must never resume a state made under other
settings. Keeping settings and state in two files leaves a window (settings rewritten, state not yet) where a
crash mixes two runs: the next session reads the old state under the new settings. Here the settings travel inside
the state file, written in one atomic rename, so a state always names the settings it was made with; a copy of the
settings beside it (``params.json``) is for people and other readers only and never decides a resume.

Settings hold identities (weights digests, backend identities), never paths: a copied or moved run folder resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sae_lab.jsonable import to_jsonable
from sae_lab.run.io import read_json, write_json

SETTINGS_KEY = "settings"
HASH_KEY = "settings_hash"


def settings_digest(settings: Mapping[str, Any]) -> str:
    """A short hash of ``settings`` (JSON with sorted keys)."""
    blob = json.dumps(to_jsonable(dict(settings), strict=False), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


class SettingsMismatch(ValueError):
    """The saved state was made with other settings."""

    def __init__(self, path: Path, keys: list[str], name: str = "") -> None:
        super().__init__(f"{path.parent} holds a {name + ' ' if name else ''}run with other settings ({', '.join(keys) or 'unknown'}); pass "
                         "--overwrite to start over or use another --run")  # fmt: skip
        self.keys = keys


class StageState:
    """``path`` holding a stage's state together with its settings.

    Args:
        path: The state file (``line/state.json``).
        legacy_settings: Where a writer from before this file carried its settings kept them (``line/params.json``);
            read only for a state file without settings of its own.
        name: The stage, for messages (``LINE``).
    """

    def __init__(
        self, path: str | os.PathLike, legacy_settings: str | os.PathLike | None = None, name: str = ""
    ) -> None:
        self.path, self.name = Path(path), name
        self.legacy = Path(legacy_settings) if legacy_settings is not None else None

    def load(self, settings: Mapping[str, Any]) -> dict[str, Any] | None:
        """The saved state (without its settings) when it was made with ``settings``; None when there is none.

        Raises:
            SettingsMismatch: (a ValueError) it was made with other settings, naming the keys that differ.
        """
        saved = read_json(self.path, default=None)
        if not isinstance(saved, dict):
            return None
        want = to_jsonable(dict(settings), strict=False)
        theirs = saved.pop(SETTINGS_KEY, None)
        saved.pop(HASH_KEY, None)
        legacy = theirs is None
        if legacy and self.legacy is not None:  # written before settings travelled with the state
            theirs = read_json(self.legacy, default=None)
        if not isinstance(theirs, dict) or theirs != want:
            theirs = theirs if isinstance(theirs, dict) else {}
            keys = sorted(k for k in set(theirs) | set(want) if theirs.get(k) != want.get(k))
            raise SettingsMismatch(self.path, keys + (["written by an older version"] if legacy else []), self.name)
        return saved

    def save(self, settings: Mapping[str, Any], state: Mapping[str, Any]) -> None:
        """``state`` and ``settings`` in one atomic write."""
        write_json(self.path, {**state, SETTINGS_KEY: dict(settings), HASH_KEY: settings_digest(settings)})

    def exists(self) -> bool:
        return self.path.is_file()


__all__ = ["SettingsMismatch", "StageState", "settings_digest"]
