"""`python -m sae_lab report` as a user runs it (a subprocess), its errors and --help."""

import json

from sae_lab.__main__ import main
from tests.report.test_report_pipeline import NUM_LATENTS, make_sae


def test_report_command_writes_a_report_and_refuses_to_overwrite_it(classifier_ckpt, tmp_path, cli):
    sae = make_sae(classifier_ckpt, tmp_path / "checkpoints" / "sae")
    r = cli("report", "--sae", str(sae), "--run", "reports/tiny", "--exemplars", "4", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "wrote the neuron report to reports/tiny/index.html" in r.stdout and "/12 primitives recovered" in r.stdout
    run = tmp_path / "reports" / "tiny"
    assert sum(1 for _ in (run / "neurons.jsonl").open()) == NUM_LATENTS
    report = json.loads((run / "report.json").read_text())
    assert report["data"]["split"] == "test" and report["settings"]["n_exemplars"] == 4
    assert (run / "index.html").is_file()


def test_report_command_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["report", "--sae", str(tmp_path / "nothing"), "--run", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: SAE folder") and "does not exist" in err and "Traceback" not in err
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "neurons.jsonl").write_text("{}\n")
    assert main(["report", "--sae", str(tmp_path / "nothing"), "--run", str(tmp_path / "r")]) == 2
    assert "already holds a report" in capsys.readouterr().err


def test_bad_settings_are_refused_before_anything_loads(tmp_path, capsys):
    # The SAE folder does not exist either: the settings are checked first.
    args = ["report", "--sae", str(tmp_path / "nothing"), "--run", str(tmp_path / "r")]
    assert main([*args, "--quantile", "1.5"]) == 2
    assert "quantile must be in [0, 1], got 1.5" in capsys.readouterr().err
    assert main([*args, "--exemplars", "0"]) == 2
    assert "n_exemplars and batch_size must be >= 1" in capsys.readouterr().err


def test_report_help_lists_its_options(capsys):
    try:
        main(["report", "--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    for option in ("--sae", "--run", "--classifier", "--split", "--data", "--exemplars", "--quantile", "--overwrite",
                   "--batch-size"):  # fmt: skip
        assert option in out
    assert main(["--help"]) == 0 and "  report " in capsys.readouterr().out
