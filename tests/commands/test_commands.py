"""Every pipeline command's options, `--help`, `--config` and errors, through its registry entry (in-process: the
settings are parsed and checked, nothing runs)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import yaml

from sae_lab.commands import COMMANDS
from sae_lab.commands.explain import PROG, ExplainCommand, find_explainer, method_command, run_method
from sae_lab.commands.framework import SettingsCommand, gather_positionals, normalise_flags
from sae_lab.explainers.base import available
from tests.helpers.common import REPO

METHODS = available()
CONFIGS = {
    "world": {"out": "w", "n_train": 12, "overwrite": True},
    "cache-tokens": {"classifier": "c.ckpt", "splits": "train,test", "dtype": "float32"},
    "report": {"sae": "s", "run": "r", "n_exemplars": 4, "knockout_latents": "all", "split": "val"},
    "label": {"run": "r", "include_dead": True, "concurrency": 3},
    "evaluate": {"run": "r", "n_latents": 5, "latents_seed": 3},
    "why": {"images": ["a.png", "pics/"], "run": "r", "explanations": "labels,line", "json": True, "top": 3},
    "serve": {"run": "r", "host": "0.0.0.0", "port": 9001, "max_bytes": 1000, "log_level": "info"},
    "quickstart": {"root": "q", "accelerator": "gpu", "smoke": True},
}
"""A YAML per command: field → value (a value other than the default)."""
EXPECTED = {**CONFIGS, "report": {**CONFIGS["report"], "knockout_latents": None}}  # "all" is stored as None
METHOD_CONFIG = {"run": "r", "latents": "0-3", "seed": 3}
"""The fields every method shares (ExplainSettings)."""
OVERRIDES = {"world": ("--n-train", "n_train", 20), "cache-tokens": ("--batch-size", "batch_size", 7),
             "report": ("--exemplars", "n_exemplars", 5), "evaluate": ("--n-latents", "n_latents", 9),
             "why": ("--top", "top", 7), "serve": ("--port", "port", 9002),
             "quickstart": ("--accelerator", "accelerator", "auto")}  # fmt: skip
"""Per command an option given after --config, its field and value (methods: --seed)."""


def squash(text: str) -> str:
    return " ".join(text.split())


def help_text(command, argv: list[str], capsys) -> str:
    """What `command ARGV` prints (argparse-style help exits 0)."""
    try:
        assert command.call(argv) == 0
    except SystemExit as e:
        assert e.code == 0
    return squash(capsys.readouterr().out)


def commands() -> dict:
    """Every command line that has options: the registry's, and `explain METHOD` for every method."""
    out = {name: cmd for name, cmd in COMMANDS.items() if not isinstance(cmd, ExplainCommand)}
    return {**out, **{f"explain {m}": method_command(m) for m in METHODS}}


@pytest.mark.parametrize("name", list(commands()))
def test_help_lists_every_option_with_its_docstring(name, capsys):
    cmd = commands()[name]
    out = help_text(cmd, ["--help"], capsys)
    actions = [a for a in cmd.parser()._actions if a.option_strings and a.dest not in ("help", "print_config")]
    assert actions
    for action in actions:
        shown = next(o for o in action.option_strings if "_" not in o[2:]) if action.dest != "config" else "--config"
        assert shown in out, f"{name}: {shown}"
        assert action.help and action.help.strip(), f"{name}: {shown} has no help"
        assert squash(action.help)[:40] in out, f"{name}: the help of {shown}"
    if isinstance(cmd, SettingsCommand):
        fields = {f.name for f in dataclasses.fields(cmd.settings_class())}
        assert fields <= {a.dest for a in actions}  # every field is an option
        assert "--config" in out


def test_explain_help_lists_the_methods(capsys):
    out = help_text(COMMANDS["explain"], ["--help"], capsys)
    assert {"labels", "line", "le"} <= set(METHODS)
    for method in METHODS:
        assert f" {method} " in out and squash(method_command(method).help)[:30] in out
    assert help_text(COMMANDS["explain"], [], capsys) == out


