"""Write the Space's README.md (front matter + short body) and requirements.txt, and check that the pins work together.

    python spaces_config/build_space.py --out space/README.md [--hardware zero-a10g] [--requirements requirements.txt]
    python spaces_config/build_space.py --check-only

`--out` writes README.md there and the Space's requirements.txt beside it: the project's pins with the
hardware's overrides (ZeroGPU runs Python 3.10.13 and older torch builds: see runtime.py).
Exits 0 on success; otherwise prints one line naming the problem and exits 1. Checks on requirements.txt:
every requirement pinned with `==` (comments, blank lines and index options allowed), no duplicates, gradio
pinned to the README's sdk_version, torch and torchvision a released pair, every dependency of
vit-feature-viz (pyproject.toml) pinned within its range, and, for pins installed here at the pinned version,
their own declared dependencies satisfied by the other pins.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HEADER = HERE / "space_header.yaml"

# https://huggingface.co/docs/hub/oauth: openid and profile are always granted and must not be listed.
OAUTH_SCOPES = {"email", "read-billing", "read-repos", "contribute-repos", "write-repos", "manage-repos",
                "inference-api", "jobs", "webhooks", "write-discussions"}
# The least that pushing a gallery needs: contribute-repos creates repos and writes to the ones this app created,
# and cannot read or change any other repo of the visitor (write-repos / manage-repos would reach all of them).
PUSH_SCOPES = ["contribute-repos"]
COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
OPTION_LINES = ("--extra-index-url", "--index-url", "--find-links", "-f ", "--trusted-host")


class SpaceConfigError(Exception):
    """One line saying what is wrong and how to fix it."""


# ------------------------------------------------------------------------------------------------ README


def gradio_version() -> str:
    return importlib.metadata.version("gradio")


def front_matter(hardware: str = "zero-a10g", sdk_version: str | None = None) -> dict:
    """The Space metadata: space_header.yaml plus sdk_version, python_version (what the hardware runs) and
    suggested_hardware (for duplicates; left out for the free CPU)."""
    from huggingface_hub import SpaceHardware

    from spaces_config import runtime
    from spaces_config.presets import get_preset

    data = yaml.safe_load(HEADER.read_text(encoding="utf-8"))
    data["sdk_version"] = sdk_version or gradio_version()
    preset = get_preset(hardware)
    data["python_version"] = runtime.python_version(preset.zero_gpu)
    if preset.hub_hardware not in {h.value for h in SpaceHardware}:
        raise SpaceConfigError(f"Preset {hardware} names hardware '{preset.hub_hardware}' that the Hub does not know.")
    suggested = runtime.suggested_hardware(preset.hub_hardware)
    if suggested:
        data["suggested_hardware"] = suggested
    validate_metadata(data)
    return data


def validate_metadata(data: dict) -> None:
    """Checks the Hub would make on a gradio Space's front matter (the ones we rely on)."""
    from spaces_config import runtime

    def need(ok: bool, message: str):
        if not ok:
            raise SpaceConfigError(message)

    need(data.get("sdk") == "gradio", "Front matter: sdk must be gradio.")
    need(bool(re.fullmatch(r"\d+\.\d+\.\d+", str(data.get("sdk_version", "")))), "Front matter: sdk_version must be X.Y.Z.")
    need(bool(data.get("app_file")) and (ROOT / data["app_file"]).is_file(), "Front matter: app_file must name a file in the repo.")
    need(data.get("hf_oauth") is True, "Front matter: hf_oauth must be true (sign-in is how visitors push).")
    scopes = data.get("hf_oauth_scopes") or []
    bad = [s for s in scopes if s not in OAUTH_SCOPES]
    need(not bad, f"Front matter: unknown OAuth scope {bad[:1]}: use some of {sorted(OAUTH_SCOPES)}.")
    need(scopes == PUSH_SCOPES, f"Front matter: hf_oauth_scopes must be exactly {PUSH_SCOPES}, the least that pushing"
                                " a gallery needs (creating the repo and writing to it).")
    hardware = runtime.suggestable_hardware()
    need(data.get("suggested_hardware") in hardware | {None},
         f"Front matter: suggested_hardware must be a flavor a duplicate can get, one of {sorted(hardware)}, or absent.")
    need(len(str(data.get("short_description", ""))) <= 60, "Front matter: short_description must be at most 60 characters.")
    need(data.get("colorFrom") in COLORS and data.get("colorTo") in COLORS, f"Front matter: colors must be among {sorted(COLORS)}.")
    for key in ("models", "datasets"):
        bad = [r for r in data.get(key) or [] if not REPO_ID.match(str(r))]
        need(not bad, f"Front matter: {key} entry {bad[:1]} is not an 'org/name' repo id.")


