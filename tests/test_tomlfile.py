"""tomlfile: the one TOML reader, the declarative schema check and the one error format."""

from __future__ import annotations

import os
import sys
from datetime import date
from pathlib import Path

import pytest

from qwencli import tomlfile
from qwencli.errors import ConfigError
from qwencli.tomlfile import MAX_BYTES, Field, check, error, join, read


def _write(tmp_path: Path, data: str | bytes, name: str = "f.toml") -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def _read_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        read(path)
    assert "\n" not in info.value.message  # one line, whatever went wrong
    return info.value


# --------------------------------------------------------------------------------------------
# Reading


def test_reads_toml(tmp_path: Path) -> None:
    path = _write(tmp_path, 'a = 1\n[b]\nc = "x"\nd = 2026-01-02\n')
    assert read(path) == {"a": 1, "b": {"c": "x", "d": date(2026, 1, 2)}}


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, b'\xef\xbb\xbfname = "caf\xc3\xa9"\r\n')  # as Notepad saves it
    assert read(path) == {"name": "café"}


def test_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, 'a = 1\nb = "x"\nc = nope\n')
    err = _read_error(path)
    assert err.message == f"{path}: line 3: invalid value (column 5)"


def test_syntax_error_at_end_of_file_names_the_last_line(tmp_path: Path) -> None:
    path = _write(tmp_path, 'a = 1\nb = [1,\n')
    assert _read_error(path).message == f"{path}: line 2: invalid value (at end of file)"


def test_syntax_error_carries_the_callers_hint(tmp_path: Path) -> None:
    path = _write(tmp_path, "a = \n")
    with pytest.raises(ConfigError) as info:
        read(path, hint="fix it")
    assert info.value.hint == "fix it"


def test_not_utf8_names_the_byte_and_its_offset(tmp_path: Path) -> None:
    path = _write(tmp_path, b'a = "caf\xe9"\n')  # Latin-1
    err = _read_error(path)
    assert err.message == f"{path}: not UTF-8 text (byte 0xe9 at offset 8)"
    assert err.hint is not None and "UTF-8" in err.hint


def test_not_utf8_offset_counts_the_byte_order_mark(tmp_path: Path) -> None:
    path = _write(tmp_path, b"\xef\xbb\xbfa = 1\n\xff\n")
    assert _read_error(path).message == f"{path}: not UTF-8 text (byte 0xff at offset 9)"


def test_utf16_is_not_utf8(tmp_path: Path) -> None:
    path = _write(tmp_path, "a = 1\n".encode("utf-16"))  # Notepad's "Unicode"
    assert _read_error(path).message == f"{path}: not UTF-8 text (byte 0xff at offset 0)"


def test_a_directory_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.mkdir()
    message = _read_error(path).message
    assert message.startswith(f"{path}: cannot read: ")
    if sys.platform != "win32":
        assert message == f"{path}: cannot read: Is a directory"


def test_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "none.toml"
    assert _read_error(path).message == f"{path}: cannot read: No such file or directory"
    assert read(path, missing_ok=True) == {}


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="root reads any file; Windows has no chmod 000")
def test_an_unreadable_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "a = 1\n")
    path.chmod(0)
    assert _read_error(path).message == f"{path}: cannot read: Permission denied"


def test_a_file_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "# " + "x" * MAX_BYTES + "\n")
    assert _read_error(path).message == f"{path}: too big to be a settings file (over 4 MiB)"
    at_cap = _write(tmp_path, "#" * (MAX_BYTES - 1) + "\n", "cap.toml")
    assert read(at_cap) == {}


def test_hostile_documents_are_one_line_errors(tmp_path: Path) -> None:
    deep = _write(tmp_path, "a = " + "[" * 100_000 + "\n", "deep.toml")
    assert _read_error(deep).message == f"{deep}: arrays or tables nested too deeply"
    big = _write(tmp_path, "a = " + "9" * 5000 + "\n", "big.toml")
    message = _read_error(big).message
    assert message.startswith(f"{big}: invalid value: ")
    nul = _write(tmp_path, b"a = 'x\x00'\n", "nul.toml")
    assert _read_error(nul).message.startswith(f"{nul}: line 1: ")


# --------------------------------------------------------------------------------------------
# The error format


def test_error_format() -> None:
    err = error(Path("/x/f.toml"), "models[2].gguf[0].quants.Q4_K_M.size", "must be positive",
                hint="fix it")
    assert err.message == "/x/f.toml: models[2].gguf[0].quants.Q4_K_M.size: must be positive"
    assert err.hint == "fix it" and err.exit_code == 1
    assert error("/x/f.toml", "", "too big").message == "/x/f.toml: too big"