@pytest.mark.parametrize("name", [*CONFIGS, *(f"explain {m}" for m in METHODS)])
def test_a_config_yaml_gives_the_settings_and_the_command_line_overrides_it(name, tmp_path):
    cmd = commands()[name]
    values = CONFIGS.get(name, METHOD_CONFIG)
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(values))
    settings = cmd.parse(["--config", str(path)])
    got = {k: getattr(settings, k) for k in values}
    assert got == EXPECTED.get(name, values)
    option, field, value = OVERRIDES.get(name, ("--seed", "seed", 11))
    assert getattr(cmd.parse(["--config", str(path), option, str(value)]), field) == value


def test_an_unknown_config_key_is_named(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"out": "w", "n_trian": 3}))
    with pytest.raises(SystemExit) as e:
        COMMANDS["world"].parse(["--config", str(path)])
    assert e.value.code == 2 and "n_trian" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name,argv,field",
    [("world", ["--out", "w", "--n-train", "many"], "n_train"),
     ("report", ["--sae", "s", "--run", "r", "--split", "holdout"], "split"),
     ("report", ["--run", "r"], "sae"),
     ("cache-tokens", ["--classifier", "c", "--dtype", "int8"], "dtype"),
     ("explain le", ["--seed", "x"], "seed"),
     ("why", ["a.png", "--rank-by", "largest"], "rank_by"),
     ("why", ["--top", "3"], "images"),
     ("serve", ["--host", "example.org"], "host"),
     ("serve", ["--port", "http"], "port"),
     ("quickstart", ["--smoke=maybe"], "smoke")],
)  # fmt: skip
def test_a_value_of_the_wrong_type_is_an_error_naming_the_field(name, argv, field, capsys):
    with pytest.raises(SystemExit) as e:
        commands()[name].parse(argv)
    assert e.value.code == 2 and field in capsys.readouterr().err.split("error:")[-1]  # the message, not the usage


@pytest.mark.parametrize(
    "name,argv,message",
    [("world", ["--out", "w", "--n-train", "0"], "n_train must be >= 1"),
     ("cache-tokens", ["--classifier", "c", "--splits", "train,holdout"], "splits must be"),
     ("report", ["--sae", "s", "--run", "r", "--quantile", "1.5"], "quantile must be in"),
     ("label", ["--run", "r", "--concurrency", "0"], "concurrency"),
     ("label", ["--run", "r", "--latents", "7-3"], "bad latent range"),
     ("evaluate", ["--run", "r", "--n-latents", "0"], "n_latents"),
     ("why", ["a.png", "--top", "-1"], "top must be >= 0"),
     ("why", ["a.png", "--explanations", "line,,Bad!"], "explanations must be"),
     ("serve", ["--port", "80"], "port must be in 1024..65535"),
     ("serve", ["--max-side", "0"], "max_side must be >= 1"),
     ("quickstart", ["--root", __file__], "root must be a folder")],
)  # fmt: skip
def test_a_refused_combination_is_a_value_error_naming_the_field(name, argv, message):
    with pytest.raises(ValueError, match=message):
        commands()[name].parse(argv)


def test_option_spellings_bool_flags_and_aliases():
    report = COMMANDS["report"]
    base = ["--sae", "s", "--run", "r"]
    s = report.parse([*base, "--overwrite", "--no-progress", "--batch_size", "8", "--exemplars", "3"])
    assert (s.overwrite, s.progress, s.batch_size, s.n_exemplars) == (True, False, 8, 3)
    s = report.parse([*base, "--overwrite", "false", "--progress", "--num-workers", "2", "--knockout-latents", "7"])
    assert (s.overwrite, s.progress, s.num_workers, s.knockout_latents) == (False, True, 2, 7)
    assert normalise_flags(["--a", "--b", "no", "--no-c", "--d=x", "--no-e"], {"a", "b", "c"}) == [
        "--a=true", "--b", "no", "--c=false", "--d=x", "--no-e"]  # fmt: skip


