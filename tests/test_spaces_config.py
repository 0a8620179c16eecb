"""The Space configuration: README front matter, hardware presets and the requirements.txt check."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from huggingface_hub import SpaceCard, SpaceHardware  # noqa: E402

from spaces_config import build_space, runtime  # noqa: E402
from spaces_config.build_space import SpaceConfigError, check_requirements, render_readme  # noqa: E402
from spaces_config.presets import PRESETS, PresetError, current_preset  # noqa: E402

GRADIO = importlib.metadata.version("gradio")
SCRIPT = ROOT / "spaces_config" / "build_space.py"


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


# --- README ------------------------------------------------------------------------------------------------


def test_rendered_readme_is_valid_space_metadata(tmp_path):
    out = tmp_path / "space" / "README.md"
    result = run_script("--out", str(out), "--hardware", "zero-a10g")
    assert result.returncode == 0, result.stderr
    card = SpaceCard.load(out)
    data = card.data.to_dict()
    assert data["sdk"] == "gradio"
    assert data["sdk_version"] == GRADIO
    assert data["app_file"] == "app.py" and (ROOT / data["app_file"]).is_file()
    assert data["hf_oauth"] is True
    assert data["hf_oauth_scopes"] == ["contribute-repos"]  # creates and writes its own repos, nothing else
    assert data["suggested_hardware"] == "a10g-small"  # ZeroGPU itself cannot be suggested to duplicates
    assert data["python_version"] == "3.10.13"  # the one Python ZeroGPU runs

    pins = check_requirements(out.parent / "requirements.txt", GRADIO)  # written beside the README, checked
    assert pins["torch"][1] in runtime.ZERO_GPU_TORCH and pins["torchvision"][1] == "0.23.0"
    assert {key: version for key, (_, version) in pins.items() if key in runtime.ZERO_GPU_PINS} == runtime.ZERO_GPU_PINS
    project = check_requirements(ROOT / "requirements.txt", GRADIO)
    assert set(pins) == set(project)  # the same packages, only the versions ZeroGPU needs differ
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in data["models"]
    assert data["datasets"] and data["tags"]
    assert len(data["short_description"]) <= 60
    assert "/render" in card.text and "cpu-basic" in card.text  # the body documents the API and the caps


def test_header_lists_the_apps_models_and_dataset():
    from vit_feature_viz.app.common import DEFAULT_DATASET, WELL_KNOWN_MODELS

    data = SpaceCard(render_readme("cpu-basic")).data
    assert data.models == WELL_KNOWN_MODELS
    assert DEFAULT_DATASET in data.datasets
    assert "suggested_hardware" not in data.to_dict()  # the free default: nothing to suggest
    assert data.python_version == f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.mark.parametrize("hardware", list(PRESETS))
def test_every_preset_suggests_hardware_a_duplicate_can_get(hardware):
    data = SpaceCard(render_readme(hardware)).data.to_dict()
    known = {h.value for h in SpaceHardware}
    assert data.get("suggested_hardware", "none") in known - {"zero-a10g", "cpu-basic"} | {"none"}
    bad = {**data, "suggested_hardware": "zero-a10g"}
    with pytest.raises(SpaceConfigError, match="suggested_hardware must be a flavor a duplicate can get"):
        build_space.validate_metadata(bad)


def test_cpu_space_gets_the_project_pins(tmp_path):
    result = run_script("--out", str(tmp_path / "README.md"), "--hardware", "cpu-basic")
    assert result.returncode == 0, result.stderr
    assert check_requirements(tmp_path / "requirements.txt", GRADIO) == check_requirements(ROOT / "requirements.txt", GRADIO)


def test_zero_gpu_refuses_its_unsupported_python_and_torch():
    pins = {"torch": ("torch", "2.14.1")}
    with pytest.raises(SpaceConfigError, match="ZeroGPU does not support torch==2.14.1: pin one of 2.1.0"):
        build_space.check_zero_gpu(pins, runtime.ZERO_GPU_PYTHON)
    with pytest.raises(SpaceConfigError, match="ZeroGPU runs Python 3.10.13, not 3.11"):
        build_space.check_zero_gpu({"torch": ("torch", "2.8.0")}, "3.11")
    build_space.check_zero_gpu({"torch": ("torch", "2.8.0")}, "3.10.13")


def test_oauth_scopes_must_be_the_least_pushing_needs():
    data = SpaceCard(render_readme()).data.to_dict()
    for scopes in (["write-repos"], ["contribute-repos", "manage-repos"], ["read-repos", "contribute-repos"]):
        with pytest.raises(SpaceConfigError, match=r"must be exactly \['contribute-repos'\]"):
            build_space.validate_metadata({**data, "hf_oauth_scopes": scopes})


def test_unknown_oauth_scope_is_refused():
    data = SpaceCard(render_readme()).data.to_dict()
    data["hf_oauth_scopes"] = ["write-repo"]
    with pytest.raises(SpaceConfigError, match="unknown OAuth scope"):
        build_space.validate_metadata(data)


# --- requirements.txt ------------------------------------------------------------------------------------


GOOD = f"""# comment
--extra-index-url https://download.pytorch.org/whl/cpu
torch==2.14.1
torchvision==0.29.1  # inline comment
gradio=={GRADIO}
"""


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text(text)
    return path


def test_repo_requirements_pass():
    path = ROOT / "requirements.txt"
    if not path.exists():
        pytest.skip("requirements.txt not written yet")
    pins = check_requirements(path)
    assert pins["gradio"][1] == GRADIO
    result = run_script("--check-only")
    assert result.returncode == 0, result.stderr


def test_good_temp_requirements_pass(tmp_path):
    pins = check_requirements(write(tmp_path, GOOD), GRADIO, pyproject=None)
    assert set(pins) == {"torch", "torchvision", "gradio"}


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD + "numpy\n", "'numpy' is not pinned"),
        (GOOD + "pillow>=10\n", "'pillow>=10' is not pinned"),
        (GOOD + "gradio==6.0.0\n", "gradio is pinned twice"),
        (GOOD.replace(f"gradio=={GRADIO}", "gradio==6.0.0"), f"sdk_version is {GRADIO}"),
        (GOOD.replace(f"gradio=={GRADIO}\n", ""), "does not pin gradio"),
        (GOOD.replace("torchvision==0.29.1", "torchvision==0.28.0"), "are not a pair: use torchvision 0.29.x"),
        (GOOD.replace("torch==2.14.1\n", ""), "pins torchvision but not torch"),
        (GOOD + "-e .\n", "'-e .' is not pinned"),
        (GOOD + "numpy==2.*\n", "'numpy==2.*' is not pinned"),
        (GOOD + "numpy>=2,==2.1\n", "'numpy>=2,==2.1' is not pinned"),
        (GOOD + "numpy @ https://example.org/numpy.whl\n", "is not pinned"),
    ],
)
def test_bad_requirements_fail_with_one_line(tmp_path, text, message):
    with pytest.raises(SpaceConfigError, match=re.escape(message)) as err:
        check_requirements(write(tmp_path, text), GRADIO, pyproject=None)
    assert "\n" not in str(err.value)


def test_requirements_must_cover_the_package_dependencies(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["torch>=2.4", "numpy>=1.26"]\n')
    with pytest.raises(SpaceConfigError, match="does not pin numpy"):
        check_requirements(write(tmp_path, GOOD), GRADIO, pyproject=pyproject)
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["torch>=2.15"]\n')
    with pytest.raises(SpaceConfigError, match="needs torch>=2.15"):
        check_requirements(write(tmp_path, GOOD), GRADIO, pyproject=pyproject)


def test_installed_metadata_catches_conflicting_pins(tmp_path):
    # gradio GRADIO is installed here and declares its gradio_client version: a different pin must fail
    client = importlib.metadata.version("gradio_client")
    wrong = "0.0.1" if client != "0.0.1" else "0.0.2"
    with pytest.raises(SpaceConfigError, match=f"gradio=={GRADIO} needs gradio.client"):
        check_requirements(write(tmp_path, GOOD + f"gradio_client=={wrong}\n"), GRADIO, pyproject=None)


def test_script_exits_nonzero_with_one_line(tmp_path):
    bad = write(tmp_path, "torch\n")
    result = run_script("--check-only", "--requirements", str(bad))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: requirements.txt:1: 'torch' is not pinned")


# --- presets -----------------------------------------------------------------------------------------------


def test_preset_selection_from_env():
    assert current_preset({}).name == "cpu-basic"
    assert current_preset({"SPACES_ZERO_GPU": "true"}).name == "zero-a10g"
    assert current_preset({"VFV_HARDWARE": "h100", "SPACES_ZERO_GPU": "true"}).name == "h100"
    assert set(PRESETS) >= {"cpu-basic", "zero-a10g", "t4-small", "a10g-small", "h100"}


def test_preset_overrides_and_errors():
    preset = current_preset({"VFV_HARDWARE": "t4-small", "VFV_MAX_STEPS": "7", "VFV_CONCURRENCY": "3"})
    assert (preset.name, preset.max_steps, preset.concurrency) == ("t4-small", 7, 3)
    assert preset.max_features == PRESETS["t4-small"].max_features
    assert current_preset({}).max_gallery_rows == 300_000  # what the Explore galleries tab opens on cpu-basic
    assert current_preset({"VFV_MAX_GALLERY_ROWS": "5000"}).max_gallery_rows == 5000
    with pytest.raises(PresetError, match="Unknown hardware preset 'tpu'"):
        current_preset({"VFV_HARDWARE": "tpu"})
    with pytest.raises(PresetError, match="VFV_MAX_STEPS='-3' is not a positive whole number"):
        current_preset({"VFV_MAX_STEPS": "-3"})


def test_caps_grow_with_the_hardware_and_gpu_duration_is_bounded():
    cpu, zero, h100 = PRESETS["cpu-basic"], PRESETS["zero-a10g"], PRESETS["h100"]
    assert cpu.max_steps < zero.max_steps < h100.max_steps
    assert cpu.max_features < zero.max_features < h100.max_features
    assert zero.zero_gpu and not cpu.zero_gpu
    small, big = zero.gpu_duration(1, 10), zero.gpu_duration(16, 512)
    assert 20 <= small < big <= zero.max_gpu_seconds
    assert zero.gpu_duration(2, 256) > zero.gpu_duration(1, 256)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_starts_the_render_tab_on_a_recipe_within_its_caps(name):
    from vit_feature_viz.app.render_tab import preset_defaults
    from vit_feature_viz.core.recipes import DEFAULT_RECIPE, RECIPES

    preset = PRESETS[name]
    recipe, steps = preset_defaults(preset)
    assert recipe in RECIPES and 1 <= steps <= preset.max_steps
    if preset.default_recipe is None:  # GPUs: the library's default at its own steps
        assert (recipe, steps) == (DEFAULT_RECIPE, min(RECIPES[DEFAULT_RECIPE].steps, preset.max_steps))


def test_cpu_basic_starts_on_the_measured_preview_setting():
    """README (On a real trained ViT): `fast-std` at 96 steps is the setting benchmarks/bench_real.py's step curve
    measured for a CPU Space."""
    from vit_feature_viz.app.render_tab import preset_defaults

    assert preset_defaults(PRESETS["cpu-basic"]) == ("fast-std", 96)
    assert preset_defaults(dataclasses.replace(PRESETS["cpu-basic"], max_steps=50)) == ("fast-std", 50)
