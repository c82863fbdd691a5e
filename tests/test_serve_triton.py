"""A generated repository served by a real ``tritonserver`` (nvidia-pytriton's, CPU, Python backend),
started once for this module on loopback ports: answers equal direct ONNX Runtime, the video
ensemble equals a local ``sta-deploy predict``, 8 threads x 8 requests are all answered and batched,
and bad requests get errors naming the problem while the server keeps serving."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from _serve import TINY, can_build_reference, merge_repositories, needs_triton

pytest.importorskip("av")
pytestmark = needs_triton

CLIENT_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def served(tmp_path_factory, tiny_exports):
    """One server for the whole session: ``tiny`` (dynamic batch, kept outputs) with its video ensemble,
    ``tiny_b2`` (static batch 2) and, when the STA plugin's CPU reference can be built, ``tiny_plugin``."""
    from sta_deploy.serve.repository import PreprocessOptions, write_repository
    from sta_deploy.serve.server import TritonServer, free_port
    from sta_deploy.video.synthetic import moving_shapes, write_video

    folder = tmp_path_factory.mktemp("serve")
    names = ["tiny", "tiny_b2"] + (["tiny_plugin"] if can_build_reference else [])
    exports = {name: tiny_exports.get(name) for name in names}
    parts = []
    for name, path in exports.items():
        options = dict(with_preprocess=True, preprocess=PreprocessOptions(views="1x3")) if name == "tiny" else {}
        parts.append(write_repository(path, folder / f"part_{name}", platform="python", max_batch=8, threads=1, **options).root)
    repository = merge_repositories(parts, folder / "repository")
    clip = write_video(folder / "clip.mp4", moving_shapes(40, 48, 80, seed=1))
    server = TritonServer(repository, http_port=free_port(), grpc_port=free_port())
    server.start(timeout=240)
    try:
        yield {"server": server, "exports": exports, "clip": clip, "folder": folder}
    finally:
        server.stop()


def _client(served, scheme="http"):
    from sta_deploy.serve.client import Connection

    server = served["server"]
    return Connection(server.http_url if scheme == "http" else server.grpc_url, timeout=CLIENT_TIMEOUT)


def _direct(path, clips):
    """Direct ONNX Runtime on the export, one clip per call (a static-batch export: its batch): {output: array}."""
    from sta_deploy.export.manifest import read_manifest
    from sta_deploy.runtime.batching import run_in_batches
    from sta_deploy.runtime.onnxrt import onnx_session

    session = onnx_session(path, threads=1)
    manifest = read_manifest(path)
    names = [o.name for o in session.get_outputs()]

    def run(chunk):
        return dict(zip(names, session.run(None, {manifest["inputs"][0]["name"]: chunk})))

    return run_in_batches(run, clips, batch=None if manifest["dynamic_batch"] else manifest["batch_size"], step=1)


def _clips(count, seed=0):
    return np.random.default_rng(seed).standard_normal((count, 3, 16, 64, 64)).astype(np.float32)


def _assert_same(answer, direct, rows=slice(None)):
    assert np.allclose(answer["logits"], direct["logits"][rows], atol=1e-5, rtol=1e-5)
    for stage in range(3):
        name = f"kept_stage{stage}"
        if name in direct:
            assert np.array_equal(answer[name], direct[name][rows]), name


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_served_logits_and_kept_equal_direct_onnxruntime(served, scheme):
    clips = _clips(3)
    direct = _direct(served["exports"]["tiny"], clips)
    connection = _client(served, scheme)
    answer = connection.infer("tiny", {"video": clips}, ["logits", "kept_stage0", "kept_stage1", "kept_stage2"])
    assert answer["logits"].shape == (3, TINY["num_classes"]) and answer["kept_stage0"].dtype == np.int64
    _assert_same(answer, direct)


def test_static_batch_model_through_the_remote_backend(served):
    """tiny_b2 is max_batch_size 0: the client sends exactly 2 clips per request (the last one padded)."""
    from sta_deploy.serve.client import TritonBackend

    connection = _client(served)
    config = connection.config("tiny_b2")
    assert int(config.get("max_batch_size", 0)) == 0 and config["input"][0]["dims"][0] in (2, "2")
    backend = TritonBackend(connection, "tiny_b2", config)
    clips = _clips(3, seed=1)
    logits, _ = backend.run(clips)
    assert np.allclose(logits, _direct(served["exports"]["tiny_b2"], clips)["logits"], atol=1e-5, rtol=1e-5)


def test_plugin_mode_model_served_by_the_python_backend(served):
    if "tiny_plugin" not in served["exports"]:
        pytest.skip("cmake or onnxruntime-extensions missing: the STA plugin's CPU reference cannot be built")
    clips = _clips(2, seed=2)
    answer = _client(served).infer("tiny_plugin", {"video": clips}, ["logits", "kept_stage0", "kept_stage1", "kept_stage2"])
    _assert_same(answer, _direct(served["exports"]["tiny_plugin"], clips))


