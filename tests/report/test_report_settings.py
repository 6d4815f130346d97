"""ReportSettings is written once: the report command's options, ReportCallback's init args and build_report's
settings are its fields."""

from __future__ import annotations

import dataclasses

import pytest

from sae_lab.report.settings import PASS_FIELDS, ReportSettings


def callback_parser():
    import jsonargparse

    from sae_lab.report.callback import ReportCallback

    jsonargparse.set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--callbacks", type=list[ReportCallback])
    return parser


def test_the_callbacks_init_args_are_the_settings_pass_fields():
    parser = callback_parser()
    spec = '[{"class_path": "sae_lab.report.callback.ReportCallback", "init_args": {"run_dir": "reports/x", ' \
           '"n_exemplars": 4, "knockout_latents": "all", "split": "val"}}]'  # fmt: skip
    callback = parser.instantiate(parser.parse_args(["--callbacks", spec])).callbacks[0]
    assert callback.settings == ReportSettings(run="reports/x", n_exemplars=4, knockout_latents=None, split="val")
    init_args = parser.parse_args(["--callbacks", spec]).callbacks[0].init_args
    assert set(init_args.as_dict()) == {"run_dir", *PASS_FIELDS}  # sae, classifier and device: the SAE being trained
    bad = spec.replace('"split": "val"', '"sae": "elsewhere"')
    with pytest.raises(Exception, match="sae"):
        parser.parse_args(["--callbacks", bad])


def test_pass_settings_are_the_fields_that_shape_the_pass():
    s = ReportSettings(run="r", sae="s", device="cpu", quantile=0.5, knockout_latents="all")
    assert s.pass_settings()["quantile"] == 0.5 and s.pass_settings()["knockout_latents"] is None
    assert set(s.pass_settings()) | {"run", "sae", "classifier", "device"} == {f.name for f in dataclasses.fields(s)}
    with pytest.raises(ValueError, match="knockout_latents must be >= 0, 'all' or None, got 'most'"):
        ReportSettings(knockout_latents="most")