def test_join() -> None:
    assert join("", "models") == "models"
    assert join("models", 2) == "models[2]"
    assert join(join(join("models", 2), "gguf"), 0) == "models[2].gguf[0]"


# --------------------------------------------------------------------------------------------
# The checker

QUANT = {"size": Field("int|ints", required=True), "sha256": Field("str|strs")}
SOURCE = {
    "repo": Field("str", required=True, blank=False),
    "quants": Field("map", required=True, choices=("Q4_K_M", "Q8_0"), noun="quant",
                    of=Field("table", sub=QUANT)),
}
MODEL = {
    "id": Field("str", required=True),
    "released": Field("date"),
    "use": Field("strs", choices=("chat", "code")),
    "mode": Field("str", choices=("hybrid", "none")),
    "layers": Field("int", minimum=1),
    "quality": Field("number", minimum=0, maximum=100),
    "bandwidth": Field("number", above=0),
    "cores": Field("ints", minimum=1),
    "moe": Field("bool"),
    "scores": Field("map", of=Field("number")),
    "experts": Field("table", sub={"total": Field("int", required=True)}),
    "gguf": Field("tables", sub=SOURCE),
}
FILE = {
    "schema": Field("int", required=True),
    "defaults": Field("table", sub=MODEL, partial=True),
    "models": Field("tables", required=True, sub=MODEL),
}
GOOD = {
    "schema": 1,
    "defaults": {"experts": {}, "gguf": [{"quants": {"Q8_0": {}}}]},  # partial: nothing required
    "models": [
        {"id": "a"},
        {"id": "b", "use": ["chat"], "layers": 2, "quality": 50.5, "cores": [8, 10],
         "experts": {"total": 8}, "scores": {"code": 3}, "released": date(2026, 1, 1)},
        {"id": "c", "gguf": [{"repo": "o/r", "quants": {"Q4_K_M": {"size": [1, 2]},
                                                          "Q8_0": {"size": 3, "sha256": "x"}}}]},
    ],
}


