"""The user config file and `qwen config get/set/unset/list/path`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qwencli import config
from qwencli.cli import app
from qwencli.errors import ConfigError, UsageError


def test_set_get_unset_round_trip(tmp_path: Path) -> None:
    assert config.default_model() is None
    assert config.set_value("default-model", "qwen3-8b:q4_k_m") == "qwen3-8b:q4_k_m"
    assert config.get_value("default-model") == "qwen3-8b:q4_k_m"
    text = config.config_path().read_text()
    assert 'default-model = "qwen3-8b:q4_k_m"' in text
    assert config.unset_value("default-model") is True
    assert config.unset_value("default-model") is False
    assert config.default_model() is None


def test_local_paths_are_stored_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    assert config.save_default_model("./m.gguf") == str(tmp_path / "m.gguf")
    assert config.default_model() == str(tmp_path / "m.gguf")


def test_bad_keys_values_and_files() -> None:
    with pytest.raises(UsageError, match="unknown setting 'colour'"):
        config.set_value("colour", "blue")
    with pytest.raises(UsageError):
        config.set_value("default-model", "Qwen/Qwen3-8B-GGUF:bad tag")
    with pytest.raises(UsageError, match="unknown model 'qwen3-9b'"):
        config.set_value("default-model", "qwen3-9b")
    with pytest.raises(UsageError, match="qwen3-8b has no quant 'Q9_K'"):
        config.set_value("default-model", "qwen3-8b:q9_k")
    config.config_path().parent.mkdir(parents=True, exist_ok=True)
    config.config_path().write_text("default-model = [unclosed\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.default_model()
    config.config_path().write_text("default-model = 3\n")
    with pytest.raises(ConfigError, match="default-model must be a string"):
        config.default_model()


def test_odd_strings_survive_the_file() -> None:
    odd = '/models/my "best" model\\ü.gguf'
    config._write({"default-model": odd})
    assert config.load_config() == {"default-model": odd}


def test_cli_commands() -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["config", "get", "default-model"])
    assert done.exit_code == 1 and "default-model is not set" in done.stderr
    done = runner.invoke(app, ["config", "set", "default-model", "qwen3-4b"])
    assert done.exit_code == 0 and done.stdout == ""
    assert "default-model = qwen3-4b" in done.stderr
    done = runner.invoke(app, ["config", "get", "default-model"])
    assert (done.exit_code, done.stdout) == (0, "qwen3-4b\n")
    done = runner.invoke(app, ["config", "list", "--json"])
    doc = json.loads(done.stdout)
    assert doc["schema_version"] == 1
    assert doc["settings"] == {"default-model": "qwen3-4b"}
    assert doc["path"] == str(config.config_path())
    done = runner.invoke(app, ["config", "path"])
    assert done.stdout == f"{config.config_path()}\n"
    done = runner.invoke(app, ["config", "unset", "default-model"])
    assert done.exit_code == 0 and config.default_model() is None
    done = runner.invoke(app, ["config", "set", "nope", "1"])
    assert done.exit_code == 2 and "unknown setting 'nope'" in done.stderr