def test_explain_without_a_method_runs_line_and_an_unknown_method_is_named(capsys):
    explain = COMMANDS["explain"]
    assert explain.split(["--run", "r"]) == ("line", ["--run", "r"])
    assert "explain line" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown explanation method 'nope'.*labels"):
        explain.parse(["nope", "--run", "r"])
    assert find_explainer("labels").name == "labels"
    settings = COMMANDS["label"].parse(["--run", "r", "--no-images"])
    assert settings == explain.parse(["labels", "--run", "r", "--no-images"]) and settings.images is False


def test_a_method_prints_its_block_and_fails_when_latents_failed(capsys):
    @dataclasses.dataclass
    class Fake:
        failed: int

        def run(self, settings):
            return {"latents": 3, "failed": self.failed, "settings": settings}

    assert run_method(Fake(0), "s") == 0
    assert json.loads(capsys.readouterr().out) == {"latents": 3, "failed": 0, "settings": "s"}
    assert run_method(Fake(2), "s") == 1


def test_help_and_light_commands_start_without_torch():
    code = (
        "import sys; from sae_lab.__main__ import main; from sae_lab.commands import COMMANDS; main(['--help']); "
        "COMMANDS['world'].parse(['--out', 'w']); COMMANDS['cache-tokens'].parse(['--classifier', 'c']); "
        "COMMANDS['why'].parse(['a.png']); COMMANDS['serve'].parse([]); COMMANDS['quickstart'].parse([]); "
        "heavy = {'torch', 'lightning'} & set(sys.modules); assert not heavy, heavy"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"usage: {PROG.rsplit(' ', 1)[0]}" in r.stdout


def test_why_takes_bare_image_arguments_anywhere_and_explanation_methods(tmp_path):
    why = COMMANDS["why"]
    s = why.parse(["a.png", "--run", "r", "--json", "pics/", "--top", "-0", "more/*.png", "--explanations", "labels"])
    assert s.images == ["a.png", "pics/", "more/*.png"] and (s.run, s.json, s.top) == ("r", True, 0)
    assert s.methods == ("labels",) and why.parse(["a.png"]).methods is None  # None: DEFAULT_PREFERENCE
    assert why.parse(["--explanations", "line, dnd", "--", "--odd.png"]).methods == ("line", "dnd")
    assert why.parse(["--images", '["x.png"]']).images == ["x.png"]
    path = tmp_path / "why.yaml"
    path.write_text(yaml.safe_dump({"images": ["from-config.png"], "top": 2}))
    assert why.parse(["--config", str(path)]).images == ["from-config.png"]
    assert why.parse(["--config", str(path), "a.png", "b.png"]).images == ["a.png", "b.png"]  # bare ones win
    assert gather_positionals(["a", "--x", "v", "--b=true", "-h", "c", "--", "-d"], "images") == [
        "--x", "v", "--b=true", "-h", '--images=["a", "c", "-d"]']  # fmt: skip


def test_stated_default_limits_are_the_libraries_own():
    """why's and serve's limit fields default to None (their modules import torch); their help states the figure."""
    from sae_lab.commands.serve import ServeSettings
    from sae_lab.commands.why import WhySettings
    from sae_lab.data import images
    from sae_lab.inference import server

    def stated(settings, field: str) -> int:
        help_text = {a.dest: a.help for a in SettingsCommand("h", settings, print).parser()._actions}[field]
        figure = help_text.split("limit, ")[1].split(")")[0]
        return int(figure.replace(" ", "").replace("MiB", "")) * (2**20 if "MiB" in figure else 1)

    assert stated(WhySettings, "max_pixels") == images.MAX_PIXELS
    assert stated(ServeSettings, "max_pixels") == server.MAX_PIXELS
    assert stated(ServeSettings, "max_side") == server.MAX_SIDE
    assert stated(ServeSettings, "max_bytes") == server.MAX_BYTES
