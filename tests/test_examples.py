"""examples/classify, the C++ app: a video file in, top-k classes out, decoding and sampling in C++.

The app is built once per session (CMake; OpenVINO found from the ``openvino`` wheel, FFmpeg's
libraries through pkg-config, TensorRT's backend compiled too when its headers are found).  Its
pieces are checked against numpy and ``sta_deploy.video`` through ``postprocess_check`` (frame
indices, resize sizes and crops, the resize bit for bit against PyTorch, normalisation, labels,
``.npy``, view averaging), then the app end to end on generated mp4/webm/mkv/avi clips with a small
exported model: its views equal ``load_views``' views bit for bit, its top-k equals
``sta-deploy predict --onnx``, and every broken clip gives one line on stderr and exit code 1.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from _native import nvcc_path, tensorrt_root
from sta_deploy.video.predict import average_views, top_k

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "classify"
TINY = dict(embed_dim=32, depth=3, num_heads=2, img_size=64, num_frames=16, num_classes=7)

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is needed to build examples/classify")


def _has_ffmpeg_dev() -> bool:
    libraries = ["libavformat", "libavcodec", "libswscale", "libavutil"]
    return shutil.which("pkg-config") is not None and subprocess.run(["pkg-config", "--exists", *libraries]).returncode == 0


def _has_openvino() -> bool:
    return importlib.util.find_spec("openvino") is not None


@dataclass
class Build:
    folder: Path
    log: str  # CMake's configure output


@pytest.fixture(scope="session")
def build(tmp_path_factory) -> Build:
    """examples/classify configured and built once: the app, postprocess_check and (with TensorRT
    headers and the CUDA toolkit) the TensorRT backend, all with -Wall -Wextra -Werror."""
    folder = tmp_path_factory.mktemp("classify")
    options = ["-DCMAKE_CXX_FLAGS=-Wall -Wextra -Werror", f"-DPython3_EXECUTABLE={sys.executable}"]
    root = tensorrt_root()
    if root is not None and nvcc_path() is not None:
        options.append(f"-DTensorRT_ROOT={root}")
    configure = subprocess.run(["cmake", "-S", str(EXAMPLE), "-B", str(folder), *options], capture_output=True, text=True)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    built = subprocess.run(["cmake", "--build", str(folder), "-j", "2"], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-5000:] + built.stderr[-5000:]
    return Build(folder, configure.stdout)


@pytest.fixture(scope="session")
def check_tool(build) -> Path:
    return build.folder / "postprocess_check"


@pytest.fixture(scope="session")
def app(build) -> Path:
    """The app with the OpenVINO backend and FFmpeg; skipped only where their SDKs are missing."""
    missing = [what for what, found in (("FFmpeg's dev packages (libavformat-dev ...)", _has_ffmpeg_dev()), ("openvino", _has_openvino())) if not found]
    if missing:
        pytest.skip(f"examples/classify needs {' and '.join(missing)} (see .ci/run)")
    assert "backends: openvino" in build.log and "video input: FFmpeg" in build.log, build.log
    return build.folder / "classify"


def _run(tool: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True, timeout=300)


# ----------------------------------------------------------------------------- pieces: .npy, averaging, half
@pytest.mark.parametrize("shape", [(6, 3, 16, 8, 8), (400,), (2, 3), (1, 0)])
@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_npy_reader_returns_numpys_data(check_tool, tmp_path, shape, version):
    array = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with open(tmp_path / "a.npy", "wb") as handle:
        np.lib.format.write_array(handle, array, version=version)
    done = _run(check_tool, "npy", tmp_path / "a.npy", tmp_path / "a.bin")
    assert done.returncode == 0, done.stderr
    assert tuple(int(x) for x in done.stdout.split()) == shape
    assert np.array_equal(np.fromfile(tmp_path / "a.bin", dtype=np.float32).reshape(shape), array)


def _save_truncated(path: Path, array: np.ndarray) -> None:
    np.save(path, array)
    path.write_bytes(path.read_bytes()[:-4])


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda path: np.save(path, np.zeros((2, 3), np.float64)), "expected little-endian float32 ('<f4'), found '<f8'"),
        (lambda path: np.save(path, np.asfortranarray(np.zeros((2, 3), np.float32))), "expected a C-ordered array"),
        (lambda path: path.write_bytes(b"not numpy at all"), "is not a .npy file"),
        (lambda path: _save_truncated(path, np.ones((2, 3), np.float32)), "truncated .npy data"),
    ],
)
def test_npy_reader_refuses_what_it_cannot_read(check_tool, tmp_path, write, message):
    write(tmp_path / "a.npy")
    done = _run(check_tool, "npy", tmp_path / "a.npy", tmp_path / "a.bin")
    assert done.returncode == 1 and message in done.stderr, done.stderr


@pytest.mark.parametrize("average", ["logits", "prob"])
@pytest.mark.parametrize("views", [1, 6])
def test_view_averaging_and_top_k_match_sta_deploy_predict(check_tool, tmp_path, average, views):
    logits = (np.random.default_rng(views).standard_normal((views, 400)) * 4).astype(np.float32)
    logits[:, 7] = logits[:, 3]  # a tie: the lower class must come first
    np.save(tmp_path / "logits.npy", logits)
    done = _run(check_tool, "top", tmp_path / "logits.npy", average, 400)
    assert done.returncode == 0, done.stderr
    got = [line.split() for line in done.stdout.strip().splitlines()]
    classes, scores = top_k(average_views(logits, average), 400)
    assert [int(c) for c, _ in got] == classes
    assert np.allclose([float(s) for _, s in got], scores, rtol=1e-12, atol=1e-15)


def test_half_to_float_matches_numpy_for_every_bit_pattern(check_tool, tmp_path):
    assert _run(check_tool, "half", tmp_path / "half.bin").returncode == 0
    got = np.fromfile(tmp_path / "half.bin", dtype=np.float32)
    expected = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), expected[~nan].view(np.uint32))  # bit for bit, signed zeros too


# ----------------------------------------------------------------------------- pieces: sampling
TOTALS = [1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 40, 63, 64, 65, 100, 127, 250, 301]


@pytest.mark.parametrize(
    "temporal, frames, stride, views",
    [("dense", 16, 4, 5), ("dense", 16, 4, 1), ("dense", 16, 2, 2), ("dense", 8, 3, 7), ("segment", 16, 1, 2), ("segment", 16, 1, 1),
     ("segment", 8, 1, 3), ("mmaction", 32, 2, 4), ("mmaction", 32, 2, 1), ("mmaction", 16, 3, 5)],
)
def test_frame_indices_match_sta_deploy_sampling(check_tool, temporal, frames, stride, views):
    from sta_deploy.video.sampling import SamplingProtocol

    protocol = SamplingProtocol("p", temporal, frames, stride, views, 1, 64, "videomae", "floor")
    done = _run(check_tool, "indices", temporal, frames, stride, views, *TOTALS)
    assert done.returncode == 0, done.stderr
    for total, line in zip(TOTALS, done.stdout.splitlines(), strict=True):
        assert [int(x) for x in line.split()] == protocol.temporal_indices(total).reshape(-1).tolist(), (total, line)


@pytest.mark.parametrize("rounding, style, crops", [("floor", "videomae", 3), ("floor", "videomae", 1), ("round", "mmaction", 3), ("round", "mmaction", 1), ("floor", "videomae", 4)])
def test_resized_sizes_and_crops_match_sta_deploy_sampling(check_tool, rounding, style, crops):
    from sta_deploy.video.sampling import SamplingProtocol

    for crop, height, width in [(224, 240, 320), (224, 360, 640), (224, 480, 270), (64, 48, 80), (64, 64, 48), (56, 71, 99), (224, 224, 224), (32, 33, 1001)]:
        protocol = SamplingProtocol("p", "dense", 16, 4, 1, crops, crop, style, rounding)
        done = _run(check_tool, "spatial", rounding, style, crop, crops, height, width)
        assert done.returncode == 0, done.stderr
        rows = [tuple(int(x) for x in line.split()) for line in done.stdout.splitlines()]
        resized = protocol.resized_size(height, width)
        assert rows[0] == resized and rows[1:] == protocol.crop_boxes(*resized), (crop, height, width)


def test_resize_matches_pytorch_bit_for_bit(check_tool, tmp_path):
    """The bilinear resize equals resize_frame (PyTorch) on every pixel, up- and downscaling."""
    from sta_deploy.video.sampling import resize_frame

    rng = np.random.default_rng(0)
    for height, width, out_height, out_width in [(48, 80, 64, 106), (360, 640, 224, 398), (240, 320, 224, 298), (64, 48, 85, 64), (97, 57, 300, 111), (50, 50, 50, 73)]:
        frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        np.save(tmp_path / "in.npy", frame.astype(np.float32))
        done = _run(check_tool, "resize", tmp_path / "in.npy", out_height, out_width, tmp_path / "out.npy")
        assert done.returncode == 0, done.stderr
        expected = resize_frame(frame, out_height, out_width)
        got = np.load(tmp_path / "out.npy")
        assert got.dtype == np.uint8 and np.array_equal(got, expected), (height, width, out_height, out_width, int((got != expected).sum()))


def test_normalisation_matches_numpy_bit_for_bit(check_tool, tmp_path):
    from sta_deploy.video.sampling import normalise

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    assert _run(check_tool, "normalise", *map(repr, mean), *map(repr, std), tmp_path / "table.bin").returncode == 0
    table = np.fromfile(tmp_path / "table.bin", dtype=np.float32).reshape(3, 256)
    values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)  # (256, 3): every value in every channel
    assert np.array_equal(table.T, normalise(values, mean, std))


def test_labels_file_reader_matches_sta_deploy(check_tool, tmp_path):
    from sta_deploy.video.labels import read_labels_file

    for name, text in [("plain", "abseiling\nair drumming\n\n"), ("indexed", "1,b c\n0,\"a\"\n2 c\n"), ("crlf", "x\r\ny\r\n"), ("quoted", '"q"\n  r  \n')]:
        (tmp_path / name).write_bytes(text.encode())
        done = _run(check_tool, "labels", tmp_path / name)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == read_labels_file(tmp_path / name), name


# ----------------------------------------------------------------------------- the app end to end
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A seeded tiny ViT at r1=4 exported with a static batch of 2 (odd view counts pad the last batch),
    and the protocol file `sta-deploy protocol` writes beside it."""
    from sta_deploy import create_model
    from sta_deploy.cli.app import main
    from sta_deploy.export.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("classify_model") / "tiny.onnx"
    export_onnx(create_model("vit_s", r1=4, seed=0, **TINY), path, batch_size=2)
    assert main(["protocol", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """One clip per container (H.264 mp4 and mkv, VP9 webm, MPEG-4 avi), landscape and portrait."""
    from sta_deploy.video.synthetic import moving_shapes, write_video

    root = tmp_path_factory.mktemp("classify_clips")
    specs = [("a.mp4", 40, 48, 80), ("b.webm", 36, 64, 48), ("c.mkv", 50, 48, 64), ("d.avi", 30, 72, 96)]
    return [write_video(root / name, moving_shapes(frames, height, width, seed=index)) for index, (name, frames, height, width) in enumerate(specs)]


def _protocol(model, dataset: str, views=None):
    from sta_deploy.video.backends import OnnxBackend
    from sta_deploy.video.predict import protocol_for_backend

    return protocol_for_backend(OnnxBackend(model), dataset=dataset, views=views)


def _swin_protocol_file(model: Path, folder: Path) -> Path:
    """The model's protocol file with Video Swin's protocols (mmaction2 sampling, rounding, crops,
    mean of softmax scores) at its input size: the sampling does not depend on the backbone."""
    from sta_deploy.video.sampling import protocol_for

    document = json.loads(model.with_name("tiny.protocol.json").read_text())
    document["protocols"] = {d: protocol_for("swin", num_frames=16, img_size=64, dataset=d).as_dict() for d in ("k400", "ssv2")}
    path = folder / "swin.protocol.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize("case", ["videomae-k400", "videomae-ssv2", "videoswin-k400"])
def test_views_equal_sta_deploy_video_bit_for_bit(app, model, clips, tmp_path, case, one_torch_thread):
    """The uint8 views (decode, frame indices, resize, crops) and the normalised model input the app
    builds equal load_views() for every container, and its scores equal predict_clip's on the same model."""
    from sta_deploy.video.backends import OnnxBackend
    from sta_deploy.video.clips import load_views
    from sta_deploy.video.predict import predict_clip
    from sta_deploy.video.sampling import protocol_for

    family, dataset = case.split("-")
    options = ["--dataset", dataset, "--views", "3x2"] if dataset == "k400" else ["--dataset", dataset]
    if family == "videoswin":
        options += ["--protocol", _swin_protocol_file(model, tmp_path)]
        protocol = protocol_for("swin", num_frames=16, img_size=64, dataset=dataset, views="3x2")
    else:
        protocol = _protocol(model, dataset, views="3x2" if dataset == "k400" else None)
    done = _run(app, model, *clips, *options, "--json", "--save-views", tmp_path / "views")
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)
    assert output["protocol"] == protocol.as_dict()
    backend = OnnxBackend(model)
    for clip, result in zip(clips, output["results"], strict=True):
        expected = load_views(clip, protocol)
        pixels = np.load(tmp_path / "views" / f"{clip.name}.pixels.npy")
        views = np.load(tmp_path / "views" / f"{clip.name}.views.npy")
        assert pixels.shape == expected.pixels.shape and views.shape == expected.tensors().shape and views.dtype == np.float32
        # Normalised floats within 1/255 of a standard deviation; where the decoder is bit-exact by its
        # standard (H.264: mp4, mkv; VP9: webm) identical uint8 frames and floats.  (MPEG-4 Part 2 in
        # the avi is identical too between Debian's FFmpeg 5.1 and PyAV's FFmpeg 8, but its IDCT need not be.)
        bound = (1 / 255) / np.asarray(protocol.std, dtype=np.float32)[None, :, None, None, None] + 1e-6
        assert (np.abs(views - expected.tensors()) <= bound).all(), clip.name
        if clip.suffix != ".avi":
            assert np.array_equal(pixels, expected.pixels) and np.array_equal(views, expected.tensors()), (clip.name, int((pixels != expected.pixels).sum()))
        reference = predict_clip(backend, clip, protocol, top=5)
        assert [t["class"] for t in result["top"]] == reference.classes
        assert np.allclose([t["score"] for t in result["top"]], reference.scores, atol=1e-4)
        assert (result["views"], result["frames"]) == (protocol.num_views, expected.total_frames)


@pytest.mark.parametrize("dataset", ["k400", "ssv2"])
def test_top_k_equals_sta_deploy_predict_onnx(app, model, clips, cli, dataset):
    """--json prints predict --json's structure; classes, labels and scores (within 1e-4) agree."""
    common = [*clips, "--dataset", dataset, "--top", "5", "--json"]
    done = _run(app, model, *common)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    ours = json.loads(done.stdout)
    code, out, _ = cli("predict", *common, "--onnx", model)
    assert code == 0
    theirs = json.loads(out)
    assert set(theirs) <= set(ours) and ours["backend"] == "openvino" and theirs["backend"] == "onnxruntime"
    for key in ("model", "r1", "source", "protocol", "labels", "failed"):
        assert ours[key] == theirs[key], key
    for a, b in zip(ours["results"], theirs["results"], strict=True):
        assert set(b) <= set(a)
        assert (a["path"], a["views"], a["frames"]) == (b["path"], b["views"], b["frames"])
        assert [(t["class"], t["label"]) for t in a["top"]] == [(t["class"], t["label"]) for t in b["top"]]
        assert np.allclose([t["score"] for t in a["top"]], [t["score"] for t in b["top"]], atol=1e-4)


def test_npy_views_give_the_same_answer(app, model, clips, cli, tmp_path):
    """The .npy views predict --save-views writes are still an input; no protocol file is needed for them."""
    code, out, _ = cli("predict", clips[0], "--onnx", model, "--views", "2x3", "--json", "--save-views", tmp_path)
    assert code == 0
    theirs = json.loads(out)["results"][0]
    lone = tmp_path / "lone.onnx"
    shutil.copy(model, lone)  # no lone.protocol.json beside it: the averaging rule comes from --average
    done = _run(app, lone, theirs["views_file"], "--json", "--average", "logits")
    assert done.returncode == 0, done.stderr
    ours = json.loads(done.stdout)["results"][0]
    assert [t["class"] for t in ours["top"]] == [t["class"] for t in theirs["top"]] and ours["views"] == 6
    assert np.allclose([t["score"] for t in ours["top"]], [t["score"] for t in theirs["top"]], atol=1e-4)


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """The bad inputs the video tests generate: missing, empty, garbage, audio only, too short, truncated, a folder."""
    import av

    from sta_deploy.video.synthetic import moving_shapes, write_video

    root = tmp_path_factory.mktemp("classify_broken")
    (root / "empty.mp4").write_bytes(b"")
    (root / "garbage.mp4").write_bytes(b"\x00garbage" * 300)
    with av.open(str(root / "tone.wav"), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    write_video(root / "short.avi", moving_shapes(8, 48, 64, seed=4))
    for suffix in (".avi", ".mp4", ".webm", ".mkv"):
        data = write_video(root / f"full{suffix}", moving_shapes(24, 48, 64, seed=1)).read_bytes()
        (root / f"cut{suffix}").write_bytes(data[: len(data) // 2])
        (root / f"full{suffix}").unlink()
    (root / "frames").mkdir()
    return {p.name: p for p in root.iterdir()} | {"missing.mp4": root / "missing.mp4"}


BROKEN = ["empty.mp4", "garbage.mp4", "tone.wav", "short.avi", "cut.avi", "cut.mp4", "cut.webm", "cut.mkv", "frames", "missing.mp4"]


@pytest.mark.parametrize("name", BROKEN)
def test_broken_clip_is_one_line_and_exit_1(app, model, broken, name, one_torch_thread):
    """Each broken clip: one line on stderr naming it, exit code 1, and the same reason sta_deploy.video gives."""
    from sta_deploy.video.clips import load_views
    from sta_deploy.video.errors import VideoError

    path = broken[name]
    done = _run(app, model, path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"classify: error: {path}: "), done.stderr
    if name != "frames":  # sta_deploy.video reads frame folders; the app reads video files
        with pytest.raises(VideoError) as error:
            load_views(path, _protocol(model, "k400"))
        assert lines[0] == f"classify: error: {path}: {error.value.reason.split(' (--min-frames')[0]}"


def test_broken_clips_are_reported_and_the_others_classified(app, model, clips, broken):
    done = _run(app, model, broken["garbage.mp4"], clips[0], broken["short.avi"], "--json")
    assert done.returncode == 1
    assert [line.split(": ")[2] for line in done.stderr.splitlines()] == [str(broken["garbage.mp4"]), str(broken["short.avi"])]
    output = json.loads(done.stdout)
    assert [r["path"] for r in output["results"]] == [str(clips[0])]
    assert [f["path"] for f in output["failed"]] == [str(broken["garbage.mp4"]), str(broken["short.avi"])]


def test_odd_sized_frames_are_classified(app, model, tmp_path, one_torch_thread):
    """Odd frame sizes (VP9 allows them) take swscale's scaled path and rows whose width is not a
    multiple of its SIMD block: classified, same frame count and view shapes as sta_deploy.video.  (Not
    compared pixel for pixel: FFmpeg 5.1 and 8 interpolate chroma differently on that path.)"""
    import av

    from sta_deploy.video.clips import load_views
    from sta_deploy.video.synthetic import moving_shapes

    path = tmp_path / "odd.webm"
    frames = np.ascontiguousarray(moving_shapes(20, 36, 46, seed=5)[:, :35, :45])
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=25)
        stream.width, stream.height, stream.pix_fmt = 45, 35, "yuv420p"
        stream.options = {"deadline": "realtime", "cpu-used": "8"}
        for packet in [p for frame in frames for p in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24"))] + list(stream.encode()):
            container.mux(packet)
    done = _run(app, model, path, "--json", "--save-views", tmp_path)
    assert done.returncode == 0, done.stderr
    expected = load_views(path, _protocol(model, "k400"))
    assert json.loads(done.stdout)["results"][0]["frames"] == expected.total_frames == 20
    assert np.load(tmp_path / "odd.webm.pixels.npy").shape == expected.pixels.shape


def _one_error_line(done: subprocess.CompletedProcess, code: int = 1) -> str:
    lines = done.stderr.splitlines()
    assert done.returncode == code and len(lines) == 1 and lines[0].startswith("classify: error: "), (done.returncode, done.stderr)
    return lines[0]


def test_wrong_model_input_shape_is_one_line(app, model, clips, tmp_path):
    document = json.loads(model.with_name("tiny.protocol.json").read_text())
    document["input"]["shape"] = [2, 3, 16, 32, 32]
    for protocol in document["protocols"].values():
        protocol["crop_size"] = 32
    (tmp_path / "other.protocol.json").write_text(json.dumps(document))
    line = _one_error_line(_run(app, model, clips[0], "--protocol", tmp_path / "other.protocol.json"))
    assert "takes views of (3, 16, 64, 64)" in line and "samples (3, 16, 32, 32)" in line and "sta-deploy protocol" in line
    np.save(tmp_path / "small.npy", np.zeros((2, 3, 16, 32, 32), np.float32))
    line = _one_error_line(_run(app, model, tmp_path / "small.npy"))
    assert "holds (2, 3, 16, 32, 32) but the model takes views of (3, 16, 64, 64)" in line


def test_missing_plugin_library_and_protocol_file_are_one_line(app, model, clips, tmp_path):
    line = _one_error_line(_run(app, model, clips[0], "--plugin-lib", tmp_path / "libnothere.so"))
    assert f"plugin library {tmp_path / 'libnothere.so'} does not exist" in line
    lone = tmp_path / "lone.onnx"
    shutil.copy(model, lone)
    line = _one_error_line(_run(app, lone, clips[0]))
    assert "no protocol file" in line and "sta-deploy protocol" in line


def test_plugin_mode_export_on_openvino_is_one_line(app, model, clips, tmp_path):
    """OpenVINO has no STAStageSelect: a --sta-impl plugin graph is refused with the way out."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("STAStageSelect", ["video"], ["logits"], domain="sta_deploy")
    graph = helper.make_graph([node], "plugin", [helper.make_tensor_value_info("video", TensorProto.FLOAT, [2, 3, 16, 64, 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 7])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("sta_deploy", 1)]), tmp_path / "plugin.onnx")
    shutil.copy(model.with_name("tiny.protocol.json"), tmp_path / "plugin.protocol.json")
    line = _one_error_line(_run(app, tmp_path / "plugin.onnx", clips[0]))
    assert "STAStageSelect" in line and "--sta-impl onnx" in line


@pytest.mark.parametrize("args, message", [(["--frobnicate"], "unknown option --frobnicate"), (["--views", "3by2"], "views must look like TxS"),
                                           (["--top", "0"], "--top takes an integer in 1..100"), (["--backend", "cuda"], "--backend is openvino or tensorrt")])
def test_usage_errors_are_one_line_and_exit_2(app, model, clips, args, message):
    assert message in _one_error_line(_run(app, model, clips[0], *args), code=2)


def test_protocol_file_holds_predicts_protocols(model):
    """sta-deploy protocol writes what predict --onnx samples with, for every dataset, and the class names."""
    document = json.loads(model.with_name("tiny.protocol.json").read_text())
    assert document["format"] == "sta_deploy.protocol" and (document["model"], document["r1"], document["num_classes"]) == ("vit_s", 4, 7)
    assert document["input"]["shape"] == [2, 3, 16, 64, 64]
    assert document["protocols"] == {dataset: _protocol(model, dataset).as_dict() for dataset in ("k400", "ssv2")}
    assert document["labels"] == [f"class_{i}" for i in range(7)] and document["labels_source"] == "class indices"


# ----------------------------------------------------------------------------- TensorRT
def test_tensorrt_backend_compiles_against_tensorrt_headers(build):
    root = tensorrt_root()
    if root is None:
        pytest.skip("TensorRT headers not found: set TensorRT_ROOT to a folder with include/NvInferRuntime.h")
    if nvcc_path() is None:
        pytest.skip("the CUDA toolkit is not found (the TensorRT backend includes cuda_runtime_api.h)")
    assert "TensorRT backend compile-checked only" in build.log or "tensorrt" in build.log.split("backends:")[-1], build.log


def _gpu_available() -> bool:
    return shutil.which("nvidia-smi") is not None and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def test_tensorrt_backend_classifies_on_a_gpu(build, model, clips, cli, tmp_path):
    """GPU suite: an engine built from the tiny export gives predict --onnx's top classes (TF32 tolerance)."""
    if "tensorrt" not in build.log.split("backends:")[-1].split(";")[0]:
        pytest.skip("classify was built without the TensorRT backend (needs TensorRT with libnvinfer and the CUDA toolkit)")
    if not _gpu_available() or importlib.util.find_spec("tensorrt") is None:
        pytest.skip("needs a GPU and the tensorrt Python package (sta-deploy build)")
    plan = tmp_path / "tiny.plan"
    assert cli("build", model, "-o", plan)[0] == 0
    shutil.copy(model.with_name("tiny.protocol.json"), tmp_path / "tiny.protocol.json")
    done = _run(build.folder / "classify", plan, *clips, "--json", "--top", "7")
    assert done.returncode == 0, done.stderr
    code, out, _ = cli("predict", *clips, "--onnx", model, "--json", "--top", "7")
    assert code == 0
    for a, b in zip(json.loads(done.stdout)["results"], json.loads(out)["results"], strict=True):
        ours = {t["class"]: t["score"] for t in a["top"]}
        assert all(abs(ours[t["class"]] - t["score"]) < 2e-3 for t in b["top"]), (a, b)
