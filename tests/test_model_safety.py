"""Checkpoints that try to get past the pickle refusal or the size cap, by Hub name (offline cache and the loopback
Hub) and by folder. Each loads real weights with the real libraries; the checks must hold for every backend."""

import json
import shutil
import struct
from pathlib import Path

import pytest
import safetensors.torch
import torch
from huggingface_hub import HfApi

import tiny_checkpoints as tiny
from vit_feature_viz import VizError, load_model
from vit_feature_viz.models.hub_files import CheckpointFiles
from vit_feature_viz.models.loader import detect_backend
from vit_feature_viz.models.size import check_files_size


def check_model_size(name_or_path: str, *, max_parameters: int) -> int:
    """The size check `load_model` runs before any weight is fetched, on its own (the largest estimate found)."""
    files = CheckpointFiles(str(name_or_path).strip(), None, None)
    backend, config = detect_backend(files)
    return check_files_size(files, backend, config, max_parameters)


def _shifted(state: dict) -> dict:
    """Other weights of the same shapes: which file was loaded shows in the values."""
    return {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}


def _open_clip_bypass(out: Path) -> None:
    """The issue's repo: a model.safetensors beside open_clip_pytorch_model.bin, which open_clip prefers."""
    tiny.build_open_clip(out)
    (out / "open_clip_model.safetensors").rename(out / "model.safetensors")
    torch.save(_shifted(safetensors.torch.load_file(out / "model.safetensors")), out / "open_clip_pytorch_model.bin")


def _timm_bypass(out: Path) -> None:
    """timm's pretrained_cfg may name its own weight file, which timm then loads from the Hub."""
    tiny.build_timm_vit(out)
    torch.save(_shifted(safetensors.torch.load_file(out / "model.safetensors")), out / "weights.bin")
    config = json.loads((out / "config.json").read_text())
    config["pretrained_cfg"]["hf_hub_filename"] = "weights.bin"
    (out / "config.json").write_text(json.dumps(config))


def _transformers_bypass(out: Path) -> None:
    tiny.build_vit_model(out)
    torch.save(_shifted(safetensors.torch.load_file(out / "model.safetensors")), out / "pytorch_model.bin")


BYPASSES = {
    "open_clip": ("tiny-org/open-clip-bypass", _open_clip_bypass),
    "timm": ("timm/vit_tiny_bypass.random", _timm_bypass),
    "transformers": ("tiny-org/vit-bypass", _transformers_bypass),
}


@pytest.fixture(scope="module")
def bypass_folders(tmp_path_factory, hub_cache_dir):
    folders = {}
    for backend, (repo_id, build) in BYPASSES.items():
        out = tmp_path_factory.mktemp(backend)
        torch.manual_seed(0)
        build(out)
        tiny.place_in_cache(out, hub_cache_dir, repo_id)
        folders[backend] = out
    return folders


@pytest.mark.parametrize("by", ["name", "folder"])
@pytest.mark.parametrize("backend", list(BYPASSES))
@pytest.mark.parametrize("allow_pickle", [False, True])
def test_the_checked_safetensors_file_is_the_one_loaded(bypass_folders, backend, by, allow_pickle):
    folder = bypass_folders[backend]
    model = load_model(BYPASSES[backend][0] if by == "name" else str(folder), device="cpu", allow_pickle=allow_pickle)
    safe = safetensors.torch.load_file(folder / "model.safetensors")
    loaded = model.module.state_dict()
    compared = [k for k in safe if safe[k].is_floating_point() and k in loaded]
    assert compared, sorted(loaded)[:5]
    for key in compared:
        assert torch.equal(loaded[key], safe[key]), f"{key} came from the pickle file"


def test_a_pickle_only_open_clip_repo_is_refused(tmp_path):
    _open_clip_bypass(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(VizError, match=r"only has pickle weights \(open_clip_pytorch_model.bin\).*--allow-pickle"):
        load_model(str(tmp_path), device="cpu")


# --- size cap ---------------------------------------------------------------------------------------------------
VIT_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)


