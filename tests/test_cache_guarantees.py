"""What the cache promises, through the command line, on hostile and damaged cache layouts built
with real files and links under the test's HF_HOME:

- `qwen rm` deletes only snapshot entries (a link itself, never its target) and files in the
  repository's own blobs/; it never follows a linked folder out of the cache.
- Foreign links, broken links and truncated files are listed as what they are, never as
  complete, and never handed to `qwen chat` through the cache; `qwen pull` fetches a damaged
  file again (offline it says the copy is damaged).
- One malformed cache file never breaks `qwen list` for the rest.
- A pull that fails before a byte arrives leaves nothing behind; one that got bytes keeps them.
- A repository's file names compare case-insensitively everywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qwencli import hub, store
from qwencli.cli import app
from tests import fake_hub
from tests.gguf_fixtures import write_qwen_gguf
from tests.test_hub import payload, serve

COMMIT = "c" * 40
GOOD = b"GGUF a good stand-in model" + b"g" * 200  # not a valid GGUF: counts as complete


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[fake_hub.FakeHub]:
    yield from serve(tmp_path, monkeypatch)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A user's folder outside the cache, with files that must survive everything."""
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def put(repo: str, path: str, data: bytes, commit: str = COMMIT) -> Path:
    """A complete file laid out as huggingface_hub lays it out; returns the snapshot link."""
    blob = hashlib.sha256(data).hexdigest()
    target = store.blob_path(repo, blob)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    link = store.link_snapshot(repo, commit, path, blob)
    store.write_ref(repo, "main", commit)
    return link


def snapshot(repo: str, commit: str = COMMIT) -> Path:
    folder = store.repo_dir(repo) / "snapshots" / commit
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def line_of(output: str, needle: str) -> str:
    [line] = [x for x in output.splitlines() if needle in x]
    return line


def listed() -> dict[tuple[str, str], dict]:
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    return {(m["repo"], m["files"][0] if m["files"] else ""): m
            for m in json.loads(result.stdout)["models"]}


def assert_good_model_untouched(link: Path) -> None:
    assert link.read_bytes() == GOOD
    assert listed()[("o/good", "g-Q4_K_M.gguf")]["complete"] is True


# --- (1) what `qwen rm` may delete ---------------------------------------------------------


def test_a_snapshot_link_to_a_file_elsewhere_is_foreign_and_rm_removes_only_the_link(
        home: Path) -> None:
    precious = home / "precious.gguf"
    precious.write_bytes(b"GGUF my only copy")
    good = put("o/good", "g-Q4_K_M.gguf", GOOD)
    entry = snapshot("evil/outside-GGUF") / "o-Q4_K_M.gguf"
    entry.symlink_to(precious)

    shown = run("list")
    assert shown.exit_code == 0
    row = line_of(shown.stdout, "evil/outside-GGUF")
    assert f"foreign link (to {precious})" in row and "complete" not in row
    assert str(entry) in row
    assert "`qwen rm MODEL` removes the link (never what it points to)" in shown.stdout
    doc = listed()[("evil/outside-GGUF", "o-Q4_K_M.gguf")]
    assert (doc["complete"], doc["problem"], doc["percent"]) == \
        (False, f"foreign link (to {precious})", None)
    # not a model of this cache: nothing loads it through a reference
    assert store.find_model("evil/outside-GGUF:Q4_K_M") is None
    assert store.find_model(str(entry)) is None
    chat = run("chat", "-m", "evil/outside-GGUF:Q4_K_M", "hi")
    assert chat.exit_code == 1
    assert chat.stderr.splitlines()[0] == "error: evil/outside-GGUF:Q4_K_M is not downloaded"

    removed = run("rm", "evil/outside-GGUF", "--yes")
    assert removed.exit_code == 0, removed.output
    assert removed.stdout.splitlines()[0] == "Removed 1 download(s), 0 B freed"
    assert not os.path.lexists(entry)
    assert precious.read_bytes() == b"GGUF my only copy"
    assert not store.repo_dir("evil/outside-GGUF").exists()  # the empty layout went
    assert_good_model_untouched(good)