def readme_body(data: dict) -> str:
    from spaces_config.presets import PRESETS

    rows = "\n".join(
        f"| {p.name} | {p.max_steps} | {p.max_features} | {p.max_image_size} | {p.max_scan_images} | {p.concurrency} |"
        for p in PRESETS.values()
    )
    models = ", ".join(f"`{m}`" for m in data.get("models", []))
    return f"""
# {data["title"]}

Render the images that most activate an MLP feature of any ViT or CLIP checkpoint on the Hub (Ghiasi et al.
2022), find the dataset images that activate it most with patch-wise activation maps, and push the gallery
to your own Hub namespace (sign in with Hugging Face first). Try {models}, or any other ViT/CLIP id.

## API

```python
from gradio_client import Client, handle_file
client = Client("<owner>/<space>")
client.predict("google/vit-base-patch16-224", api_name="/layers")
images, table = client.predict("google/vit-base-patch16-224", 5, "0-3", "feature", "paper", 64, 0, 0,
                               api_name="/render")
overlay = client.predict("google/vit-base-patch16-224", 5, 7, handle_file("cat.png"), api_name="/patch_map")
```

## Hardware and caps per request

The app reads `VFV_HARDWARE` (default: ZeroGPU when the Space runs on it, else cpu-basic) and rejects requests
over these caps with a message naming the cap; `VFV_MAX_STEPS` etc. override single caps.

| preset | max steps | max features | max image size | max dataset images | concurrent jobs |
| --- | --- | --- | --- | --- | --- |
{rows}
"""


def render_readme(hardware: str = "zero-a10g", sdk_version: str | None = None) -> str:
    data = front_matter(hardware, sdk_version)
    header = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return f"---\n{header}---\n{readme_body(data)}"


# ------------------------------------------------------------------------------------------ requirements


def read_pins(path: Path) -> dict[str, tuple[str, str]]:
    """canonical name -> (name as written, version) for every requirement line, or SpaceConfigError.

    Each line is parsed by `packaging` (the grammar pip uses) and must pin one exact version with `==`.
    """
    if not path.is_file():
        raise SpaceConfigError(f"{path} does not exist: write a requirements.txt with name==version lines.")
    pins: dict[str, tuple[str, str]] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#") or line.startswith(OPTION_LINES):
            continue
        name, version = _exact_pin(line, f"{path.name}:{number}")
        key = canonicalize_name(name)
        if key in pins:
            raise SpaceConfigError(f"{path.name}:{number}: {name} is pinned twice: keep one line.")
        pins[key] = (name, version)
    if not pins:
        raise SpaceConfigError(f"{path.name} pins nothing: list the app's dependencies as name==version.")
    return pins


def _exact_pin(line: str, where: str) -> tuple[str, str]:
    """(name, version) of a `name==version` requirement line."""
    not_pinned = SpaceConfigError(f"{where}: '{line}' is not pinned: write it as name==version.")
    try:
        requirement = Requirement(line)
    except InvalidRequirement:
        raise not_pinned from None
    specifiers = list(requirement.specifier)
    if requirement.url or len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
        raise not_pinned
    try:
        Version(specifiers[0].version)
    except InvalidVersion:
        raise SpaceConfigError(f"{where}: '{specifiers[0].version}' is not a version number.") from None
    return requirement.name, specifiers[0].version


def space_requirements(project: Path, hardware: str) -> str:
    """The Space's requirements.txt: the project's pins, with the versions the hardware supports (runtime.py)."""
    from spaces_config import runtime
    from spaces_config.presets import get_preset

    overrides = runtime.ZERO_GPU_PINS if get_preset(hardware).zero_gpu else {}
    pins = read_pins(project)
    lines = [f"# Written by spaces_config/build_space.py for {hardware} from {project.name}; do not edit."]
    for key, (name, version) in pins.items():
        lines.append(f"{name}=={overrides.get(key, version)}")
    return "\n".join(lines) + "\n"


def check_zero_gpu(pins: dict, python: str) -> None:
    """ZeroGPU installs only its own Python and torch builds."""
    from spaces_config import runtime

    if python != runtime.ZERO_GPU_PYTHON:
        raise SpaceConfigError(f"ZeroGPU runs Python {runtime.ZERO_GPU_PYTHON}, not {python}: set python_version to it.")
    torch = pins.get("torch", (None, None))[1]
    if torch not in runtime.ZERO_GPU_TORCH:
        raise SpaceConfigError(f"ZeroGPU does not support torch=={torch}: pin one of {', '.join(runtime.ZERO_GPU_TORCH)}.")


