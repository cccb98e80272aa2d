"""hub: resolution through the Hub's listing and the resumable, verified transfer.

Everything runs against tests/fake_hub.py on 127.0.0.1 through the real huggingface_hub client
(listing, errors) and real HTTP (the transfer), with faults injected into the bodies.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwencli import hub, store
from qwencli.errors import QwenError, UsageError
from tests import ceilings, fake_hub
from tests.gguf_fixtures import write_qwen_gguf

DATA = Path(__file__).parent / "data" / "hub"
MiB = 1 << 20


def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[fake_hub.FakeHub]:
    """A local Hub, with HF_ENDPOINT pointing at it and the test catalog installed."""
    served, server = fake_hub.start(tmp_path / "remote")
    monkeypatch.setenv("HF_ENDPOINT", served.url)
    models = Path(os.environ["QWEN_CONFIG_DIR"]) / "models"
    models.mkdir(parents=True)
    shutil.copy(DATA / "hubtest.toml", models / "hubtest.toml")
    yield served
    served.release_all()
    server.shutdown()
    server.server_close()
    served.check()  # no paused transfer went on without the test


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[fake_hub.FakeHub]:
    yield from serve(tmp_path, monkeypatch)


def payload(size: int, seed: int = 1) -> bytes:
    """Deterministic bytes starting like a GGUF file."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    body = (block * (size // len(block) + 1))[: size - 4]
    return b"GGUF" + body


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_gets(fake: fake_hub.FakeHub) -> list[fake_hub.Request]:
    return [r for r in fake.requests if r.method == "GET" and "/resolve/" in r.path]


# --- resolution ------------------------------------------------------------------------------


def test_hub_reference_defaults_to_q4_k_m_and_matches_case_insensitively(fake) -> None:
    fake.add_file("o/r", "m-q4_k_m.gguf", payload(1000))
    fake.add_file("o/r", "m-Q8_0.gguf", payload(2000))
    fake.add_file("o/r", "m-UD-Q4_K_M.gguf", payload(1500))
    plan = hub.resolve_pull("o/r")
    assert [f.path for f in plan.files] == ["m-q4_k_m.gguf"]
    assert plan.quant == "Q4_K_M"
    assert plan.files[0].size == 1000 and plan.files[0].sha256 == sha(payload(1000))
    assert plan.commit == fake_hub.COMMIT and plan.revision == "main"
    assert [f.path for f in hub.resolve_pull("o/r:q8_0").files] == ["m-Q8_0.gguf"]
    assert [f.path for f in hub.resolve_pull("o/r", quant="ud-q4_k_m").files] == \
        ["m-UD-Q4_K_M.gguf"]


def test_a_named_part_of_a_split_set_resolves_to_the_whole_set(fake) -> None:
    for i in (1, 2, 3):
        fake.add_file("o/r", f"Q8_0/m-Q8_0-0000{i}-of-00003.gguf", payload(100 * i, i))
    plan = hub.resolve_pull("o/r/Q8_0/m-Q8_0-00002-of-00003.gguf")
    assert [f.path for f in plan.files] == [f"Q8_0/m-Q8_0-0000{i}-of-00003.gguf"
                                            for i in (1, 2, 3)]
    assert plan.size_bytes == 600 and plan.quant == "Q8_0"
    assert plan.path.name == "m-Q8_0-00001-of-00003.gguf"


def test_a_split_set_with_a_missing_part_is_refused(fake) -> None:
    fake.add_file("o/r", "m-Q8_0-00001-of-00002.gguf", payload(100))
    with pytest.raises(hub.HubNotFoundError, match=r"lacks m-Q8_0-00002-of-00002\.gguf"):
        hub.resolve_pull("o/r:Q8_0")