def test_a_linked_snapshot_folder_is_never_walked_listed_or_emptied(home: Path) -> None:
    elsewhere = home / "models"
    (elsewhere / "empty-folder").mkdir(parents=True)
    (elsewhere / "sub").mkdir()
    (elsewhere / "d-Q4_K_M.gguf").write_bytes(b"GGUF mine")
    (elsewhere / "sub" / "e-Q8_0.gguf").write_bytes(b"GGUF mine too")
    good = put("o/good", "g-Q4_K_M.gguf", GOOD)
    commit_link = store.repo_dir("evil/dir-GGUF") / "snapshots" / COMMIT
    commit_link.parent.mkdir(parents=True)
    commit_link.symlink_to(elsewhere, target_is_directory=True)

    models = listed()
    assert [k for k in models if k[0] == "evil/dir-GGUF"] == [("evil/dir-GGUF", "")]
    doc = models[("evil/dir-GGUF", "")]
    assert (doc["complete"], doc["path"], doc["problem"]) == \
        (False, str(commit_link), f"foreign link (a folder, to {elsewhere})")
    # a path into it names no model of the cache
    inside = commit_link / "d-Q4_K_M.gguf"
    assert store.find_model(str(inside)) is None
    nothing = run("rm", str(inside), "--yes")
    assert nothing.exit_code == 1
    assert nothing.stderr.startswith(f"error: nothing to remove: {inside} is not in the cache")

    removed = run("rm", "evil/dir-GGUF", "--yes")
    assert removed.exit_code == 0, removed.output
    assert removed.stdout.splitlines()[0] == "Removed 1 download(s), 0 B freed"
    assert not os.path.lexists(commit_link)
    assert (elsewhere / "d-Q4_K_M.gguf").read_bytes() == b"GGUF mine"
    assert (elsewhere / "sub" / "e-Q8_0.gguf").read_bytes() == b"GGUF mine too"
    assert (elsewhere / "empty-folder").is_dir()  # not even an empty folder is removed there
    assert_good_model_untouched(good)


def test_tidying_never_follows_linked_refs_locks_or_a_linked_repository_folder(
        home: Path) -> None:
    other = "d" * 40
    refs_home, locks_home, repo_home = home / "refs", home / "locks", home / "repo"
    refs_home.mkdir()
    (refs_home / "main").write_text(other)  # names a commit the cache does not hold
    (refs_home / "notes.txt").write_text("mine")
    locks_home.mkdir()
    (locks_home / "x.lock").write_text("mine")
    good = put("o/good", "g-Q4_K_M.gguf", GOOD)
    put("o/r", "m-Q4_K_M.gguf", b"GGUF to be removed")
    folder = store.repo_dir("o/r")
    (folder / "refs" / "main").unlink()
    (folder / "refs").rmdir()
    (folder / "refs").symlink_to(refs_home, target_is_directory=True)
    (store.hub_cache() / ".locks").mkdir(exist_ok=True)
    (store.hub_cache() / ".locks" / folder.name).symlink_to(locks_home,
                                                            target_is_directory=True)
    # a whole repository folder that is a link to a layout elsewhere
    (repo_home / "snapshots" / COMMIT).mkdir(parents=True)
    (repo_home / "snapshots" / COMMIT / "r-Q4_K_M.gguf").write_bytes(b"GGUF mine as well")
    linked_repo = store.hub_cache() / "models--evil--repo-GGUF"
    linked_repo.symlink_to(repo_home, target_is_directory=True)

    removed = run("rm", "o/r", "--yes")
    assert removed.exit_code == 0, removed.output
    assert removed.stdout.splitlines()[0] == "Removed 1 download(s), 18 B freed"
    assert (refs_home / "main").read_text() == other
    assert (refs_home / "notes.txt").read_text() == "mine"
    assert (locks_home / "x.lock").read_text() == "mine"

    doc = listed()[("evil/repo-GGUF", "")]
    assert doc["complete"] is False
    assert doc["problem"] == f"foreign link (the repository's folder, to {repo_home})"
    refused = run("rm", "evil/repo-GGUF", "--yes")
    assert refused.exit_code == 1
    assert refused.stderr.splitlines()[0] == (
        f"error: refusing to delete {linked_repo} (a link to {repo_home}): qwen deletes only "
        "snapshot entries and files in blobs/ of evil/repo-GGUF, never through a link")
    assert "Traceback" not in refused.output
    assert (repo_home / "snapshots" / COMMIT / "r-Q4_K_M.gguf").read_bytes() == \
        b"GGUF mine as well"
    assert_good_model_untouched(good)


