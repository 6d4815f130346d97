"""A stage's state carries the settings it was made with: no crash can pair one run's settings with another's state
(issue 19, item 3)."""

from __future__ import annotations

import json

import pytest

from sae_lab.run.state import SettingsMismatch, StageState, settings_digest

A = {"metric": "auc", "latents": [0, 3], "sae": "clf-abc"}
B = {**A, "metric": "mad"}


def test_the_state_is_resumed_only_under_its_own_settings(tmp_path):
    stored = StageState(tmp_path / "state.json", legacy_settings=tmp_path / "params.json", name="LINE")
    assert stored.load(A) is None  # nothing saved yet
    stored.save(A, {"iteration": 2, "latents": {"0": {}, "3": {}}})
    (tmp_path / "params.json").write_text(json.dumps(B))  # a copy beside it, rewritten by a crashed run: ignored
    assert stored.load(A) == {"iteration": 2, "latents": {"0": {}, "3": {}}}
    with pytest.raises(SettingsMismatch, match=r"holds a LINE run with other settings \(metric\)"):
        stored.load(B)
    with pytest.raises(ValueError, match=r"\(latents\)"):
        stored.load({**A, "latents": [1, 2]})
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["settings"] == A and saved["settings_hash"] == settings_digest(A) != settings_digest(B)


def test_a_state_from_before_settings_travelled_with_it_uses_the_old_copy(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"iteration": 1}))
    (tmp_path / "params.json").write_text(json.dumps(A))
    stored = StageState(tmp_path / "state.json", legacy_settings=tmp_path / "params.json")
    assert stored.load(A) == {"iteration": 1}
    with pytest.raises(SettingsMismatch):
        stored.load(B)
    (tmp_path / "params.json").unlink()
    with pytest.raises(SettingsMismatch, match="unknown|metric"):  # settings nowhere: never resumed blindly
        stored.load(A)