def test_missing_quant_file_and_repo_name_the_nearest(fake) -> None:
    fake.add_file("o/Qwen3-8B-GGUF", "Qwen3-8B-Q4_K_M.gguf", payload(100))
    fake.add_file("o/Qwen3-8B-GGUF", "Qwen3-8B-Q8_0.gguf", payload(100))
    with pytest.raises(hub.HubNotFoundError) as quant:
        hub.resolve_pull("o/Qwen3-8B-GGUF:Q5_K_M")
    assert quant.value.message == "o/Qwen3-8B-GGUF has no Q5_K_M file; it has Q4_K_M, Q8_0"
    with pytest.raises(hub.HubNotFoundError) as file:
        hub.resolve_pull("o/Qwen3-8B-GGUF/Qwen3-8B-Q4_K.gguf")
    assert file.value.message.endswith("nearest: Qwen3-8B-Q4_K_M.gguf, Qwen3-8B-Q8_0.gguf")
    with pytest.raises(hub.HubNotFoundError) as repo:
        hub.resolve_pull("o/Qwen3-8B-GUFF:Q4_K_M")
    assert "repository o/Qwen3-8B-GUFF not found" in repo.value.message
    assert "nearest: o/Qwen3-8B-GGUF" in repo.value.message  # from the Hub's search
    with pytest.raises(hub.HubNotFoundError) as catalog_near:
        hub.resolve_pull("hubtest/HubTest-1B-GUFF")
    assert "nearest: hubtest/HubTest-1B-GGUF" in catalog_near.value.message  # from the catalog


def test_gated_repo_without_and_with_a_token(fake, monkeypatch) -> None:
    fake.add_file("o/gated", "m-Q4_K_M.gguf", payload(4096))
    fake.gated["o/gated"] = "hf_right"
    with pytest.raises(hub.HubAuthError) as no_token:
        hub.pull_model("o/gated")
    assert no_token.value.message.startswith("o/gated is gated")
    assert "HF_TOKEN" in no_token.value.hint and "hf auth login" in no_token.value.hint
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(hub.HubAuthError, match="your token has no access"):
        hub.pull_model("o/gated")
    monkeypatch.setenv("HF_TOKEN", "hf_right")
    result = hub.pull_model("o/gated")
    assert result.path.read_bytes() == payload(4096)


def test_catalog_reference_checks_names_against_the_listing(fake) -> None:
    fake.add_file("hubtest/HubTest-1B-GGUF", "HubTest-1B-Q4_K_M.gguf", payload(3000))
    plan = hub.resolve_pull("hubtest-1b:q4_k_m")
    assert (plan.repo, plan.files[0].path, plan.model_id) == \
        ("hubtest/HubTest-1B-GGUF", "HubTest-1B-Q4_K_M.gguf", "hubtest-1b")
    assert plan.files[0].size == 3000  # the listing's size, not the catalog's estimate
    assert plan.warnings == ()


def test_catalog_name_mismatch_takes_the_listed_file_with_a_warning(fake) -> None:
    fake.add_file("hubtest/HubTest-1B-GGUF", "hubtest-1b.q8_0.gguf", payload(3000))
    plan = hub.resolve_pull("hubtest-1b", quant="Q8_0")
    assert plan.files[0].path == "hubtest-1b.q8_0.gguf"
    assert plan.warnings == ("the catalog names HubTest-1B-Q8_0.gguf, hubtest/HubTest-1B-GGUF "
                             "has hubtest-1b.q8_0.gguf: taking that",)


