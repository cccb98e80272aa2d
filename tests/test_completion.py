"""Shell completion: the scripts for bash, zsh and fish, and what completing offers (catalog
names and quants, --hardware profiles, --use values), through the same environment-variable
protocol the shells use, and for bash through bash itself. Completing stays light: once its
values are cached it imports neither the catalog nor the recommender.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qwencli.catalog import load_catalog
from qwencli.hardware.profiles import list_profiles
from qwencli.recommend import USES
from tests import ceilings
from tests.test_startup import PROBE  # the app run in a fresh interpreter, its modules listed

QWEN = str(Path(sys.executable).with_name("qwen"))


def complete(words: str, shell: str = "bash") -> list[str]:
    """What `qwen` offers for the command line `words` (the cursor after its last word; a
    trailing space starts a new, empty word)."""
    env = {**os.environ, "_QWEN_COMPLETE": f"complete_{shell}"}
    if shell == "bash":
        parts = words.split(" ")
        env.update(COMP_WORDS=words, COMP_CWORD=str(len(parts) - 1))
    else:
        env["_TYPER_COMPLETE_ARGS"] = words
        if shell == "fish":
            env["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    done = subprocess.run([QWEN], capture_output=True, text=True, env=env,
                          timeout=ceilings.PROCESS_S, check=True)
    assert not done.stderr, done.stderr
    if shell == "fish":
        return [line.split("\t")[0] for line in done.stdout.splitlines() if line]
    return done.stdout.split()


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_for_three_shells(shell: str) -> None:
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    done = subprocess.run([QWEN, "--show-completion", shell], capture_output=True, text=True,
                          env=env, timeout=ceilings.PROCESS_S)
    assert done.returncode == 0, done.stderr
    script = done.stdout
    assert f"_QWEN_COMPLETE=complete_{shell}" in script
    if shell == "bash":
        assert "complete -o default -F _qwen_completion qwen" in script
    elif shell == "zsh":
        assert "#compdef qwen" in script and "compdef _qwen_completion qwen" in script
    else:
        assert script.startswith("complete --command qwen")
    # the shells' own way to ask for it gives the same script
    sourced = subprocess.run([QWEN], capture_output=True, text=True, timeout=ceilings.PROCESS_S,
                             env={**os.environ, "_QWEN_COMPLETE": f"source_{shell}"})
    assert sourced.stdout.strip() == script.strip()


def test_install_completion_writes_the_script_for_the_shell(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path),
           "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    done = subprocess.run([QWEN, "--install-completion", "fish"], capture_output=True,
                          text=True, env=env, timeout=ceilings.PROCESS_S)
    assert done.returncode == 0, done.stderr
    installed = tmp_path / ".config" / "fish" / "completions" / "qwen.fish"
    assert "_QWEN_COMPLETE=complete_fish" in installed.read_text()


def test_chat_model_offers_catalog_names_then_quants() -> None:
    catalog = load_catalog()
    offered = complete("qwen chat -m qwen3-")
    expected = {spec.id for spec in catalog.all_models if spec.id.startswith("qwen3-")}
    assert expected and expected <= set(offered)
    assert all(name.startswith("qwen3-") for name in offered)
    quants = complete("qwen chat -m qwen3-8b:")
    assert quants == [f"qwen3-8b:{q.lower()}" for q in catalog.get("qwen3-8b").quants]
    assert complete("qwen chat -m qwen3-8b:q4") == ["qwen3-8b:q4_k_m"]
    assert complete("qwen chat -m qwen3-8b:q4", shell="zsh") != []
    assert complete("qwen fit qwen3-8b:q8", shell="fish") == ["qwen3-8b:q8_0"]


def test_hardware_use_commands_and_options() -> None:
    assert complete("qwen recommend --hardware ") == list(list_profiles())
    assert complete("qwen fit qwen3-8b --hardware desk") == [
        name for name in list_profiles() if name.startswith("desk")]
    assert complete("qwen recommend --use ") == list(USES)
    assert {"chat", "logs", "recommend"} <= set(complete("qwen "))
    assert set(complete("qwen logs ")) == {"list", "show", "search", "rm", "path"}
    assert {"--continue", "--cid", "--ctx"} <= set(complete("qwen chat --c"))


def test_a_new_hardware_profile_is_offered_at_once() -> None:
    from qwencli.paths import bundled_profiles_dir, config_dir

    assert "my-box" not in complete("qwen recommend --hardware ")  # cached now
    folder = config_dir() / "hardware"
    folder.mkdir(parents=True)
    shutil.copy(bundled_profiles_dir() / "hardware" / "vps-4gb.toml", folder / "my-box.toml")
    assert "my-box" in complete("qwen recommend --hardware ")


def test_bash_itself_completes_through_the_script(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    if bash is None:  # the zsh and fish paths above are the protocol tests
        pytest.skip("no bash on this machine")
    script = subprocess.run([QWEN], capture_output=True, text=True, timeout=ceilings.PROCESS_S,
                            env={**os.environ, "_QWEN_COMPLETE": "source_bash"}).stdout
    (tmp_path / "qwen.bash").write_text(script)
    line = f"""
source {tmp_path / 'qwen.bash'}
COMP_WORDS=(qwen recommend --hardware desk); COMP_CWORD=3
_qwen_completion qwen
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = {**os.environ, "PATH": f"{Path(QWEN).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([bash, "--norc", "-c", line], capture_output=True, text=True,
                          env=env, timeout=ceilings.PROCESS_S, check=True)
    assert done.stdout.split() == [name for name in list_profiles() if name.startswith("desk")]


def _modules_while_completing(words: str) -> tuple[set[str], list[str]]:
    parts = words.split(" ")
    env = {**os.environ, "_QWEN_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(parts) - 1)}
    done = subprocess.run([sys.executable, "-c", PROBE.format(args=[])], capture_output=True,
                          text=True, env=env, timeout=ceilings.PROCESS_S, check=True)
    return set(json.loads(done.stderr.strip().splitlines()[-1])), done.stdout.split()


@pytest.mark.parametrize("words", ["qwen chat -m qwen3-", "qwen recommend --use ",
                                   "qwen recommend --hardware ", "qwen rm q"])
def test_a_cached_completion_imports_neither_the_catalog_nor_the_recommender(
        words: str) -> None:
    first, offered = _modules_while_completing(words)  # computes and caches the values
    again, offered_again = _modules_while_completing(words)
    assert offered_again == offered
    heavy = {"qwencli.catalog", "qwencli.store", "qwencli.recommend",
             "qwencli.hardware.profiles", "llama_cpp", "huggingface_hub", "rich.table"}
    assert not heavy & again, heavy & again
    if words != "qwen rm q":
        assert offered and heavy & first  # the first one really loaded them
