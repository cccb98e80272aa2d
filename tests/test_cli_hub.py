"""`qwen pull`, `qwen list`, `qwen rm` end to end: exit codes, messages, JSON documents, and a
`qwen pull` process really killed (SIGINT, SIGKILL) mid-file and resumed."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qwencli import hub, output, store
from qwencli.cli import app
from qwencli.hardware.budget import plan_budget
from tests import blocked, ceilings, fake_hub
from tests.test_hub import MiB, payload, serve, sha

# The app as a user runs it.
LAUNCH = "import sys; from qwencli.cli import main; sys.argv[0] = 'qwen'; main()"


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[fake_hub.FakeHub]:
    yield from serve(tmp_path, monkeypatch)


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def qwen(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", LAUNCH, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_pull_json_document(fake) -> None:
    data = payload(3000)
    fake.add_file("o/r", "m-Q4_K_M.gguf", data)
    result = run("pull", "o/r", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert next(iter(doc)) == "schema_version" and doc["schema_version"] == 1
    path = store.snapshot_path("o/r", fake_hub.COMMIT, "m-Q4_K_M.gguf")
    assert doc | {"seconds": 0} == {
        "schema_version": 1, "model": None, "repo": "o/r", "revision": "main",
        "commit": fake_hub.COMMIT, "quant": "Q4_K_M", "path": str(path),
        "files": [{"path": "m-Q4_K_M.gguf", "local_path": str(path), "size_bytes": 3000,
                   "sha256": sha(data)}],
        "size_bytes": 3000, "bytes_downloaded": 3000, "resumed": False,
        "already_present": False, "verified": True, "seconds": 0, "warnings": []}
    assert result.stderr == ""  # no progress with --json off a terminal


def test_pull_report_and_forced_progress_lines(fake) -> None:
    fake.add_file("hubtest/HubTest-1B-GGUF", "HubTest-1B-Q4_K_M.gguf", payload(2 * MiB))
    result = run("pull", "hubtest-1b", "--quant", "q4_k_m", "--progress")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Downloaded hubtest-1b Q4_K_M"
    assert lines[1] == f"  repo      hubtest/HubTest-1B-GGUF @ {fake_hub.COMMIT[:12]}"
    assert lines[2] == "  file      HubTest-1B-Q4_K_M.gguf (2.0 MiB)"
    assert lines[-2] == "  checked   sha256 matches the Hub's listing"
    assert lines[-1] == "  next: qwen chat -m hubtest-1b:q4_k_m"
    assert result.stderr.splitlines()[-1].startswith(
        "HubTest-1B-Q4_K_M.gguf: 100.0%  2.0 MiB of 2.0 MiB")
    again = run("pull", "hubtest-1b:Q4_K_M")
    assert again.stdout.splitlines()[0] == "Already downloaded: hubtest-1b Q4_K_M"


@pytest.mark.parametrize(("args", "code", "message"), [
    (("pull", "hubtest-1c"), 2, "error: unknown model 'hubtest-1c'; nearest: hubtest-1b"),
    (("pull", "o/missing"), 1, "error: repository o/missing not found on "),
    (("pull", "o/r/m-Q4_K.gguf"), 1, "error: o/r has no file m-Q4_K.gguf; nearest: "
                                     "m-Q4_K_M.gguf"),
    (("pull", "o/r:Q2_K"), 1, "error: o/r has no Q2_K file; it has Q4_K_M"),
    (("pull", "o/gated"), 1, "error: o/gated is gated: accept its licence on the Hub"),
    (("pull", "o/r:Q8_0", "--quant", "Q4_K_M"), 2, "error: 'o/r:Q8_0' says Q8_0 but --quant"),
])
def test_pull_errors_are_one_line_with_exit_codes(fake, args, code, message) -> None:
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(100))
    fake.add_file("o/gated", "m-Q4_K_M.gguf", payload(100))
    fake.gated["o/gated"] = "hf_secret"
    result = run(*args)
    assert result.exit_code == code
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.output


def test_gated_hint_names_both_ways_to_give_a_token(fake, monkeypatch) -> None:
    fake.add_file("o/gated", "m-Q4_K_M.gguf", payload(100))
    fake.gated["o/gated"] = "hf_secret"
    result = run("pull", "o/gated")
    assert result.stderr.splitlines()[1] == \
        "hint: export HF_TOKEN=hf_... or run `hf auth login`"
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert run("pull", "o/gated").exit_code == 0


def test_checksum_mismatch_exits_1_and_says_the_file_was_removed(fake) -> None:
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(MiB))
    fake.fault("o/r", "m-Q4_K_M.gguf", corrupt_at=10)
    result = run("pull", "o/r")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: m-Q4_K_M.gguf: sha256 mismatch")
    assert "the file was removed" in result.stderr.splitlines()[0]
    assert list((store.repo_dir("o/r") / "blobs").iterdir()) == []


def test_disk_full_preflight_exits_1_with_the_numbers(fake, monkeypatch) -> None:
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(MiB))
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=300 * MiB))
    result = run("pull", "o/r")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: not enough disk space for m-Q4_K_M.gguf: 1.0 MiB "
                                    "to download + 512.0 MiB margin, 300.0 MiB free on ")
    assert not store.repo_dir("o/r").exists()


def test_offline_pull_with_and_without_the_file_cached(fake, monkeypatch) -> None:
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(1000))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = run("pull", "o/r")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: cannot pull o/r: HF_HUB_OFFLINE is set; it is not "
                                     "in the cache")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert run("pull", "o/r").exit_code == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(fake.requests)
    cached = run("pull", "o/r", "--json")
    assert cached.exit_code == 0
    assert json.loads(cached.stdout)["already_present"] is True
    assert len(fake.requests) == before


def _until(condition, process: subprocess.Popen, what: str) -> None:
    """Wait for `condition` while `process` runs. The test Hub holds the transfer, so nothing
    moves on without the test: this waits for an event, and ceilings.PROCESS_S only bounds a
    wait for one that never comes."""
    give_up = time.monotonic() + ceilings.PROCESS_S
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"qwen pull exited ({process.returncode}) before {what}: {out}{err}")
        if time.monotonic() > give_up:
            process.kill()
            pytest.fail(f"no {what} within {ceilings.PROCESS_S} s: {process.communicate()}")
        time.sleep(0.01)


def stop_mid_file(fake, monkeypatch, sig: int) -> tuple[bytes, int, subprocess.CompletedProcess]:
    """Start `qwen pull` in a process, let the server stop at a known byte, send `sig`.

    The server holds the transfer at `at` until the test releases it (after the signal), and
    the client's read timeout (HF_HUB_DOWNLOAD_TIMEOUT, see conftest) is longer than any hold,
    so the file cannot finish before the signal however slow the machine is."""
    data = payload(6 * MiB + 5)
    at = 2 * MiB + 3
    fake.add_file("o/r", "m-Q4_K_M.gguf", data)
    fault = fake.fault("o/r", "m-Q4_K_M.gguf", pause_at=at)
    process = qwen("pull", "o/r", "--no-progress")
    part = store.partial_path("o/r", sha(data))
    _until(lambda: fault.reached.wait(0.05), process, f"the server's pause at byte {at}")
    _until(lambda: part.is_file() and part.stat().st_size == at, process,
           f"{at} bytes in the partial file")
    # ... and waits for the next byte: a SIGINT sent before it waits would be acted on only
    # when the wait ends (tests/blocked.py)
    blocked.until_waiting_for_input(process.pid, lambda: process.poll() is None)
    process.send_signal(sig)
    try:
        out, err = process.communicate(timeout=ceilings.PROCESS_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert fake.ranges("m-Q4_K_M.gguf") == [None]  # one request, held: the client never retried
    fault.released.set()
    return data, at, subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killed_mid_file_then_resumed_with_only_the_remaining_bytes(fake, monkeypatch,
                                                                    sig) -> None:
    data, at, killed = stop_mid_file(fake, monkeypatch, sig)
    if sig == signal.SIGINT:
        assert killed.returncode == 130
        assert killed.stderr.splitlines()[-1] == (
            "warning: interrupted: 2.0 MiB of 6.0 MiB kept in the cache; run `qwen pull o/r` "
            "again to resume")
    else:
        assert killed.returncode == -signal.SIGKILL
    assert store.partial_path("o/r", sha(data)).stat().st_size == at
    # the partial is listed as partial, never as complete, and never found
    listed = json.loads(run("list", "--json").stdout)["models"]
    assert [(m["complete"], m["percent"], m["downloaded_bytes"]) for m in listed] == \
        [(False, round(100 * at / len(data), 1), at)]
    assert "partial 33%" in run("list").stdout
    assert store.find_model("o/r") is None
    assert store.find_model("o/r:Q4_K_M") is None
    # the second run asks only for the rest
    gets_before = len(fake.ranges("m-Q4_K_M.gguf"))
    resumed = qwen("pull", "o/r", "--json")
    out, err = resumed.communicate(timeout=ceilings.PROCESS_S)
    assert resumed.returncode == 0, err
    doc = json.loads(out)
    assert (doc["resumed"], doc["bytes_downloaded"], doc["verified"]) == \
        (True, len(data) - at, True)
    assert fake.ranges("m-Q4_K_M.gguf")[gets_before:] == [f"bytes={at}-"]
    last = [r for r in fake.requests if "/resolve/" in r.path][-1]
    assert last.bytes_sent == len(data) - at
    assert Path(doc["path"]).read_bytes() == data
    assert store.find_model("o/r") == Path(doc["path"])
    assert [m["complete"] for m in json.loads(run("list", "--json").stdout)["models"]] == [True]


def test_list_shows_models_with_catalog_ids(fake) -> None:
    fake.add_file("hubtest/HubTest-1B-GGUF", "HubTest-1B-Q4_K_M.gguf", payload(2000))
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(1000))
    assert run("pull", "hubtest-1b:q4_k_m").exit_code == 0
    assert run("pull", "o/r").exit_code == 0
    text = run("list").stdout.splitlines()
    assert text[0] == "Downloaded models"
    assert text[1].split() == ["MODEL", "REPO", "QUANT", "SIZE", "STATUS", "PATH"]
    assert text[2].split()[:6] == ["hubtest-1b", "hubtest/HubTest-1B-GGUF", "Q4_K_M", "2.0",
                                   "KiB", "complete"]
    assert text[3].split()[:5] == ["-", "o/r", "Q4_K_M", "1000", "B"]
    doc = json.loads(run("list", "--json").stdout)
    assert list(doc) == ["schema_version", "cache_dir", "models", "total_bytes"]
    assert doc["cache_dir"] == str(store.hub_cache()) and doc["total_bytes"] == 3000
    assert doc["models"][0] == {
        "model": "hubtest-1b", "repo": "hubtest/HubTest-1B-GGUF", "quant": "Q4_K_M",
        "files": ["HubTest-1B-Q4_K_M.gguf"], "parts": 1, "parts_complete": 1,
        "size_bytes": 2000, "downloaded_bytes": 2000, "complete": True, "percent": 100.0,
        "path": str(store.snapshot_path("hubtest/HubTest-1B-GGUF", fake_hub.COMMIT,
                                        "HubTest-1B-Q4_K_M.gguf")),
        "commit": fake_hub.COMMIT, "refs": ["main"]}


def test_list_of_an_empty_cache() -> None:
    result = run("list")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "No GGUF models downloaded"
    assert json.loads(run("list", "--json").stdout)["models"] == []


def test_rm_needs_yes_without_a_terminal(fake) -> None:
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(1000))
    run("pull", "o/r")
    refused = run("rm", "o/r:Q4_K_M")
    assert refused.exit_code == 1
    assert refused.stderr.splitlines() == [
        "error: qwen rm asks before deleting 1 download(s), and there is no terminal to ask",
        "hint: `qwen rm o/r:Q4_K_M --yes`"]
    assert store.find_model("o/r") is not None
    done = run("rm", "o/r:Q4_K_M", "--yes", "--json")
    assert done.exit_code == 0
    doc = json.loads(done.stdout)
    assert doc["freed_bytes"] == 1000 and doc["removed"][0]["repo"] == "o/r"
    assert store.find_model("o/r") is None and not store.repo_dir("o/r").exists()
    nothing = run("rm", "o/r", "--yes")
    assert nothing.exit_code == 1 and nothing.stderr.startswith("error: nothing to remove: o/r")


def test_rm_asks_on_a_terminal(fake, monkeypatch) -> None:
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(1000))
    run("pull", "o/r")
    monkeypatch.setattr(output, "can_ask", lambda: True)
    declined = run("rm", "o/r", input="n\n")
    assert declined.exit_code == 1 and "nothing removed" in declined.stderr
    assert "Remove? [y/N]" in declined.stderr
    assert store.find_model("o/r") is not None
    accepted = run("rm", "o/r", input="y\n")
    assert accepted.exit_code == 0
    assert "Removed 1 download(s), 1000 B freed" in accepted.stdout.splitlines()
    assert store.find_model("o/r") is None


def test_rm_removes_a_partial_too(fake, monkeypatch) -> None:
    monkeypatch.setattr(hub, "_RETRIES", 1)
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(2 * MiB))
    fake.fault("o/r", "m-Q4_K_M.gguf", cut_at=MiB, times=0)  # every attempt is cut
    failed = run("pull", "o/r")
    assert failed.exit_code == 1
    assert failed.stderr.startswith("error: transfer of m-Q4_K_M.gguf failed: ")
    assert "run `qwen pull o/r` again to resume" in failed.stderr
    [listed] = json.loads(run("list", "--json").stdout)["models"]
    assert (listed["complete"], listed["percent"]) == (False, 50.0)
    assert run("rm", "o/r", "--yes").exit_code == 0
    assert not store.repo_dir("o/r").exists()


def test_on_a_terminal_pull_draws_a_bar_and_rm_asks(fake) -> None:
    import pexpect

    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(3 * MiB))
    fake.throttle_bps = 6 * MiB  # half a second, so the bar is drawn while it runs
    seen = io.StringIO()
    colour = {key: value for key, value in os.environ.items() if key != "NO_COLOR"}
    pull = pexpect.spawn(sys.executable, ["-c", LAUNCH, "pull", "o/r"], env=colour,
                         encoding="utf-8", timeout=ceilings.PROCESS_S, dimensions=(24, 120))
    pull.logfile_read = seen
    pull.expect(pexpect.EOF)
    pull.close()
    assert pull.exitstatus == 0
    screen = seen.getvalue()
    assert "Downloaded o/r Q4_K_M" in screen
    bar = screen[: screen.index("Downloaded")]
    assert "m-Q4_K_M.gguf" in bar and "3.0/3.0 MiB" in bar  # bytes
    assert re.search(r"\d [kMG]?B/s", bar)  # a rate (its size depends on the machine's load)
    assert "next: qwen chat -m o/r:Q4_K_M" in screen
    rm = pexpect.spawn(sys.executable, ["-c", LAUNCH, "rm", "o/r"], env=dict(os.environ),
                       encoding="utf-8", timeout=ceilings.PROCESS_S)
    rm.expect_exact("Remove? [y/N]")
    rm.sendline("y")
    rm.expect("Removed 1 download")
    rm.expect(pexpect.EOF)
    rm.close()
    assert rm.exitstatus == 0
    assert store.find_model("o/r") is None


def test_a_default_quant_that_does_not_fit_is_confirmed_on_a_terminal(fake, monkeypatch
                                                                       ) -> None:
    import qwencli.cli._common
    from qwencli.hardware.probe import probe
    from qwencli.hardware.whatif import WhatIf, resolve_hardware

    tiny = resolve_hardware(WhatIf(ram_bytes=64 * MiB, cpu_only=True), probe)
    monkeypatch.setattr(qwencli.cli._common, "machine",
                        lambda whatif=None: (tiny, plan_budget(tiny)))
    monkeypatch.setattr(output, "can_ask", lambda: True)
    fake.add_file("hubtest/HubTest-1B-GGUF", "HubTest-1B-Q4_K_M.gguf", payload(1000))
    declined = run("pull", "hubtest-1b", input="n\n")
    assert declined.exit_code == 1
    assert declined.stderr.startswith(
        "warning: no quant of hubtest-1b fits this machine's memory at 8K context; Q4_K_M is "
        "the usual default; pulling it anyway (choose another with --quant)")
    assert "Download HubTest-1B-Q4_K_M.gguf (1000 B) anyway? [y/N]" in declined.stderr
    assert "error: nothing downloaded" in declined.stderr
    assert [r for r in fake.requests if "/resolve/" in r.path] == []
    assert run("pull", "hubtest-1b", "--yes").exit_code == 0


def test_pull_default_makes_it_the_chat_default(fake) -> None:
    from qwencli.config import default_model

    fake.add_file("o/r", "m-Q8_0.gguf", payload(2000))
    assert default_model() is None
    result = run("pull", "o/r:q8_0", "--default")
    assert result.exit_code == 0, result.stderr
    assert default_model() == "o/r:Q8_0"
    assert "`qwen chat` now uses o/r:Q8_0 by default" in result.stderr


def _lines(stream) -> queue.Queue:
    """The lines a process writes, as they come (read by a thread, so waiting never blocks)."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _until_line(lines: queue.Queue, marker: str) -> list[str]:
    seen = []
    while True:
        line = lines.get(timeout=ceilings.PROCESS_S)
        assert line is not None, f"ended before {marker!r}: {seen}"
        seen.append(line)
        if marker in line:
            return seen


