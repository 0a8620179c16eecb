"""Sparse autoencoders (issue 21): the training step recovers a planted dictionary, training on a real (built-in,
trained) model measures and saves the SAE into a gallery that round-trips through push/pull on the loopback Hub,
a run killed with SIGKILL resumes to the same SAE, and the `sae` objective has the gradient of its encoder row."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import torch

from helpers import CLI
from hub_fixtures import IGNORE_CLIENT_UPLOAD_WARNING
from vit_feature_viz import cli, load_model
from vit_feature_viz.core.requested import requested_objective
from vit_feature_viz.models.base import MLP, Target
from vit_feature_viz.sae.model import SaeTrainer, SparseAutoencoder
from vit_feature_viz.sae.saved import load_sae, save_sae
from vit_feature_viz.sae.train import SaeSettings, train_sae
from vit_feature_viz.store.progress import PROGRESS_DIR, STATE_FILE
from vit_feature_viz.store.sae_files import CONFIG_FILE, WEIGHTS_FILE

from gallery_fixtures import write_synthetic_gallery

BUILTIN = "vit-feature-viz/shapes-vit"
SMALL = dict(layer=3, latents=128, k=8, image_batch=16, patches_per_image=16, buffer_tokens=512, token_batch=64,
             epochs=2)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: a second thread on a busy machine only waits
    yield
    torch.set_num_threads(threads)


def test_planted_dictionary_is_recovered():
    """Tokens made of 3 of 24 planted unit atoms (positive weights, an offset): after training, each atom is
    matched by a decoder row with cosine >= 0.9, at L0 = K."""
    generator = torch.Generator().manual_seed(0)
    width, atoms, active = 16, 24, 3
    planted = torch.randn(atoms, width, generator=generator)
    planted = planted / planted.norm(dim=1, keepdim=True)

    def tokens(count):
        chosen = torch.rand(count, atoms, generator=generator).argsort(1)[:, :active]
        weights = torch.zeros(count, atoms).scatter(1, chosen, torch.rand(count, active, generator=generator) * 2 + 0.5)
        return weights @ planted + 0.3

    sae = SparseAutoencoder(width, 64, active + 1, seed=1)
    sae.start_from(tokens(2048))
    trainer = SaeTrainer(sae, lr=3e-3, dead_after=4000)
    for _ in range(400):
        last = trainer.step(tokens(256))
    best = (planted @ sae.W_dec.detach().T).max(1).values
    assert best.min() >= 0.9, best
    assert last["l0"] <= active + 1 and last["fve"] > 0.9
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)  # decoder rows stay unit norm


@pytest.fixture(scope="module")
def builtin_model():
    return load_model(BUILTIN, device="cpu")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> str:
    """64 labelled images of the procedural shapes the built-in model was trained on, as a saved dataset folder:
    opened in a moment, also by a CLI process (the built-in split of 1,200 images takes seconds to draw)."""
    from vit_feature_viz.data.shapes import shapes_dataset

    folder = tmp_path_factory.mktemp("shapes") / "shapes-64"
    shapes_dataset(64, variant="shape", seed=5).save_to_disk(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def trained(builtin_model, shapes, tmp_path_factory):
    """A small SAE on block 3 of the built-in shapes model, saved in a gallery that also holds rendered rows."""
    gallery = write_synthetic_gallery(tmp_path_factory.mktemp("sae") / "gallery", layers=1, features=2)
    saved = train_sae(builtin_model, shapes, gallery, SaeSettings(**SMALL), eval_images=32, progress=False)
    return gallery, saved


def test_training_measures_and_saves_into_the_gallery(trained, builtin_model):
    gallery, saved = trained
    config = saved.config
    assert saved.folder == gallery / "sae" / "3-fc1"
    assert {p.name for p in saved.folder.iterdir()} == {WEIGHTS_FILE, CONFIG_FILE}
    assert not (gallery / PROGRESS_DIR).exists()  # the checkpoint goes once the SAE is saved
    assert (config["model_id"], config["layer"], config["site"], config["k"], config["latents"]) == (BUILTIN, 3, "fc1", 8, 128)
    metrics = config["metrics"]
    assert metrics["l0"] == pytest.approx(8.0)  # TopK: exactly K (every kept value of a trained SAE is > 0 here)
    assert 0.2 < metrics["fve"] <= 1.0 and 0 <= metrics["dead_latents"] < 128
    assert metrics["eval_images"] == 32 and metrics["eval_tokens"] == 32 * 64
    assert 0 < metrics["accuracy"] <= 1 and metrics["accuracy_drop"] == pytest.approx(
        metrics["accuracy"] - metrics["accuracy_spliced"])
    assert config["normalization"]["scale"] > 0
    loaded = load_sae(gallery, 3)
    for name, tensor in saved.sae.state_dict().items():
        assert torch.equal(tensor, loaded.sae.state_dict()[name]), name
    pixels = torch.rand(2, 3, 64, 64)
    acts = builtin_model.activations(pixels, [Target(MLP, 3)]).patches(Target(MLP, 3))
    assert torch.equal(saved.sae.reconstruct(acts), loaded.sae.reconstruct(acts))


@IGNORE_CLIENT_UPLOAD_WARNING
def test_the_sae_travels_with_its_gallery_through_the_hub(trained, hub, tmp_path):
    from vit_feature_viz.store.hub import pull_gallery, push_gallery

    gallery, saved = trained
    push_gallery(gallery, "alice/shapes-sae", token=hub.write_token)
    pulled = pull_gallery("alice/shapes-sae", tmp_path / "copy")
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        assert (pulled / "sae" / "3-fc1" / name).read_bytes() == (saved.folder / name).read_bytes()
    from_hub = load_sae("alice/shapes-sae", 3)  # by the gallery's Hub id: only its sae/3-fc1/ files are fetched
    assert from_hub.config == saved.config
    assert torch.equal(from_hub.sae.W_enc, saved.sae.W_enc)


def test_sae_objective_reads_the_encoder_row_with_its_gradient(tiny_repos, tmp_path):
    """On a tiny random ViT: the objective is the latent's pre-activation of the mean patch token, its gradient
    reaches the pixels, and rendering raises it."""
    from vit_feature_viz import render

    model = load_model(tiny_repos["vit"], device="cpu")
    width = model.width(Target(MLP, 0))
    sae = SparseAutoencoder(width, 3 * width, 4, seed=2)
    sae.start_from(torch.randn(64, width))
    saved = save_sae(sae, tmp_path / "gallery", {"model_id": model.model_id, "layer": 0, "site": "fc1"})
    objective = requested_objective("sae", 0, sae=str(tmp_path / "gallery"))
    assert objective.name == f"sae(fc1 {saved.short_hash})" and objective.num_channels(model) == 3 * width
    pixels = torch.rand(2, 3, model.image_size, model.image_size, requires_grad=True)
    acts = model.activations(pixels, objective.needs)
    scores = objective(acts, torch.tensor([5, 7]))
    mean_token = acts.patches(Target(MLP, 0)).float().mean(1)
    by_hand = (mean_token * sae.scale - sae.b_pre) @ sae.W_enc[:, [5, 7]] + sae.b_enc[[5, 7]]
    assert torch.allclose(scores, by_hand.diagonal(), atol=1e-5)
    scores.sum().backward()
    assert pixels.grad.abs().sum() > 0
    result = render(model, 0, [5], objective=objective, steps=6, recipe="fast")[0]
    assert result.activation > result.activation_init
    with pytest.raises(Exception, match="trained on layer 0, not 1"):
        requested_objective("sae", 1, sae=str(saved.folder))


def test_a_run_killed_with_sigkill_resumes_to_the_same_sae(trained, shapes, tmp_path):
    """`sae train` as a real process, killed (SIGKILL) once its first checkpoint is on disk; the same command
    resumes from it and ends with the SAE an uninterrupted run (the `trained` fixture's) gives."""
    args = ["sae", "train", BUILTIN, "--layer", "3", "--dataset", shapes, "--device", "cpu", "--latents", "128",
            "--k", "8", "--batch-size", "16", "--patches-per-image", "16",
            "--buffer-tokens", "512", "--token-batch", "64", "--epochs", "2", "--eval-images", "32",
            "--checkpoint-every", "0", "--quiet"]
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([*CLI, *args, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    state = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = list((killed / PROGRESS_DIR).glob(f"*/{STATE_FILE}")) if (killed / PROGRESS_DIR).exists() else []
        if found:
            state = found[0]
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    assert not (killed / "sae").exists()
    kept = torch.load(state, weights_only=True)
    assert kept["trainer"]["steps"] > 0  # the last checkpoint is whole
    assert cli.main([*args, "--out", str(killed)]) == 0  # the same command, in this process
    resumed = load_sae(killed, 3)
    assert not (killed / PROGRESS_DIR).exists()
    straight = trained[1]
    assert resumed.config["trained"]["steps"] == straight.config["trained"]["steps"]
    for name, tensor in straight.sae.state_dict().items():
        assert torch.allclose(tensor, resumed.sae.state_dict()[name], atol=1e-5), name
    assert resumed.config["metrics"] == pytest.approx(straight.config["metrics"])


def test_latents_get_dataset_examples_patch_maps_and_explore_pages(trained, builtin_model, shapes):
    """Through the `examples` job: rows named after the SAE, with top images ranked by the latent's objective,
    patch maps, and a feature page in Explore next to the gallery's other objectives."""
    from vit_feature_viz.jobs import examples_to_folder
    from vit_feature_viz.store.pages import open_gallery

    gallery, saved = trained
    latent = requested_objective("sae", 3, sae=str(gallery))
    examples_to_folder(builtin_model, gallery, 3, "0-1", shapes, objective=latent, top_k=3, batch_size=16,
                       progress=False)
    examples_to_folder(builtin_model, gallery, 3, "1", shapes, top_k=1, batch_size=16, progress=False)
    opened = open_gallery(str(gallery))
    assert opened.objectives(BUILTIN, 3) == ["feature", latent.name]  # the latents next to the channels
    page = opened.feature_page(BUILTIN, 3, 1, objective=latent.name)
    assert len(page.examples) == 3 and all(e.patch_map is not None for e in page.examples)
    assert page.link_params.get("objective") == latent.name  # a deep link names the SAE (not the default channel)
    scores = [e.score for e in page.examples]
    assert scores == sorted(scores, reverse=True)
    import datasets

    best = datasets.load_from_disk(shapes)[page.examples[0].index]["image"]
    pixels = builtin_model.preprocess(best)[None]
    with torch.no_grad():  # ranked by the latent's TopK code (mean over patches), not its pre-activation
        patches = builtin_model.activations(pixels, latent.needs).patches(latent.target)
        code = saved.sae.encode(patches).mean(1)[0, 1]
        pre = latent.values(builtin_model.activations(pixels, latent.needs))[0, 1]
    assert float(code) == pytest.approx(scores[0], rel=1e-3, abs=1e-4)
    assert float(pre) != pytest.approx(scores[0], rel=1e-2)


@pytest.mark.parametrize("role, site", [("vit", "fc1"), ("clip", "residual")])
def test_the_spliced_reconstruction_is_what_the_model_computes_on(tiny_repos, role, site):
    """An SAE that reconstructs exactly (decoder rows +e_i and -e_i, K = width: each token keeps, per channel, the
    one of the two that is positive) leaves the model's output as it was; one whose decoder is zero changes it.
    The classifier (vit) reports accuracy agreement, the CLIP tower the change of the next block's output."""
    from vit_feature_viz.sae.metrics import measure_sae
    from vit_feature_viz.sae.saved import SavedSae

    model = load_model(tiny_repos[role], device="cpu")
    width = model.width(site_target_of(site))
    exact = SparseAutoencoder(width, 2 * width, width)
    with torch.no_grad():
        eye = torch.eye(width)
        exact.W_dec.copy_(torch.cat([eye, -eye]))
        exact.W_enc.copy_(exact.W_dec.T)
    broken = SparseAutoencoder(width, 2 * width, width)
    with torch.no_grad():
        broken.W_dec.zero_()
    pixels = torch.rand(4, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(0))
    config = {"layer": 1, "site": site}
    kept = measure_sae(model, SavedSae(exact, config), [(pixels, None)])
    lost = measure_sae(model, SavedSae(broken, config), [(pixels, None)])
    assert kept["fve"] == pytest.approx(1.0, abs=1e-5) and kept["l0"] <= width
    assert lost["fve"] < 0.5
    if role == "vit":
        assert kept["top1_agreement"] == 1.0 and "next_block_relative_change" not in kept
    else:
        assert kept["next_block_relative_change"] < 1e-4 < lost["next_block_relative_change"]


def site_target_of(site: str) -> Target:
    from vit_feature_viz.sae.metrics import site_target

    return site_target(1, site)


def test_an_sae_over_the_cap_is_refused_before_it_is_loaded_or_downloaded(trained, hub, tmp_path):
    """A server's cap on an SAE a visitor names: checked from file sizes and the safetensors header (a header
    declaring 10^10 values in a file of a few bytes is refused without reading it), and on the Hub from the
    listing's sizes, before any download."""
    import json
    import shutil

    from huggingface_hub import try_to_load_from_cache

    from vit_feature_viz.errors import VizError
    from vit_feature_viz.store.hub import push_gallery
    from vit_feature_viz.store.sae_files import header_parameters

    gallery, saved = trained
    parameters = header_parameters(saved.folder / WEIGHTS_FILE)  # W_enc, W_dec, biases, the scale
    assert parameters > 2 * 128 * saved.sae.width
    assert load_sae(gallery, 3, max_parameters=parameters).sae.latents == 128  # at the cap: loads
    with pytest.raises(VizError, match="too big.*parameters"):
        load_sae(gallery, 3, max_parameters=parameters - 1, label="their-gallery")
    hostile = tmp_path / "hostile"
    shutil.copytree(saved.folder, hostile)
    header = json.dumps({"W_enc": {"dtype": "F32", "shape": [100_000, 100_000], "data_offsets": [0, 4]}}).encode()
    (hostile / WEIGHTS_FILE).write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    with pytest.raises(VizError, match="10,000,000,000 parameters"):
        load_sae(hostile, 3, max_parameters=10**6)
    push_gallery(gallery, "alice/big-sae", token=hub.write_token)
    with pytest.raises(VizError, match="too big.*weights of"):
        load_sae("alice/big-sae", 3, max_parameters=1000)
    cached = try_to_load_from_cache("alice/big-sae", f"sae/3-fc1/{WEIGHTS_FILE}", repo_type="dataset")
    assert not isinstance(cached, str)  # refused from the listing: the weights were never downloaded
    assert load_sae("alice/big-sae", 3, max_parameters=parameters).config == saved.config