def test_catalog_falls_back_to_the_next_source(fake) -> None:
    fake.add_file("hubtest/HubTest-1B-GGUF", "HubTest-1B-Q4_K_M.gguf", payload(3000))
    for i in (1, 2):
        fake.add_file("mirror/HubTest-1B-GGUF", f"HubTest-1B-Q8_0-0000{i}-of-00002.gguf",
                      payload(500, i))
    plan = hub.resolve_pull("hubtest-1b:Q8_0")
    assert plan.repo == "mirror/HubTest-1B-GGUF"
    assert [f.path for f in plan.files] == ["HubTest-1B-Q8_0-00001-of-00002.gguf",
                                            "HubTest-1B-Q8_0-00002-of-00002.gguf"]
    assert plan.warnings == ("hubtest/HubTest-1B-GGUF has no HubTest-1B-Q8_0.gguf (nearest: "
                             "HubTest-1B-Q4_K_M.gguf); using mirror/HubTest-1B-GGUF",)
    with pytest.raises(hub.HubNotFoundError) as neither:
        hub.resolve_pull("hubtest-1b:Q5_K_M")  # only the mirror lists it, and lacks it
    assert neither.value.message.startswith("mirror/HubTest-1B-GGUF has no "
                                            "HubTest-1B-Q5_K_M.gguf")


def test_unknown_catalog_model_is_a_usage_error_with_nearest(fake) -> None:
    with pytest.raises(UsageError, match="nearest: hubtest-1b"):
        hub.resolve_pull("hubtest-1c")


def test_the_hub_never_chooses_a_catalog_models_quant(fake) -> None:
    # "which quant here" is the recommender's (recommend.default_quant); hub takes it
    fake.add_file("hubtest/HubTest-1B-GGUF", "HubTest-1B-Q4_K_M.gguf", payload(3000))
    with pytest.raises(ValueError, match="needs a quant"):
        hub.resolve_pull("hubtest-1b")
    assert hub.resolve_pull("hubtest-1b", quant="Q4_K_M").quant == "Q4_K_M"


def test_quant_option_and_reference_must_agree(fake) -> None:
    with pytest.raises(UsageError, match="says Q8_0 but --quant says Q4_K_M"):
        hub.resolve_pull("hubtest-1b:q8_0", quant="q4_k_m")
    with pytest.raises(UsageError, match="is a local file"):
        hub.resolve_pull("./model.gguf")


# --- the transfer ----------------------------------------------------------------------------


def test_pull_one_real_gguf_into_the_hf_cache_layout(fake, tmp_path) -> None:
    from huggingface_hub import hf_hub_download, scan_cache_dir

    from qwencli import gguf_info

    source = write_qwen_gguf(tmp_path / "src.gguf")
    fake.add_file("o/r", "Tiny-Q4_K_M.gguf", source)
    result = hub.pull_model("o/r")
    digest = sha(source.read_bytes())
    repo_dir = store.hub_cache() / "models--o--r"
    assert result.path == repo_dir / "snapshots" / fake_hub.COMMIT / "Tiny-Q4_K_M.gguf"
    assert os.readlink(result.path) == f"../../blobs/{digest}"
    assert (repo_dir / "refs" / "main").read_text() == fake_hub.COMMIT
    assert not list((repo_dir / "blobs").glob("*.incomplete"))
    assert not list((repo_dir / "blobs").glob("*.json"))
    assert (result.bytes_downloaded, result.resumed, result.already_present, result.verified) \
        == (source.stat().st_size, False, False, True)
    assert gguf_info.read_header(result.path).architecture == "qwen3"
    # the real huggingface_hub client sees the file as cached, and the cache as consistent
    assert Path(hf_hub_download("o/r", "Tiny-Q4_K_M.gguf", local_files_only=True,
                                cache_dir=store.hub_cache())) == result.path
    info = scan_cache_dir(store.hub_cache())
    assert info.warnings == [] and [r.repo_id for r in info.repos] == ["o/r"]
    # a second pull transfers nothing
    gets = len(file_gets(fake))
    again = hub.pull_model("o/r:q4_k_m")
    assert again.already_present and again.bytes_downloaded == 0 and again.path == result.path
    assert len(file_gets(fake)) == gets