def _problem(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        check(data, FILE, Path("/p/m.toml"), hint="fix the file")
    assert info.value.hint == "fix the file"
    prefix = "/p/m.toml: "
    assert info.value.message.startswith(prefix)
    return info.value.message[len(prefix):]


def _with(path: list, value: object) -> dict:
    """GOOD with the value at `path` (keys and list indexes) replaced."""
    import copy

    data = copy.deepcopy(GOOD)
    node = data
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return data


def test_a_good_document_passes() -> None:
    check(GOOD, FILE, "m.toml")


@pytest.mark.parametrize(("path", "value", "expected"), [
    # unknown keys, with a suggestion when one is near
    (["models", 0, "layer"], 3, "models[0].layer: unknown key (did you mean 'layers'?)"),
    (["models", 0, "colour"], "red", "models[0].colour: unknown key"),
    (["defaults", "Experts"], {}, "defaults.Experts: unknown key (did you mean 'experts'?)"),
    (["models", 0, "experts"], {"totl": 1, "total": 1},
     "models[0].experts.totl: unknown key (did you mean 'total'?)"),
    (["schmea"], 1, "schmea: unknown key (did you mean 'schema'?)"),
    (["models", 0, "x"], 1, "models[0].x: unknown key"),
    # wrong kinds
    (["schema"], "1", "schema: expected an integer, got a string"),
    (["models", 0, "layers"], 2.0, "models[0].layers: expected an integer, got a float"),
    (["models", 0, "layers"], True, "models[0].layers: expected an integer, got a boolean"),
    (["models", 0, "quality"], False, "models[0].quality: expected a number, got a boolean"),
    (["models", 0, "moe"], 1, "models[0].moe: expected true or false, got an integer"),
    (["models", 0, "released"], "2026-01-01",
     "models[0].released: expected a date (YYYY-MM-DD, unquoted), got a string"),
    (["models", 0, "use"], "chat", "models[0].use: expected a list of strings, got a string"),
    (["models", 0, "use"], ["chat", 1],
     "models[0].use: expected a list of strings, got an array"),
    (["models", 0, "experts"], [], "models[0].experts: expected a table, got an array"),
    (["models"], {"id": "a"}, "models: expected an array of tables, got a table"),
    (["models", 0, "scores"], {"chat": "high"},
     "models[0].scores.chat: expected a number, got a string"),
    (["models", 2, "gguf", 0, "quants", "Q4_K_M", "size"], "1GB",
     "models[2].gguf[0].quants.Q4_K_M.size: expected an integer or a list of integers, "
     "got a string"),
    (["models", 2, "gguf", 0, "quants", "Q4_K_M", "size"], [],
     "models[2].gguf[0].quants.Q4_K_M.size: expected an integer or a list of integers, "
     "got an array"),
    (["models", 2, "gguf", 0, "quants", "Q8_0"], 3,
     "models[2].gguf[0].quants.Q8_0: expected a table, got an integer"),
    # missing required keys, named where they should be
    (["models", 0], {}, "models[0].id: missing required key"),
    (["models", 1, "experts"], {}, "models[1].experts.total: missing required key"),
    (["models", 2, "gguf", 0, "quants", "Q4_K_M"], {},
     "models[2].gguf[0].quants.Q4_K_M.size: missing required key"),
    # choices: values, list items and map keys
    (["models", 0, "mode"], "auto", "models[0].mode: unknown value 'auto'; "
                                    "expected one of hybrid, none"),
    (["models", 1, "use"], ["chat", "poetry"],
     "models[1].use[1]: unknown value 'poetry'; expected one of chat, code"),
    (["models", 2, "gguf", 0, "quants", "q4_k_m"], {"size": 1},
     "models[2].gguf[0].quants.q4_k_m: unknown quant (did you mean 'Q4_K_M'?)"),
    (["models", 2, "gguf", 0, "quants", "IQ9"], {"size": 1},
     "models[2].gguf[0].quants.IQ9: unknown quant (known: Q4_K_M, Q8_0)"),
    # blank strings and bounds
    (["models", 2, "gguf", 0, "repo"], " ", "models[2].gguf[0].repo: must not be empty"),
    (["models", 0, "layers"], 0, "models[0].layers: must be at least 1, got 0"),
    (["models", 0, "quality"], 100.5, "models[0].quality: must be at most 100, got 100.5"),
    (["models", 0, "bandwidth"], 0, "models[0].bandwidth: must be greater than 0, got 0"),
    (["models", 0, "bandwidth"], float("inf"),
     "models[0].bandwidth: must be a finite number, got inf"),
    (["models", 0, "quality"], float("nan"), "models[0].quality: must be a finite number, got nan"),
    (["models", 1, "cores"], [8, 0], "models[1].cores[1]: must be at least 1, got 0"),
])
def test_checker_errors_name_the_key_path(path: list, value: object, expected: str) -> None:
    assert _problem(_with(path, value)) == expected


def test_partial_tables_check_kinds_but_not_required_keys() -> None:
    assert _problem(_with(["defaults", "gguf", 0, "quants", "Q8_0", "size"], "big")) == (
        "defaults.gguf[0].quants.Q8_0.size: expected an integer or a list of integers, "
        "got a string")
    assert _problem(_with(["defaults", "experts"], {"total": "8"})) == (
        "defaults.experts.total: expected an integer, got a string")


def test_missing_top_level_keys_come_after_the_present_ones() -> None:
    data = {"schema": "one"}
    assert _problem(data) == "schema: expected an integer, got a string"
    assert _problem({"schema": 1}) == "models: missing required key"


def test_check_with_a_path_names_keys_below_it() -> None:
    with pytest.raises(ConfigError, match=r"^m\.toml: models\[4\]\.id: missing required key$"):
        check({}, MODEL, "m.toml", "models[4]")


def test_expect_words_replace_the_kind_words() -> None:
    schema = {"ram": Field("str", expect='a size string such as "16GB"')}
    with pytest.raises(ConfigError) as info:
        check({"ram": 16}, schema, "h.toml")
    assert info.value.message == ('h.toml: ram: expected a size string such as "16GB", '
                                  "got an integer")


@pytest.mark.parametrize("make", [
    lambda: Field("float"),
    lambda: Field("int", sub={}),
    lambda: Field("str", minimum=1),
    lambda: Field("int", choices=("a",)),
    lambda: Field("table", of=Field("int")),
    lambda: Field("int", blank=False),
    lambda: Field("str", partial=True),
])
def test_impossible_fields_are_programming_errors(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_tomlfile_imports_nothing_from_qwencli_but_errors() -> None:
    source = Path(tomlfile.__file__).read_text(encoding="utf-8")
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert [line for line in imports if "qwencli" in line] == [
        "from qwencli.errors import ConfigError"]
    assert not [line for line in imports if "difflib" in line]  # only on the error path