def check_requirements(path: Path, sdk_version: str | None = None, pyproject: Path | None = ROOT / "pyproject.toml") -> dict:
    """Raise SpaceConfigError (one line) unless the pins in `path` work together; return the pins."""
    pins = read_pins(path)
    sdk_version = sdk_version or gradio_version()
    version = {key: Version(v) for key, (_, v) in pins.items()}

    if "gradio" not in pins:
        raise SpaceConfigError(f"{path.name} does not pin gradio: add gradio=={sdk_version} (the Space's sdk_version).")
    if version["gradio"] != Version(sdk_version):
        raise SpaceConfigError(f"{path.name} pins gradio=={pins['gradio'][1]} but the Space's sdk_version is {sdk_version}: make them equal.")
    _check_torch_pair(path, pins, version)
    if pyproject is not None and pyproject.is_file():
        _check_project_dependencies(path, pyproject, pins, version)
    _check_installed_metadata(path, pins, version)
    return pins


def _check_torch_pair(path: Path, pins, version) -> None:
    """torchvision 0.N is built for torch 2.(N-15) (0.19 <-> 2.4, 0.29 <-> 2.14) and requires it exactly."""
    if "torchvision" not in pins:
        return
    if "torch" not in pins:
        raise SpaceConfigError(f"{path.name} pins torchvision but not torch: pin the torch that torchvision {pins['torchvision'][1]} was built for.")
    torch, vision = version["torch"], version["torchvision"]
    if torch.major != 2 or vision.major != 0 or vision.minor != torch.minor + 15:
        wanted = f"0.{torch.minor + 15}" if torch.major == 2 else "a matching release"
        raise SpaceConfigError(
            f"{path.name}: torch=={pins['torch'][1]} and torchvision=={pins['torchvision'][1]} are not a pair: use torchvision {wanted}.x."
        )


def _check_project_dependencies(path: Path, pyproject: Path, pins, version) -> None:
    """Every runtime dependency of the package must be pinned, inside the range pyproject.toml allows."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    for spec in project.get("dependencies", []):
        requirement = Requirement(spec)
        key = canonicalize_name(requirement.name)
        if key not in pins:
            raise SpaceConfigError(f"{path.name} does not pin {requirement.name}, which vit-feature-viz needs: add {requirement.name}==<version>.")
        if not requirement.specifier.contains(version[key], prereleases=True):
            raise SpaceConfigError(
                f"{path.name} pins {pins[key][0]}=={pins[key][1]} but vit-feature-viz needs {requirement.name}{requirement.specifier}."
            )


def _check_installed_metadata(path: Path, pins, version) -> None:
    """For pins installed here at exactly that version, their declared dependencies must accept the other pins."""
    environment = {**default_environment(), "extra": ""}
    for key, (name, pinned) in pins.items():
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if Version(dist.version) != version[key]:
            continue
        for spec in dist.requires or []:
            try:
                requirement = Requirement(spec)
            except InvalidRequirement:
                continue
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            other = canonicalize_name(requirement.name)
            if other in pins and not requirement.specifier.contains(version[other], prereleases=True):
                raise SpaceConfigError(
                    f"{path.name}: {name}=={pinned} needs {requirement.name}{requirement.specifier} but "
                    f"{pins[other][0]}=={pins[other][1]} is pinned: change one of the two."
                )


# --------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="where to write the Space README.md")
    parser.add_argument("--hardware", default="zero-a10g", help="preset whose Hub hardware is suggested")
    parser.add_argument("--requirements", type=Path, default=ROOT / "requirements.txt")
    parser.add_argument("--sdk-version", default=None, help="gradio version of the Space (default: the installed one)")
    parser.add_argument("--check-only", action="store_true", help="only check requirements.txt and the front matter")
    args = parser.parse_args(argv)
    if not args.out and not args.check_only:
        parser.error("give --out PATH, or --check-only")
    sdk_version = args.sdk_version or gradio_version()
    try:
        text = render_readme(args.hardware, args.sdk_version)
        pins = check_requirements(args.requirements, sdk_version)
        space_pins = space_requirements(args.requirements, args.hardware)
    except (SpaceConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not args.out:
        print(f"ok: {len(pins)} pins in {args.requirements.name} work together")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    requirements = args.out.parent / "requirements.txt"
    requirements.write_text(space_pins, encoding="utf-8")
    try:
        written = check_requirements(requirements, sdk_version)
        from spaces_config.presets import get_preset

        if get_preset(args.hardware).zero_gpu:
            check_zero_gpu(written, front_matter(args.hardware, args.sdk_version)["python_version"])
    except SpaceConfigError as err:
        requirements.unlink()
        print(f"error: {err}", file=sys.stderr)
        return 1
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} and {requirements} ({len(written)} pins for {args.hardware}, checked)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # `python spaces_config/build_space.py` from anywhere
    sys.exit(main())