def test_pull_a_split_set_as_one(fake, tmp_path) -> None:
    from qwencli import gguf_info
    from tests.gguf_fixtures import TensorSpec, write_split_header_only_gguf

    tensors = [TensorSpec(f"blk.{i}.ffn_up.weight", (256, 1024), "F32") for i in range(3)]
    parts = write_split_header_only_gguf(tmp_path / "m-Q8_0.gguf", tensors, 3)
    for part in parts:
        fake.add_file("o/r", f"Q8_0/{part.name}", part)
    result = hub.pull_model("o/r:Q8_0")
    assert [p.name for p in result.files] == [p.name for p in parts]
    assert result.path.name == "m-Q8_0-00001-of-00003.gguf"
    assert result.bytes_downloaded == sum(p.stat().st_size for p in parts)
    for local, part in zip(result.files, parts, strict=True):
        assert local.read_bytes() == part.read_bytes()
    model = gguf_info.read_model(result.path)
    assert len(model.tensors) == 3  # the set reads as one model
    assert store.find_model("o/r:Q8_0") == result.path


def test_hf_download_is_seen_by_qwen(fake) -> None:
    from huggingface_hub import hf_hub_download

    data = payload(5000)
    fake.add_file("o/r", "m-Q4_K_M.gguf", data)
    path = Path(hf_hub_download("o/r", "m-Q4_K_M.gguf", cache_dir=store.hub_cache(),
                                endpoint=fake.url))
    assert store.find_model("o/r") == path
    gets = len(file_gets(fake))
    result = hub.pull_model("o/r")
    assert result.already_present and result.path == path
    assert len(file_gets(fake)) == gets


def test_a_cut_connection_resumes_with_range_in_the_same_call(fake, monkeypatch) -> None:
    monkeypatch.setattr(hub.time, "sleep", lambda s: None)
    data = payload(3 * MiB + 123)
    fake.add_file("o/r", "m-Q4_K_M.gguf", data)
    fake.fault("o/r", "m-Q4_K_M.gguf", cut_at=MiB + 7)
    result = hub.pull_model("o/r")
    assert result.path.read_bytes() == data
    assert fake.ranges("m-Q4_K_M.gguf") == [None, f"bytes={MiB + 7}-"]
    assert [r.bytes_sent for r in file_gets(fake)] == [MiB + 7, len(data) - MiB - 7]
    assert result.bytes_downloaded == len(data) and not result.resumed


def test_a_partial_from_an_earlier_run_is_resumed(fake) -> None:
    data = payload(2 * MiB)
    fake.add_file("o/r", "m-Q4_K_M.gguf", data)
    partial = store.partial_path("o/r", sha(data))
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data[:777_777])
    result = hub.pull_model("o/r")
    assert fake.ranges("m-Q4_K_M.gguf") == ["bytes=777777-"]
    assert (result.resumed, result.bytes_downloaded) == (True, len(data) - 777_777)
    assert result.path.read_bytes() == data


def test_a_server_that_ignores_range_restarts_cleanly(fake) -> None:
    data = payload(MiB)
    fake.add_file("o/r", "m-Q4_K_M.gguf", data)
    fake.ignore_range = True
    partial = store.partial_path("o/r", sha(data))
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data[:1000])
    result = hub.pull_model("o/r")
    assert result.path.read_bytes() == data and result.verified


def test_checksum_mismatch_removes_the_file(fake) -> None:
    data = payload(MiB)
    fake.add_file("o/r", "m-Q4_K_M.gguf", data)
    fake.fault("o/r", "m-Q4_K_M.gguf", corrupt_at=4242)
    with pytest.raises(hub.ChecksumError) as exc:
        hub.pull_model("o/r")
    assert exc.value.message.startswith("m-Q4_K_M.gguf: sha256 mismatch")
    assert exc.value.message.endswith("the file was removed")
    blobs = store.repo_dir("o/r") / "blobs"
    assert sorted(p.name for p in blobs.iterdir()) == []
    assert not (store.repo_dir("o/r") / "snapshots").exists()
    assert store.find_model("o/r") is None
    assert hub.pull_model("o/r").path.read_bytes() == data  # then it works