def _one_verified_file(data: bytes, *docs: dict) -> None:
    paths = {doc["path"] for doc in docs}
    assert len(paths) == 1 and Path(paths.pop()).read_bytes() == data
    assert all(doc["verified"] for doc in docs)
    blobs = store.repo_dir("o/r") / "blobs"
    assert sorted(p.name for p in blobs.iterdir()) == [sha(data)]  # no partial, no record


def test_two_pulls_started_together_into_a_fresh_cache(fake) -> None:
    data = payload(2 * MiB + 7)
    fake.add_file("o/r", "m-Q4_K_M.gguf", data)
    assert not store.hub_cache().exists()
    first, second = qwen("pull", "o/r", "--json"), qwen("pull", "o/r", "--json")
    outputs = [process.communicate(timeout=ceilings.PROCESS_S) for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    _one_verified_file(data, *(json.loads(out) for out, _err in outputs))


def test_a_second_pull_waits_for_the_first_then_reports_the_file(fake) -> None:
    fake.add_file("o/other", "x-Q4_K_M.gguf", payload(1000))
    assert run("pull", "o/other").exit_code == 0  # the cache exists already
    data = payload(3 * MiB)
    fake.add_file("o/r", "m-Q4_K_M.gguf", data)
    fault = fake.fault("o/r", "m-Q4_K_M.gguf", pause_at=MiB)  # holds the first transfer
    first = qwen("pull", "o/r", "--json")
    assert fault.reached.wait(ceilings.PROCESS_S)
    second = qwen("pull", "o/r", "--json", "--progress")
    said = _until_line(_lines(second.stderr),
                       "is being downloaded by another process; waiting")
    assert said[-1].strip() == ("m-Q4_K_M.gguf is being downloaded by another process; "
                                "waiting for it (Ctrl-C stops waiting)")
    fault.released.set()
    out_first, _ = first.communicate(timeout=ceilings.PROCESS_S)
    out_second = second.stdout.read()
    second.wait(timeout=ceilings.PROCESS_S)
    assert (first.returncode, second.returncode) == (0, 0)
    docs = json.loads(out_first), json.loads(out_second)
    assert docs[1]["bytes_downloaded"] == 0  # the second fetched nothing itself
    _one_verified_file(data, *docs)
    assert len(fake.ranges("m-Q4_K_M.gguf")) == 1


def test_ctrl_c_while_waiting_for_another_pull_exits_130(fake) -> None:
    data = payload(3 * MiB)
    fake.add_file("o/r", "m-Q4_K_M.gguf", data)
    fault = fake.fault("o/r", "m-Q4_K_M.gguf", pause_at=MiB)
    first = qwen("pull", "o/r", "--json")
    assert fault.reached.wait(ceilings.PROCESS_S)
    second = qwen("pull", "o/r", "--progress")
    lines = _lines(second.stderr)
    _until_line(lines, "waiting for it")
    second.send_signal(signal.SIGINT)
    assert second.wait(timeout=ceilings.PROCESS_S) == 130
    fault.released.set()
    first.communicate(timeout=ceilings.PROCESS_S)
    assert first.returncode == 0
    assert Path(store.find_model("o/r")).read_bytes() == data
