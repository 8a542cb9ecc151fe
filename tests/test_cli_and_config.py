"""The `lvg` command and the preset registry."""

import json
import subprocess
import sys

import pytest

from lvg.cli import main
from lvg.config import DIT_PRESETS, DiTConfig


def test_lvg_help_and_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "lvg info" in out and all(cmd in out for cmd in ("fit", "validate", "test", "predict"))
    main(["--version"])
    assert capsys.readouterr().out.startswith("lvg ")


def test_lvg_info_framepack_f1_counts_parameters_on_meta(capsys):
    main(["info", "--model", "framepack-f1"])
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == sum(info["parameters_per_module"].values())
    assert 12.5e9 < info["parameters"] < 13.5e9
    assert info["direct_forcing_trainable"] == 19_077_184  # norm_out.linear + proj_out, "~19.1M"


def test_lvg_info_unknown_preset_is_a_clear_error():
    with pytest.raises(SystemExit, match="Unknown DiT preset 'nope'; choose one of"):
        main(["info", "--model", "nope"])


def test_python_dash_m_lvg_works():
    out = subprocess.run([sys.executable, "-m", "lvg", "info", "--model", "debug"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["config"] == DIT_PRESETS["debug"].to_dict()


@pytest.mark.parametrize("name", sorted(DIT_PRESETS))
def test_presets_round_trip_through_config_json(name):
    cfg = DiTConfig.from_name(name)
    assert DiTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_config_validation():
    with pytest.raises(ValueError, match="must sum to attention_head_dim"):
        DiTConfig.from_name("toy", rope_axes_dim=(8, 8, 8))
    with pytest.raises(ValueError, match="must be even"):
        DiTConfig(num_attention_heads=1, attention_head_dim=9, rope_axes_dim=(3, 3, 3))
    assert DiTConfig.from_name("toy", num_layers=4).num_layers == 4