def test_the_one_deletion_rule(home: Path) -> None:
    outside = home / "precious.gguf"
    outside.write_bytes(b"mine")
    link = put("o/r", "m-Q4_K_M.gguf", GOOD)
    folder = store.repo_dir("o/r")
    blob = folder / "blobs" / hashlib.sha256(GOOD).hexdigest()
    foreign = link.with_name("f-Q4_K_M.gguf")
    foreign.symlink_to(outside)
    linked_dir = folder / "snapshots" / ("e" * 40)
    linked_dir.symlink_to(home, target_is_directory=True)
    (folder / "blobs" / "sub").mkdir()
    (folder / "blobs" / "sub" / "x").write_bytes(b"x")
    blob_link = folder / "blobs" / "l"
    blob_link.symlink_to(outside)
    put("o/other", "m-Q4_K_M.gguf", GOOD)
    cases = {
        link: "entry", foreign: "entry", linked_dir: "entry", blob: "blob",
        folder / "refs" / "main": "ref",
        outside: None, linked_dir / "precious.gguf": None,  # through a linked folder
        folder / "blobs" / "sub": None, folder / "blobs" / "sub" / "x": None,
        blob_link: None, link.parent: None, folder: None,
        folder / "snapshots" / COMMIT / ".." / ".." / ".." / "models--o--r" / "refs" / "main":
            "ref",
        folder / "blobs" / ".." / ".." / ".." / "home" / "precious.gguf": None,
        store.repo_dir("o/other") / "blobs" / blob.name: None,  # another repo's, not this one's
    }
    for path, kind in cases.items():
        assert store.deletable(path, folder) == kind, path
    with pytest.raises(store.StoreError, match="refusing to delete"):
        store.delete(linked_dir / "precious.gguf", folder)
    assert outside.read_bytes() == b"mine"


# --- (10) file names compare case-insensitively --------------------------------------------


def test_a_file_named_in_another_case_is_the_same_file_everywhere(fake) -> None:
    data = payload(4000)
    fake.add_file("acme/tiny-GGUF", "tiny-Q4_K_M.gguf", data)
    ref = "acme/tiny-GGUF/TINY-Q4_K_M.GGUF"
    pulled = run("pull", ref)
    assert pulled.exit_code == 0, pulled.output
    assert pulled.stdout.splitlines()[-1] == f"  next: qwen chat -m {ref}"
    path = store.snapshot_path("acme/tiny-GGUF", fake_hub.COMMIT, "tiny-Q4_K_M.gguf")
    assert store.find_model(ref) == path
    # `qwen chat -m` finds it (then fails on the stand-in's header: the path proves it was found)
    chat = run("chat", "-m", ref, "hi")
    assert chat.exit_code == 1
    assert chat.stderr.startswith(f"error: {path}: unsupported GGUF version")
    assert "not downloaded" not in chat.output
    again = run("pull", ref)
    assert again.stdout.splitlines()[0] == "Already downloaded: acme/tiny-GGUF Q4_K_M"
    removed = run("rm", ref, "--yes")
    assert removed.exit_code == 0, removed.output
    assert removed.stdout.splitlines()[0] == "Removed 1 download(s), 3.9 KiB freed"
    assert not os.path.lexists(path)


# --- (11) damaged, broken and malformed entries ----------------------------------------------


