"""store: the Hugging Face cache read and changed locally (no network in this file)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from qwencli import store
from qwencli.errors import UsageError

DATA = Path(__file__).parent / "data" / "hub"
COMMIT = "a" * 40
OLD = "b" * 40


@pytest.fixture(autouse=True)
def test_catalog() -> None:
    models = Path(os.environ["QWEN_CONFIG_DIR"]) / "models"
    models.mkdir(parents=True)
    shutil.copy(DATA / "hubtest.toml", models / "hubtest.toml")


def put(repo: str, path: str, data: bytes, commit: str = COMMIT, ref: str | None = "main"
        ) -> Path:
    """A complete file, laid out as huggingface_hub lays it out."""
    blob = hashlib.sha256(data).hexdigest()
    target = store.blob_path(repo, blob)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    link = store.link_snapshot(repo, commit, path, blob)
    if ref:
        store.write_ref(repo, ref, commit)
    return link


def partial(repo: str, path: str, size: int, have: int, *, record: bool = True,
            commit: str = COMMIT, parts: list[dict] | None = None) -> Path:
    """A transfer stopped after `have` of `size` bytes (with our record, or another tool's)."""
    blob = hashlib.sha256(path.encode()).hexdigest()
    target = store.partial_path(repo, blob)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"x" * have)
    if record:
        store.write_sidecar(repo, blob, {"repo": repo, "path": path, "commit": commit,
                                         "size": size, "blob": blob, "sha256": blob,
                                         "set": parts or []})
    return target


def by_name(models: list[store.LocalModel]) -> dict[str, store.LocalModel]:
    return {f"{m.repo}|{m.files[0]}": m for m in models}


def test_cache_location_follows_the_hf_variables(monkeypatch, tmp_path) -> None:
    assert store.hub_cache() == Path(os.environ["HF_HOME"]) / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert store.hub_cache() == tmp_path / "elsewhere"
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert store.hub_cache() == tmp_path / "xdg" / "huggingface" / "hub"


def test_scan_reports_complete_split_and_partial_models() -> None:
    put("o/r", "m-Q4_K_M.gguf", b"GGUF" + b"1" * 96)
    put("o/r", "sub/m-Q8_0-00001-of-00002.gguf", b"GGUF" + b"2" * 196)
    put("o/r", "sub/m-Q8_0-00002-of-00002.gguf", b"3" * 300)
    put("o/r", "mmproj-F16.gguf", b"GGUF")  # a projector is not a model
    put("o/r", "README.md", b"hello")
    put("o/split", "m-Q6_K-00001-of-00003.gguf", b"GGUF" + b"4" * 96)  # parts 2, 3 missing
    partial("o/r", "m-Q5_K_M.gguf", 1000, 250)
    partial("o/other", "", 0, 4096, record=False)
    models = by_name(store.scan())
    assert set(models) == {"o/r|m-Q4_K_M.gguf", "o/r|sub/m-Q8_0-00001-of-00002.gguf",
                           "o/split|m-Q6_K-00001-of-00003.gguf", "o/r|m-Q5_K_M.gguf",
                           "o/other|"}
    single = models["o/r|m-Q4_K_M.gguf"]
    assert (single.complete, single.quant, single.size_bytes, single.percent, single.refs) == \
        (True, "Q4_K_M", 100, 100.0, ("main",))
    split = models["o/r|sub/m-Q8_0-00001-of-00002.gguf"]
    assert (split.complete, split.parts, split.size_bytes, split.quant) == (True, 2, 500, "Q8_0")
    assert split.path == store.snapshot_path("o/r", COMMIT, "sub/m-Q8_0-00001-of-00002.gguf")
    incomplete_set = models["o/split|m-Q6_K-00001-of-00003.gguf"]
    assert (incomplete_set.complete, incomplete_set.parts_complete, incomplete_set.parts,
            incomplete_set.size_bytes) == (False, 1, 3, None)
    ours = models["o/r|m-Q5_K_M.gguf"]
    assert (ours.complete, ours.size_bytes, ours.downloaded_bytes, ours.percent) == \
        (False, 1000, 250, 25.0)
    theirs = models["o/other|"]
    assert (theirs.complete, theirs.other_tool, theirs.downloaded_bytes) == (False, True, 4096)


def test_a_split_set_being_pulled_counts_parts_not_yet_started() -> None:
    parts = [{"path": f"m-Q8_0-0000{i}-of-00003.gguf", "size": 1000} for i in (1, 2, 3)]
    put("o/r", parts[0]["path"], b"GGUF" + b"1" * 996)
    partial("o/r", parts[1]["path"], 1000, 400, parts=parts)
    [m] = store.scan()
    assert (m.complete, m.parts_complete, m.size_bytes, m.downloaded_bytes) == \
        (False, 1, 3000, 1400)
    assert m.percent == pytest.approx(100 * 1400 / 3000)
    assert store.find_model("o/r:Q8_0") is None
    assert store.find_model(str(m.path)) is None  # its first part, by path: still not a model