def _declares_vit_large(out: Path) -> None:
    """A few KB: the config of a ViT-L beside the tiny model's weights."""
    tiny.build_vit_model(out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, **VIT_LARGE}))


def _timm_names_vit_large(out: Path) -> None:
    """A timm config naming only an architecture: its size is the architecture's default."""
    tiny.build_timm_vit(out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({"architecture": "vit_large_patch16_224", "pretrained_cfg": config["pretrained_cfg"]}))


def _header_claims_a_huge_tensor(out: Path) -> None:
    """A small config, and a weight file whose header lists 2 billion values (without holding them)."""
    tiny.build_vit_model(out)
    header = json.dumps({"embeddings.huge": {"dtype": "F32", "shape": [50_000, 40_000], "data_offsets": [0, 0]}}).encode()
    (out / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)


CAP = 10_000_000
TOO_LARGE = [
    (_declares_vit_large, r"about 302M parameters \(as its config declares\), more than the 10M allowed here"),
    (_timm_names_vit_large, r"about 304M parameters \(its timm architecture\)"),
    (_header_claims_a_huge_tensor, r"about 2,000M parameters \(in its weight files\)"),
]


@pytest.mark.parametrize("build,message", TOO_LARGE, ids=[b.__name__ for b, _ in TOO_LARGE])
def test_too_large_checkpoints_are_refused_from_small_files(tmp_path, hub_cache_dir, build, message):
    build(tmp_path)
    repo = f"tiny-org/size-{build.__name__.strip('_')}"
    tiny.place_in_cache(tmp_path, hub_cache_dir, repo)
    for name in (repo, str(tmp_path)):
        with pytest.raises(VizError, match=message) as err:
            load_model(name, device="cpu", max_parameters=CAP)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("role", ["vit", "clip", "timm_vit", "open_clip", "dinov2", "siglip"])
def test_tiny_checkpoints_pass_the_cap_with_a_close_estimate(tiny_repos, role):
    model = load_model(tiny_repos[role], device="cpu", max_parameters=CAP)
    actual = sum(p.numel() for p in model.module.parameters())
    estimate = check_model_size(tiny_repos[role], max_parameters=CAP)
    assert actual / 3 <= estimate <= actual * 3, (estimate, actual)
    with pytest.raises(VizError, match="more than the 1,000 allowed here"):
        check_model_size(tiny_repos[role], max_parameters=1000)


def _push_model(hub, repo_id: str, folder: Path) -> None:
    api = HfApi(token=hub.write_token)
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=folder)


def test_on_the_hub_a_large_config_is_refused_before_the_weights_are_requested(tmp_path, hub):
    _declares_vit_large(tmp_path / "repo")
    _push_model(hub, "alice/declares-vit-large", tmp_path / "repo")
    hub.requests.clear()
    with pytest.raises(VizError, match="as its config declares"):
        load_model("alice/declares-vit-large", device="cpu", max_parameters=CAP)
    asked = [path for _, path, _ in hub.requests]
    assert any(p.endswith("/config.json") for p in asked), asked
    assert not [p for p in asked if "safetensors" in p], asked


def test_on_the_hub_a_weight_header_is_read_with_a_range_request_only(tmp_path, hub):
    _header_claims_a_huge_tensor(tmp_path / "repo")
    _push_model(hub, "alice/huge-header", tmp_path / "repo")
    hub.requests.clear()
    with pytest.raises(VizError, match="in its weight files"):
        load_model("alice/huge-header", device="cpu", max_parameters=CAP)
    weight_gets = [status for method, path, status in hub.requests if method == "GET" and path.endswith("model.safetensors")]
    assert weight_gets and set(weight_gets) == {206}, hub.requests
    assert not list(Path(tmp_path).glob("hf-home/hub/models--alice--huge-header/snapshots/*/model.safetensors"))


def test_on_the_hub_a_model_under_the_cap_loads(tmp_path, hub):
    tiny.build_vit_model(tmp_path / "repo")
    _push_model(hub, "alice/tiny-vit", tmp_path / "repo")
    assert load_model("alice/tiny-vit", device="cpu", max_parameters=CAP).num_layers == 4