@pytest.mark.parametrize("copy", [False, True], ids=["linked-blob", "copy-in-snapshot"])
def test_a_truncated_file_is_damaged_and_pull_fetches_it_again(fake, tmp_path, monkeypatch,
                                                               copy) -> None:
    source = write_qwen_gguf(tmp_path / "src.gguf")
    whole = source.read_bytes()
    fake.add_file("acme/real-GGUF", "real-Q4_K_M.gguf", source)
    good = put("o/good", "g-Q4_K_M.gguf", GOOD)
    assert run("pull", "acme/real-GGUF").exit_code == 0
    path = store.snapshot_path("acme/real-GGUF", fake_hub.COMMIT, "real-Q4_K_M.gguf")
    blob = store.blob_path("acme/real-GGUF", hashlib.sha256(whole).hexdigest())
    if copy:  # where symlinks fail, the snapshot holds the file itself
        path.unlink()
        os.replace(blob, path)
    (path if copy else blob).write_bytes(whole[: len(whole) // 2])  # the disk lost the rest

    shown = run("list")
    row = line_of(shown.stdout, "acme/real-GGUF")
    assert "damaged (truncated)" in row and "complete" not in row
    assert "damaged downloads are fetched again by `qwen pull MODEL`" in shown.stdout
    doc = listed()[("acme/real-GGUF", "real-Q4_K_M.gguf")]
    assert (doc["complete"], doc["problem"]) == (False, "damaged (truncated)")
    assert store.find_model("acme/real-GGUF") is None
    assert store.find_model(str(path)) is None
    assert store.find_download("acme/real-GGUF:Q4_K_M") is None

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = run("pull", "acme/real-GGUF")
    assert offline.exit_code == 1
    assert offline.stderr.splitlines()[0] == (
        "error: cannot pull acme/real-GGUF: HF_HUB_OFFLINE is set; the copy in the cache is "
        f"damaged (truncated) ({path})")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    again = run("pull", "acme/real-GGUF")
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[0] == "Downloaded acme/real-GGUF Q4_K_M"
    assert path.read_bytes() == whole
    assert listed()[("acme/real-GGUF", "real-Q4_K_M.gguf")]["complete"] is True
    assert_good_model_untouched(good)


def test_a_file_not_of_the_size_our_pull_recorded_is_damaged() -> None:
    put("o/r", "m-Q4_K_M.gguf", GOOD)  # a stand-in: its header says nothing
    blob = hashlib.sha256(GOOD).hexdigest()
    store.write_sidecar("o/r", blob, {"repo": "o/r", "path": "m-Q4_K_M.gguf", "commit": COMMIT,
                                      "size": len(GOOD) + 1000, "blob": blob, "set": []})
    doc = listed()[("o/r", "m-Q4_K_M.gguf")]
    assert (doc["complete"], doc["problem"]) == (False, "damaged (not the size the Hub lists)")
    assert store.find_model("o/r") is None


def test_a_dangling_snapshot_link_is_listed_as_broken_and_removed_by_rm() -> None:
    good = put("o/good", "g-Q4_K_M.gguf", GOOD)
    entry = snapshot("acme/gone-GGUF") / "g-Q4_K_M.gguf"
    entry.symlink_to(f"../../blobs/{'f' * 64}")

    shown = run("list")
    assert shown.exit_code == 0
    row = line_of(shown.stdout, "acme/gone-GGUF")
    assert "broken link (its blob is missing)" in row and str(entry) in row
    doc = listed()[("acme/gone-GGUF", "g-Q4_K_M.gguf")]
    assert (doc["complete"], doc["path"]) == (False, str(entry))
    assert store.find_model("acme/gone-GGUF") is None

    removed = run("rm", "acme/gone-GGUF", "--yes")
    assert removed.exit_code == 0, removed.output
    assert removed.stdout.splitlines()[0] == "Removed 1 download(s), 0 B freed"
    assert not os.path.lexists(entry)
    assert not store.repo_dir("acme/gone-GGUF").exists()
    assert_good_model_untouched(good)


def _record(size: object = 100, **fields: object) -> dict:
    return {"repo": "o/bad", "path": "b-Q4_K_M.gguf", "commit": COMMIT, "size": size, **fields}


@pytest.mark.parametrize("bad", [
    pytest.param({"ref": b"\xff\xfe\x00 not utf-8"}, id="ref-invalid-utf8"),
    pytest.param({"ref": b"main is somewhere\n"}, id="ref-junk"),
    pytest.param({"ref": b"0" * 100_000}, id="ref-huge"),
    pytest.param({"ref": "fifo"}, id="ref-not-a-file"),
    pytest.param({"record": _record("big")}, id="size-string"),
    pytest.param({"record": _record(None)}, id="size-null"),
    pytest.param({"record": _record(-5)}, id="size-negative"),
    pytest.param({"record": _record(1 << 62)}, id="size-huge"),
    pytest.param({"record": _record(True)}, id="size-bool"),
    pytest.param({"record": _record(1.5)}, id="size-float"),
    pytest.param({"record": _record(path="../../../etc/x-Q4_K_M.gguf")}, id="path-escapes"),
    pytest.param({"record": _record(path=["b-Q4_K_M.gguf"])}, id="path-list"),
    pytest.param({"record": _record(commit="../../x")}, id="commit-path"),
    pytest.param({"record": _record(set=[{"path": "b-Q4_K_M.gguf", "size": "x"}, 7]),
                  "trusted": True}, id="set-junk"),  # only the junk siblings are dropped
    pytest.param({"record": [1, 2, 3]}, id="not-a-dict"),
    pytest.param({"raw": b'{"repo": "o/bad", "size": '}, id="invalid-json"),
    pytest.param({"raw": b'{"path": "\xff"}'}, id="record-invalid-utf8"),
    pytest.param({"raw": b"[" * 100_000}, id="record-deeply-nested"),
    pytest.param({"raw": b" " * (2 << 20)}, id="record-huge"),
    pytest.param({"raw": "dir"}, id="record-is-a-folder"),
])
def test_one_malformed_cache_file_never_breaks_the_listing(bad: dict) -> None:
    good = put("o/good", "g-Q4_K_M.gguf", GOOD)
    folder = store.repo_dir("o/bad")
    blob = "b" * 64
    blobs = folder / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{blob}.incomplete").write_bytes(b"x" * 10)
    sidecar = blobs / f"{blob}{store.SIDECAR_SUFFIX}"
    if "ref" in bad:
        (folder / "refs").mkdir()
        if bad["ref"] == "fifo":
            os.mkfifo(folder / "refs" / "main")
        else:
            (folder / "refs" / "main").write_bytes(bad["ref"])
        sidecar.write_text(json.dumps(_record(blob=blob)))
    elif "record" in bad:
        record = bad["record"]
        sidecar.write_text(json.dumps({**record, "blob": blob} if isinstance(record, dict)
                                      else record))
    elif bad["raw"] == "dir":
        sidecar.mkdir()
    else:
        sidecar.write_bytes(bad["raw"])

    shown = run("list")
    assert shown.exit_code == 0, shown.output
    assert "complete" in line_of(shown.stdout, "o/good")
    models = listed()
    bad_rows = [m for (repo, _), m in models.items() if repo == "o/bad"]
    assert len(bad_rows) == 1 and bad_rows[0]["complete"] is False
    if "ref" in bad or bad.get("trusted"):  # the record is fine: the partial keeps its name
        assert (bad_rows[0]["files"], bad_rows[0]["percent"], bad_rows[0]["refs"]) == \
            (["b-Q4_K_M.gguf"], 10.0, [])  # and a malformed ref is ignored
    else:  # the record is not trusted: the partial is listed without a name or a percent
        assert (bad_rows[0]["files"], bad_rows[0]["percent"], bad_rows[0]["downloaded_bytes"]) \
            == ([], None, 10)
    assert_good_model_untouched(good)


# --- (11) a pull that fails before its first byte leaves nothing -------------------------------


SET = ("s-Q4_K_M-00001-of-00002.gguf", "s-Q4_K_M-00002-of-00002.gguf")


def _refuse_files(monkeypatch: pytest.MonkeyPatch, repo: str, status: int, code: str) -> None:
    """The Hub lists the repository, but answers `status` for its files (as it does for a
    gated repository: the listing is public, the files are not)."""
    real = fake_hub._Handler._resolve

    def resolve(self, name: str, rel: str) -> None:
        if name == repo:
            self._error(status, code, f"Access to model {repo} is restricted.")
            return
        real(self, name, rel)

    monkeypatch.setattr(fake_hub._Handler, "_resolve", resolve)


@pytest.mark.parametrize(("how", "message"), [
    ("gated-401", "error: acme/gated-GGUF is gated: accept its licence on the Hub"),
    ("refused-403", "error: "),
    ("missing-404", "error: acme/gated-GGUF: "),
    ("cut-at-byte-0", "error: transfer of s-Q4_K_M-00001-of-00002.gguf failed"),
])
def test_a_pull_that_fails_before_a_byte_leaves_no_partial_and_no_record(
        fake, monkeypatch, how, message) -> None:
    monkeypatch.setattr(hub.time, "sleep", lambda s: None)
    for i, name in enumerate(SET):
        fake.add_file("acme/gated-GGUF", name, payload(3000, i))
    if how == "gated-401":
        _refuse_files(monkeypatch, "acme/gated-GGUF", 401, "GatedRepo")
    elif how == "refused-403":
        _refuse_files(monkeypatch, "acme/gated-GGUF", 403, "")
    elif how == "missing-404":
        _refuse_files(monkeypatch, "acme/gated-GGUF", 404, "EntryNotFound")
    else:
        fake.fault("acme/gated-GGUF", SET[0], cut_at=0, times=0)
    good = put("o/good", "g-Q4_K_M.gguf", GOOD)

    result = run("pull", "acme/gated-GGUF")
    assert result.exit_code == 1
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.output
    blobs = store.repo_dir("acme/gated-GGUF") / "blobs"
    assert sorted(p.name for p in blobs.iterdir()) == []
    assert [key for key in listed() if key[0] == "acme/gated-GGUF"] == []
    assert_good_model_untouched(good)


def test_a_pull_that_got_bytes_before_failing_keeps_them_to_resume(fake, monkeypatch) -> None:
    monkeypatch.setattr(hub.time, "sleep", lambda s: None)
    data = payload(3000)
    fake.add_file("acme/cut-GGUF", "c-Q4_K_M.gguf", data)
    fake.fault("acme/cut-GGUF", "c-Q4_K_M.gguf", cut_at=1000, times=0)  # never past byte 1000
    failed = run("pull", "acme/cut-GGUF")
    assert failed.exit_code == 1
    assert failed.stderr.startswith("error: transfer of c-Q4_K_M.gguf failed")
    blob = hashlib.sha256(data).hexdigest()
    assert store.partial_path("acme/cut-GGUF", blob).read_bytes() == data[:1000]
    doc = listed()[("acme/cut-GGUF", "c-Q4_K_M.gguf")]
    assert (doc["complete"], doc["downloaded_bytes"], doc["size_bytes"]) == (False, 1000, 3000)
    fake.faults.clear()
    resumed = run("pull", "acme/cut-GGUF")
    assert resumed.exit_code == 0, resumed.output
    assert fake.ranges("c-Q4_K_M.gguf")[-1] == "bytes=1000-"
    assert store.find_model("acme/cut-GGUF").read_bytes() == data


def test_pull_never_writes_through_a_linked_folder_or_a_linked_partial(fake, home) -> None:
    mine = home / "mine.bin"
    mine.write_bytes(b"my bytes")
    data = payload(3000)
    fake.add_file("acme/t-GGUF", "t-Q4_K_M.gguf", data)
    blob = hashlib.sha256(data).hexdigest()
    partial = store.partial_path("acme/t-GGUF", blob)
    partial.parent.mkdir(parents=True)
    partial.symlink_to(mine)
    result = run("pull", "acme/t-GGUF")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        f"error: {partial} is a link, not a partial download: refusing to write through it")
    assert mine.read_bytes() == b"my bytes"
    assert not store.sidecar_path("acme/t-GGUF", blob).exists()  # no record of a 0% partial
    partial.unlink()

    (home / "t-Q4_K_M.gguf").write_bytes(b"my file of that name")
    snapshots = store.repo_dir("acme/t-GGUF") / "snapshots"
    snapshots.mkdir()
    (snapshots / fake_hub.COMMIT).symlink_to(home, target_is_directory=True)
    result = run("pull", "acme/t-GGUF")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        f"error: {snapshots / fake_hub.COMMIT} is a link to {home}, outside the cache: "
        "refusing to write through it")
    assert (home / "t-Q4_K_M.gguf").read_bytes() == b"my file of that name"