def test_find_model_never_returns_a_partial() -> None:
    partial("o/r", "m-Q4_K_M.gguf", 1000, 999)
    assert store.find_model("o/r") is None
    assert store.find_model("o/r:Q4_K_M") is None
    assert store.find_model("o/r/m-Q4_K_M.gguf") is None
    link = put("o/r", "m-Q4_K_M.gguf", b"GGUF" + b"z" * 996)
    assert store.find_model("o/r") == link
    assert store.find_model("o/r:q4_k_m") == link
    assert store.find_model("o/r/m-Q4_K_M.gguf") == link
    assert store.find_model("o/r:Q8_0") is None
    assert store.find_model("o/nothing") is None


def test_find_model_for_local_paths_revisions_and_catalog_ids(tmp_path, monkeypatch) -> None:
    local = tmp_path / "x.gguf"
    local.write_bytes(b"GGUF")
    assert store.find_model(str(local)) == local
    assert store.find_model(str(tmp_path / "missing.gguf")) is None
    old = put("hubtest/HubTest-1B-GGUF", "HubTest-1B-Q8_0.gguf", b"GGUF0", commit=OLD, ref=None)
    new = put("mirror/HubTest-1B-GGUF", "HubTest-1B-Q4_K_M.gguf", b"GGUF1")
    assert store.find_model("hubtest-1b:q8_0") == old
    assert store.find_model("hubtest-1b:Q4_K_M") == new
    assert store.find_model("hubtest-1b:Q5_K_M") is None
    assert store.find_model(f"hubtest/HubTest-1B-GGUF/resolve/{OLD[:10]}/HubTest-1B-Q8_0.gguf") \
        == old
    assert store.find_model(f"hubtest/HubTest-1B-GGUF/resolve/{COMMIT}/HubTest-1B-Q8_0.gguf") \
        is None
    with pytest.raises(UsageError, match="nearest: hubtest-1b"):
        store.find_model("hubtest-1c")


@pytest.mark.parametrize(("prefer", "expected"), [(("Q8_0", "Q4_K_M"), "Q8_0"),
                                                  (("Q5_K_M", "Q4_K_M", "Q8_0"), "Q4_K_M"),
                                                  ((), "Q8_0")])
def test_catalog_id_alone_takes_the_first_preferred_download(monkeypatch, prefer,
                                                             expected) -> None:
    import qwencli.hardware.probe

    paths = {q: put("mirror/HubTest-1B-GGUF", f"HubTest-1B-{q}.gguf", q.encode())
             for q in ("Q4_K_M", "Q8_0")}
    # the store never asks the hardware: the caller (the recommender) gives the order
    monkeypatch.setattr(qwencli.hardware.probe, "probe", lambda: pytest.fail("probed"))
    os.utime(paths["Q8_0"], (2e9, 2e9))  # without a preference: the most recent download
    assert store.find_model("hubtest-1b", prefer=prefer) == paths[expected]


def test_remove_deletes_links_blobs_partials_and_keeps_the_cache_consistent() -> None:
    from huggingface_hub import scan_cache_dir

    keep = put("o/r", "m-Q4_K_M.gguf", b"GGUF-keep")
    gone = put("o/r", "m-Q8_0.gguf", b"GGUF-gone")
    shared = put("o/r", "m-Q8_0.gguf", b"GGUF-gone", commit=OLD, ref=None)  # same blob
    half = partial("o/r", "m-Q6_K.gguf", 100, 10)
    targets = store.matching("o/r:Q8_0", include_partial=True)
    assert len(targets) == 1 and set(targets[0].snapshot_files) == {gone, shared}
    result = store.remove(targets + store.matching("o/r:Q6_K", include_partial=True))
    assert result.freed_bytes == len(b"GGUF-gone") + 10
    assert not gone.exists() and not shared.exists() and not half.exists()
    assert not list((store.repo_dir("o/r") / "blobs").glob("*.json"))
    assert keep.read_bytes() == b"GGUF-keep"
    info = scan_cache_dir(store.hub_cache())
    assert info.warnings == []
    assert [len(rev.files) for repo in info.repos for rev in repo.revisions] == [1]
    store.remove(store.matching("o/r", include_partial=True))
    assert not store.repo_dir("o/r").exists()


def test_remove_keeps_a_blob_another_file_still_links() -> None:
    one = put("o/r", "a/m-Q4_K_M.gguf", b"GGUF-same")
    two = put("o/r", "b/m-Q4_K_M.gguf", b"GGUF-same")
    [first] = [m for m in store.scan() if m.files == ("a/m-Q4_K_M.gguf",)]
    store.remove([first])
    assert not one.exists() and two.read_bytes() == b"GGUF-same"


def test_remove_refuses_while_a_download_runs() -> None:
    from filelock import FileLock

    half = partial("o/r", "m-Q4_K_M.gguf", 100, 10)
    lock = store.lock_path("o/r", half.name[: -len(".incomplete")])
    lock.parent.mkdir(parents=True)
    with FileLock(str(lock)), pytest.raises(store.StoreError, match="being downloaded"):
        store.remove(store.matching("o/r", include_partial=True))
    assert half.exists()


def test_sidecar_is_plain_json_next_to_the_partial() -> None:
    half = partial("o/r", "m-Q4_K_M.gguf", 100, 10)
    record = json.loads(half.with_name(half.name.replace(".incomplete", store.SIDECAR_SUFFIX))
                        .read_text())
    assert record["path"] == "m-Q4_K_M.gguf" and record["size"] == 100