def _predict_json(cli, *args):
    code, out, err = cli("predict", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_ensemble_top_k_equals_local_predict(served, cli):
    clip, url = served["clip"], served["server"].http_url
    local = _predict_json(cli, clip, "--onnx", served["exports"]["tiny"], "--views", "1x3", "--top", "6")
    remote = _predict_json(cli, clip, "--url", url, "--top", "6")  # the server's one ensemble: tiny_video
    raw = _predict_json(cli, clip, "--url", url, "--model-name", "tiny", "--views", "1x3", "--top", "6")
    assert remote["backend"] == raw["backend"] == "triton" and remote["r1"] == local["r1"]
    assert "tiny_video" in remote["source"] and remote["protocol"] == local["protocol"]
    for answer in (remote, raw):
        (mine,), (theirs,) = answer["results"], local["results"]
        assert [t["class"] for t in mine["top"]] == [t["class"] for t in theirs["top"]]
        assert np.allclose([t["score"] for t in mine["top"]], [t["score"] for t in theirs["top"]], atol=1e-6)
        assert (mine["views"], mine["frames"]) == (theirs["views"], theirs["frames"]) == (3, 40)


def test_remote_predict_prints_the_local_table(served, cli):
    clip = served["clip"]
    code, remote, _ = cli("predict", clip, "--url", served["server"].http_url, "--top", "3")
    assert code == 0
    code, local, _ = cli("predict", clip, "--onnx", served["exports"]["tiny"], "--views", "1x3", "--top", "3")
    assert code == 0

    def table(text):  # the ranked lines, and the clip line without its timing
        lines = text.strip().splitlines()[1:]
        return [lines[0].split(", ")[:2]] + lines[1:]

    assert table(remote) == table(local)
    assert "(triton: http://" in remote.splitlines()[0]


def _worker(served, clips, direct, results, barrier, index, requests=8):
    connection = _client(served)
    barrier.wait(timeout=60)
    for request in range(requests):
        row = (index * requests + request) % len(clips)
        try:
            answer = connection.infer("tiny", {"video": clips[row : row + 1]}, ["logits", "kept_stage0", "kept_stage1", "kept_stage2"])
            _assert_same(answer, direct, slice(row, row + 1))
            results.append("ok")
        except Exception as error:  # recorded, asserted below
            results.append(f"{type(error).__name__}: {error}")


def test_load_8_threads_x_8_requests_all_answered_equal_and_batched(served):
    clips = _clips(16, seed=3)
    direct = _direct(served["exports"]["tiny"], clips)
    before = _batch_counts(served)
    results, barrier = [], threading.Barrier(8)
    threads = [threading.Thread(target=_worker, args=(served, clips, direct, results, barrier, i), daemon=True) for i in range(8)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, 240 - (time.monotonic() - start)))
    assert not any(thread.is_alive() for thread in threads), "a client thread hung"
    assert len(results) == 64 and all(r == "ok" for r in results), [r for r in results if r != "ok"][:3]
    after = _batch_counts(served)
    grown = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    assert sum(size * count for size, count in grown.items()) == 64
    assert any(size > 1 and count > 0 for size, count in grown.items()), f"no batch larger than 1 formed: {grown}"


def _batch_counts(served) -> dict:
    """{batch size: executions} of model ``tiny`` from Triton's statistics."""
    stats = _client(served).statistics("tiny")["model_stats"][0]
    return {int(entry["batch_size"]): int(entry["compute_infer"]["count"]) for entry in stats.get("batch_stats", [])}


@pytest.mark.parametrize(
    "model, inputs, expected",
    [
        ("tiny", {"video": np.zeros((1, 3, 16, 32, 32), np.float32)}, "unexpected shape for input 'video'"),
        ("tiny", {"video": np.zeros((1, 3, 16, 64, 64), np.float64)}, "input 'video' data-type is 'FP64'"),
        ("tiny", {}, "expected 1 inputs but got 0 inputs for model 'tiny'"),
        ("tiny", {"frames": np.zeros((1, 3, 16, 64, 64), np.float32)}, "unexpected inference input 'frames'"),
        ("tiny_video", {"video_bytes": np.array([b"\x00garbage" * 300], dtype=object)}, "not a readable video"),
        ("tiny_video", {"video_bytes": np.array([b""], dtype=object)}, "empty video"),
    ],
    ids=["wrong-shape", "wrong-dtype", "missing-input", "wrong-input-name", "corrupt-video", "empty-video"],
)
def test_bad_request_gets_an_error_naming_it_and_the_server_goes_on(served, model, inputs, expected):
    from sta_deploy.serve.client import RemoteError

    connection = _client(served)
    outputs = ["logits"] if model == "tiny" else ["top_classes"]
    with pytest.raises(RemoteError) as error:
        connection.infer(model, inputs, outputs)
    assert expected in str(error.value) and "\n" not in str(error.value)
    clips = _clips(1, seed=4)
    assert np.allclose(connection.infer("tiny", {"video": clips}, ["logits"])["logits"], _direct(served["exports"]["tiny"], clips)["logits"], atol=1e-5)
    answer = connection.infer("tiny_video", {"video_bytes": np.array([served["clip"].read_bytes()], dtype=object)}, ["top_classes", "num_views"])
    assert answer["num_views"][0] == 3