def test_disk_full_is_refused_before_writing_a_byte(fake, monkeypatch) -> None:
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(10 * MiB))
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda p: usage._replace(free=100 * MiB))  # < 10 MiB + 512 MiB margin
    with pytest.raises(hub.DiskSpaceError) as exc:
        hub.pull_model("o/r")
    assert exc.value.message.startswith("not enough disk space for m-Q4_K_M.gguf: 10.0 MiB to "
                                        "download + 512.0 MiB margin, 100.0 MiB free on ")
    assert "HF_HUB_CACHE" in exc.value.hint
    assert file_gets(fake) == []
    assert not store.repo_dir("o/r").exists()


def test_offline_with_and_without_the_file(fake, monkeypatch) -> None:
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(4000))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.HubError) as missing:
        hub.pull_model("o/r")
    assert missing.value.message.startswith("cannot pull o/r: HF_HUB_OFFLINE is set; it is not "
                                            "in the cache")
    assert fake.requests == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    pulled = hub.pull_model("o/r")
    count = len(fake.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = hub.pull_model("o/r:q4_k_m")
    assert result.already_present and result.path == pulled.path
    assert result.remote[0].sha256 == sha(payload(4000))
    assert len(fake.requests) == count  # not one request


def test_unreachable_hub_falls_back_to_the_cache(fake, monkeypatch) -> None:
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(4000))
    pulled = hub.pull_model("o/r")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nobody listens there
    monkeypatch.setenv("HF_ENDPOINT", dead)
    result = hub.pull_model("o/r")
    assert result.already_present and result.path == pulled.path
    assert result.warnings[0].startswith(f"cannot reach {dead} for o/r")
    with pytest.raises(hub.HubUnreachableError):
        hub.pull_model("o/r:Q8_0")


def _pull_in_thread(ref: str) -> tuple[threading.Thread, threading.Event, list]:
    """`pull_model` in a thread; the event is set when it starts waiting for the lock."""
    waiting = threading.Event()
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(hub.pull_model(ref, on_wait=lambda message: (
                outcome.append(message), waiting.set())))
        except BaseException as exc:  # the test reads it
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, waiting, outcome


def test_a_file_another_process_downloads_is_waited_for_then_taken(fake) -> None:
    from filelock import FileLock

    data = payload(1000)
    fake.add_file("o/r", "m-Q4_K_M.gguf", data)
    lock_file = store.lock_path("o/r", sha(data))
    lock_file.parent.mkdir(parents=True)
    with FileLock(str(lock_file)):  # "another process" holds the blob's lock ...
        thread, waiting, outcome = _pull_in_thread("o/r")
        assert waiting.wait(ceilings.PROCESS_S)
        store.blob_path("o/r", sha(data)).write_bytes(data)  # ... and finishes the file
    thread.join(ceilings.PROCESS_S)
    assert not thread.is_alive()
    message, result = outcome
    assert message == ("m-Q4_K_M.gguf is being downloaded by another process; waiting for it "
                       "(Ctrl-C stops waiting)")
    assert result.bytes_downloaded == 0 and result.path.read_bytes() == data
    assert file_gets(fake) == []  # nothing fetched twice


def test_a_download_another_process_gave_up_is_resumed(fake) -> None:
    from filelock import FileLock

    data = payload(1000)
    fake.add_file("o/r", "m-Q4_K_M.gguf", data)
    lock_file = store.lock_path("o/r", sha(data))
    lock_file.parent.mkdir(parents=True)
    with FileLock(str(lock_file)):
        thread, waiting, outcome = _pull_in_thread("o/r")
        assert waiting.wait(ceilings.PROCESS_S)
        store.partial_path("o/r", sha(data)).write_bytes(data[:400])  # it stopped half-way
    thread.join(ceilings.PROCESS_S)
    assert not thread.is_alive()
    result = outcome[-1]
    assert result.bytes_downloaded == 600 and result.path.read_bytes() == data
    assert fake.ranges("m-Q4_K_M.gguf") == ["bytes=400-"]


