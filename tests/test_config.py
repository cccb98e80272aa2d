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
    path = config.config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("default-model = [unclosed\n")
    with pytest.raises(ConfigError) as info:
        config.default_model()
    assert info.value.message == f"{path}: line 1: invalid value (column 18)"
    assert info.value.hint is not None and "qwen config set default-model" in info.value.hint
    path.write_text("default-model = 3\n")
    with pytest.raises(ConfigError) as info:
        config.default_model()
    assert info.value.message == f"{path}: default-model: expected a string, got an integer"


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
    assert doc["settings"] == {"default-model": "qwen3-4b", "log": None}
    assert doc["path"] == str(config.config_path())
    done = runner.invoke(app, ["config", "path"])
    assert done.stdout == f"{config.config_path()}\n"
    done = runner.invoke(app, ["config", "unset", "default-model"])
    assert done.exit_code == 0 and config.default_model() is None
    done = runner.invoke(app, ["config", "set", "nope", "1"])
    assert done.exit_code == 2 and "unknown setting 'nope'" in done.stderr


def test_the_log_setting_is_a_toml_boolean() -> None:
    runner = CliRunner()
    assert config.log_enabled() is True  # not set: on
    done = runner.invoke(app, ["config", "set", "log", "False"])
    assert done.exit_code == 0 and "log = false" in done.stderr
    assert "log = false" in config.config_path().read_text()  # a TOML boolean, not a string
    assert config.log_enabled() is False
    assert runner.invoke(app, ["config", "get", "log"]).stdout == "false\n"
    assert "log = false" in runner.invoke(app, ["config", "list"]).stdout
    done = runner.invoke(app, ["config", "set", "log", "maybe"])
    assert done.exit_code == 2 and "expected true or false, not 'maybe'" in done.stderr
    runner.invoke(app, ["config", "set", "log", "on"])
    assert config.log_enabled() is True


# --------------------------------------------------------------------------------------------
# A hand-edited config file, through the real CLI


def _config_file(content: bytes) -> Path:
    path = config.config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _one_line_error(args: list[str]) -> str:
    """Run `qwen ARGS`, expect exit 1 and one error line (plus at most a hint); return it."""
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 1, done.output
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0].startswith("error: ")
    assert lines[1:] == [] or (len(lines) == 2 and lines[1].startswith("hint: "))
    assert "Traceback" not in done.stderr and "unexpected" not in done.stderr
    return lines[0]


def test_a_config_saved_with_a_byte_order_mark_loads() -> None:
    _config_file(b'\xef\xbb\xbfdefault-model = "qwen3-4b"\r\n')  # as Notepad saves it
    done = CliRunner().invoke(app, ["config", "get", "default-model"])
    assert (done.exit_code, done.stdout) == (0, "qwen3-4b\n")
    done = CliRunner().invoke(app, ["config", "list", "--json"])
    assert done.exit_code == 0
    assert json.loads(done.stdout)["settings"] == {"default-model": "qwen3-4b", "log": None}


@pytest.mark.parametrize("args", [["config", "get", "default-model"], ["config", "list"]])
def test_a_config_that_is_not_utf8_is_one_line(args: list[str]) -> None:
    path = _config_file("default-model = 'C:\\models\\café.gguf'\n".encode("latin-1"))
    assert _one_line_error(args) == f"error: {path}: not UTF-8 text (byte 0xe9 at offset 30)"


@pytest.mark.parametrize("args", [["config", "get", "default-model"], ["config", "list"]])
def test_a_config_value_of_the_wrong_type_names_the_key(args: list[str]) -> None:
    path = _config_file(b"default-model = 3\n")
    assert _one_line_error(args) == (
        f"error: {path}: default-model: expected a string, got an integer")


def test_a_config_syntax_error_names_the_line() -> None:
    path = _config_file(b'# settings\ndefault-model = "qwen3-4b\n')
    assert _one_line_error(["config", "list"]).startswith(f"error: {path}: line 2: ")


def test_a_folder_where_the_config_file_should_be() -> None:
    path = config.config_path()
    path.mkdir(parents=True)
    assert _one_line_error(["config", "list"]).startswith(f"error: {path}: cannot read: ")


def test_unknown_keys_in_the_config_are_kept() -> None:
    _config_file(b'default-model = "qwen3-4b"\ncolour = 3\n')
    assert config.load_config() == {"default-model": "qwen3-4b", "colour": 3}
    done = CliRunner().invoke(app, ["config", "get", "default-model"])
    assert (done.exit_code, done.stdout) == (0, "qwen3-4b\n")