def _registered_regions(served) -> set[str]:
    """Names of the system shared memory regions the server holds (asked over a fresh HTTP client)."""
    with _client(served) as connection:
        return {entry["name"] for entry in connection.client.get_system_shared_memory_status()}


def _shm_files(prefix: str) -> list[str]:
    import os

    return sorted(name for name in os.listdir("/dev/shm") if name.startswith(prefix))


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_shared_memory_inputs_equal_the_request_body_path_and_are_released(served, scheme):
    """Inputs through /dev/shm regions: the same answers as the request body and direct ONNX Runtime; the
    region grows for a bigger request and is reused for a smaller one; close() leaves nothing registered
    on the server and no file in /dev/shm."""
    outputs = ["logits", "kept_stage0", "kept_stage1", "kept_stage2"]
    clips = _clips(5, seed=5)
    direct = _direct(served["exports"]["tiny"], clips)
    body = _client(served, scheme).infer("tiny", {"video": clips[:3]}, outputs)
    from sta_deploy.serve.client import Connection

    connection = Connection(_client(served, scheme).url, timeout=CLIENT_TIMEOUT, shared_memory=True)
    prefix = connection.regions.prefix
    try:
        for rows in (slice(0, 3), slice(0, 5), slice(3, 4)):  # 3 clips, grown to 5, a smaller one reusing it
            answer = connection.infer("tiny", {"video": clips[rows]}, outputs)
            _assert_same(answer, direct, rows)
            (name,) = connection.regions.names
            assert name in _registered_regions(served) and _shm_files(prefix) == [name]
        assert connection.regions.regions["video"].byte_size == clips[:5].nbytes
        for key in outputs:
            assert np.array_equal(answer[key], _client(served, scheme).infer("tiny", {"video": clips[3:4]}, outputs)[key]), key
        assert np.array_equal(_client(served, scheme).infer("tiny", {"video": clips[:3]}, outputs)["logits"], body["logits"])
    finally:
        connection.close()
    assert not [name for name in _registered_regions(served) if name.startswith(prefix)]
    assert _shm_files(prefix) == []


def test_shared_memory_is_released_after_a_failed_request(served):
    from sta_deploy.serve.client import Connection, RemoteError

    with Connection(served["server"].http_url, timeout=CLIENT_TIMEOUT, shared_memory=True) as connection:
        prefix = connection.regions.prefix
        with pytest.raises(RemoteError, match="unexpected shape for input 'video'"):
            connection.infer("tiny", {"video": np.zeros((1, 3, 16, 32, 32), np.float32)}, ["logits"])
        clips = _clips(1, seed=6)  # the connection still serves
        assert np.allclose(connection.infer("tiny", {"video": clips}, ["logits"])["logits"], _direct(served["exports"]["tiny"], clips)["logits"], atol=1e-5)
    assert not [name for name in _registered_regions(served) if name.startswith(prefix)] and _shm_files(prefix) == []


def test_shared_memory_the_server_cannot_open_is_a_one_line_error_naming_the_fix(served, monkeypatch):
    """A server on another host cannot open the client's /dev/shm key; here the key is made one that does
    not exist, so the real server refuses the registration the same way."""
    from sta_deploy.serve.client import Connection, RemoteError

    connection = Connection(served["server"].http_url, timeout=CLIENT_TIMEOUT, shared_memory=True)
    register = connection.client.register_system_shared_memory
    monkeypatch.setattr(connection.client, "register_system_shared_memory", lambda name, key, size, **kw: register(name, key + "_elsewhere", size, **kw))
    prefix = connection.regions.prefix
    try:
        with pytest.raises(RemoteError) as error:
            connection.infer("tiny", {"video": _clips(1)}, ["logits"])
    finally:
        connection.close()
    message = str(error.value)
    assert "registering shared memory" in message and "runs on this host" in message and "drop --shared-memory" in message and "\n" not in message
    assert _shm_files(prefix) == [] and not [name for name in _registered_regions(served) if name.startswith(prefix)]


def test_predict_with_shared_memory_prints_what_the_request_body_path_prints(served, cli):
    import os

    clip, url = served["clip"], served["server"].http_url
    before = set(os.listdir("/dev/shm"))
    args = (clip, "--url", url, "--model-name", "tiny", "--views", "1x3", "--top", "4")
    shared, body = _predict_json(cli, *args, "--shared-memory"), _predict_json(cli, *args)
    (mine,), (theirs,) = shared["results"], body["results"]
    assert [t["class"] for t in mine["top"]] == [t["class"] for t in theirs["top"]]
    assert np.allclose([t["score"] for t in mine["top"]], [t["score"] for t in theirs["top"]], atol=1e-6)
    assert not [name for name in set(os.listdir("/dev/shm")) - before if name.startswith("sta_deploy_")]
    code, _, err = cli("predict", clip, "--onnx", served["exports"]["tiny"], "--shared-memory")
    assert code != 0 and "--shared-memory needs --url" in err