def test_consent_is_needed_off_a_terminal_only_for_a_download(fake) -> None:
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(1000))
    with pytest.raises(hub.HubError) as exc:
        hub.pull_model("o/r", confirm=lambda question: False)
    assert exc.value.message == "o/r is not downloaded (m-Q4_K_M.gguf (1000 B) from o/r needed)"
    assert file_gets(fake) == []
    hub.pull_model("o/r")
    assert hub.pull_model("o/r", confirm=lambda question: False).already_present


def test_progress_sees_the_totals(fake) -> None:
    data = payload(3 * MiB)
    fake.add_file("o/r", "m-Q4_K_M.gguf", data)
    partial = store.partial_path("o/r", sha(data))
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data[:MiB])

    class Recorder:
        def __init__(self) -> None:
            self.events: list[tuple] = []

        def start(self, label: str, total: int, done: int) -> None:
            self.events.append(("start", label, total, done))

        def advance(self, n: int) -> None:
            self.events.append(("advance", n))

        def close(self) -> None:
            self.events.append(("close",))

    recorder = Recorder()
    hub.download(hub.resolve_pull("o/r"), progress=recorder)
    assert recorder.events[0] == ("start", "m-Q4_K_M.gguf", 3 * MiB, MiB)
    assert recorder.events[-1] == ("close",)
    assert sum(e[1] for e in recorder.events if e[0] == "advance") == 2 * MiB


def test_symlinks_unavailable_moves_the_file_into_the_snapshot(fake, monkeypatch) -> None:
    def no_symlink(*args: object, **kwargs: object) -> None:
        raise OSError("symlinks not supported")

    monkeypatch.setattr(os, "symlink", no_symlink)
    data = payload(3000)
    fake.add_file("o/r", "m-Q4_K_M.gguf", data)
    result = hub.pull_model("o/r")
    assert not result.path.is_symlink() and result.path.read_bytes() == data
    assert not store.blob_path("o/r", sha(data)).exists()  # moved, not copied
    assert hub.pull_model("o/r").already_present
    assert store.find_model("o/r") == result.path


def test_an_unwritable_cache_is_one_error(fake, monkeypatch) -> None:
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(1000))

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store, "write_sidecar", refuse)
    with pytest.raises(QwenError) as exc:
        hub.pull_model("o/r")
    assert exc.value.message == f"cannot write to the cache {store.hub_cache()}: " \
                                "permission denied"
    assert "HF_HUB_CACHE" in exc.value.hint


def test_a_disk_that_fills_up_mid_transfer_keeps_what_arrived(fake, monkeypatch) -> None:
    import errno

    data = payload(3 * MiB)
    fake.add_file("o/r", "m-Q4_K_M.gguf", data)
    real_open = open
    written = {"n": 0}

    class Filling:
        def __init__(self, f) -> None:
            self._f = f

        def write(self, chunk: bytes) -> int:
            if written["n"] >= MiB:
                raise OSError(errno.ENOSPC, "No space left on device")
            written["n"] += len(chunk)
            return self._f.write(chunk)

        def __getattr__(self, name: str):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc: object) -> None:
            self._f.close()

    def fake_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return Filling(f) if str(path).endswith(".incomplete") else f

    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(hub.DiskSpaceError) as exc:
        hub.pull_model("o/r")
    assert exc.value.message.startswith("the disk filled up while downloading m-Q4_K_M.gguf")
    kept = store.partial_path("o/r", sha(data)).stat().st_size
    assert MiB <= kept < len(data)
    monkeypatch.setattr("builtins.open", real_open)
    result = hub.pull_model("o/r")
    assert result.resumed and result.bytes_downloaded == len(data) - kept
