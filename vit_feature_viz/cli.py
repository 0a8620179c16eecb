"""The command line: `vit-feature-viz layers|render|examples|gallery|push|pull|analyze|sae|open`.

Every user mistake ends as one line on stderr and exit code 2; nothing here knows how rendering works.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import warnings

from . import __version__
from .errors import CLI_WORDING, VizError
from .core.registries import DEFAULT_RECIPE, OBJECTIVES, RECIPES

EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    previous = _stop_on_sigterm()
    try:
        with _library_bars_off(getattr(args, "quiet", False)):
            return args.run(args) or 0
    except VizError as err:
        print(f"error: {err.worded(CLI_WORDING)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as stop:
        print("stopped: finished features are saved; run the same command again to resume.", file=sys.stderr)
        return 128 + int(stop.args[0] if isinstance(stop, _Terminated) else signal.SIGINT)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _library_bars_off(quiet: bool):
    """--quiet also silences the bars datasets and huggingface_hub draw (generating a split, fetching files)."""
    if not quiet:
        yield
        return
    import datasets
    import huggingface_hub.utils as hub_utils

    were = datasets.are_progress_bars_disabled(), hub_utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    hub_utils.disable_progress_bars()
    try:
        yield
    finally:
        if not were[0]:
            datasets.enable_progress_bars()
        if not were[1]:
            hub_utils.enable_progress_bars()


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it stops like Ctrl-C (finished batches are already on disk)."""


def _stop_on_sigterm():
    """A scheduler, `kill` or a container stop sends SIGTERM: stop cleanly with one line, not silently."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        raise _Terminated(signum)

    return signal.signal(signal.SIGTERM, stop)


# --- commands -----------------------------------------------------------------------------------------------
def _layers(args) -> int:
    model = _load(args)
    info = model.describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['model_id']}  backend={info['backend']}  input={info['image_size']}px  patch={info['patch_size']}"
          f"  width={info['hidden_size']}" + (f"  classes={info['num_classes']}" if info["num_classes"] else ""))
    for layer in info["layers"]:
        print(f"  layer {layer['index']:>3}  {layer['name']}  features={layer['features']}")
    return 0


def _render(args, model=None) -> int:
    from .jobs import render_to_folder

    objective = _objective(args)
    if getattr(args, "accentuate", None) is not None:
        return _accentuate(args, objective, model)
    model = model or _load(_checked_out(args))
    _prompt_target(args, model, objective)
    if args.features.strip().lower() == "all":
        _print_estimate(model, args, objective)
    done = render_to_folder(
        model, args.out, args.layer, args.features, objective=objective, recipe=args.recipe, steps=args.steps,
        image_size=args.image_size, seed=args.seed, batch_size=args.batch_size, progress=not args.quiet,
        diversity=args.diversity,
    )
    print(f"rendered {len(done)} feature(s) of layer {args.layer} into {args.out}", file=sys.stderr)
    if args.png:
        from .core.scale import current_workers
        from .jobs import export_pngs

        if not current_workers().is_main:  # one process writes them, after every process has rendered its share
            return 0

        from .core.diversity import facet_name

        names = [facet_name(objective.name, k, args.diversity) for k in range(args.diversity)]
        written = export_pngs(args.out, args.png, model.model_id, args.layer, names)
        print(f"wrote {len(written)} PNG file(s) of layer {args.layer} to {args.png}", file=sys.stderr)
    elif args.command == "render":  # `gallery` says it once its examples are in too
        _say_how_to_look(args.out)
    return 0


def _accentuate(args, objective, model=None) -> int:
    """render --accentuate IMAGE: the image with each feature raised, one gallery row per feature."""
    from .core.accentuate import check_weight, read_image
    from .jobs import accentuate_to_folder

    if args.diversity != 1 or args.png:
        raise VizError("An accentuation is one image per feature", option="accentuate",
                       fix="leave out --diversity and --png with {option}.")
    read_image(args.accentuate)  # before the model loads: a missing or unreadable image fails at once, as does
    check_weight(args.accentuate_weight)  # a weight below 0
    model = model or _load(_checked_out(args))
    names = accentuate_to_folder(model, args.out, args.layer, args.features, args.accentuate, objective=objective,
                                 weight=args.accentuate_weight, steps=args.steps, image_size=args.image_size,
                                 seed=args.seed)
    print(f"accentuated {len(names)} feature(s) of layer {args.layer} in {args.accentuate} into {args.out} "
          f"({names[0] if names else 'nothing'})", file=sys.stderr)
    _say_how_to_look(args.out)
    return 0


def _say_how_to_look(out) -> None:
    print(f"look at them: vit-feature-viz open {out} (the app, on this gallery); or add --png FOLDER for image "
          "files", file=sys.stderr)


def _objective(args):
    """The objective the options name (a direction file is read and checked here, before the model loads)."""
    from .core.requested import requested_objective

    return requested_objective(args.objective, args.layer, direction=args.direction, cosine=args.cosine,
                               negative=args.negative, sae=args.sae, sae_site=args.sae_site,
                               prompt=getattr(args, "prompt", None), negative_prompt=getattr(args, "negative_prompt", None))


def _prompt_target(args, model, objective) -> None:
    """`render --prompt`: the features default to every prompt, and `prompt` (the image embedding) is read at the
    last block, so the gallery row names the block it really read; other objectives need --layer and --features."""
    from .core.prompts import Prompt, site_layer

    args.layer = site_layer(objective, model, args.layer)
    if isinstance(getattr(objective, "base", objective), Prompt) and args.features is None:
        args.features = "all"
    for option, value in (("layer", args.layer), ("features", args.features)):
        if value is None:
            raise VizError(f"--{option} is missing", option=option,
                           fix="{option:pass} (e.g. 0)" if option == "layer" else "{option:pass} (e.g. 7, 0-63 or all).")


def _print_estimate(model, args, objective) -> None:
    """One line on stderr before a whole layer starts: how long it should take, timed on its first steps."""
    from .core.render import estimate_seconds
    from .core.scale import current_workers

    workers = current_workers()
    seconds = estimate_seconds(
        model, args.layer, args.features, processes=workers.world, objective=objective, recipe=args.recipe,
        steps=args.steps, image_size=args.image_size, seed=args.seed, batch_size=args.batch_size,
        diversity=args.diversity,
    )
    if workers.is_main:
        print(f"estimated time: about {_duration(seconds)} for every feature of layer {args.layer} on "
              f"{workers.world} process(es) (less for features already in {args.out})", file=sys.stderr)


def _duration(seconds: float) -> str:
    minutes, hours = seconds / 60, seconds / 3600
    return f"{hours:.1f} h" if hours >= 1 else f"{minutes:.0f} min" if minutes >= 1 else f"{seconds:.0f} s"


def _examples(args, model=None) -> int:
    from .examples import UnreadableImages
    from .jobs import examples_to_folder
    from .store.progress import Resumed

    objective = _objective(args)
    model = model or _load(_checked_out(args))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnreadableImages)
        warnings.simplefilter("always", Resumed)
        count = examples_to_folder(
            model, args.out, args.layer, args.features, args.dataset, objective=objective, split=args.split,
            image_column=args.image_column, max_images=args.max_images, top_k=args.top_k, streaming=args.streaming,
            batch_size=args.scan_batch_size, progress=not args.quiet,
        )
    for warning in caught:
        if issubclass(warning.category, UnreadableImages):
            print(f"warning: {warning.message}", file=sys.stderr)
        elif issubclass(warning.category, Resumed):
            print(f"note: {warning.message}", file=sys.stderr)
    print(f"top-{args.top_k} examples of {count} feature(s) from {args.dataset} written to {args.out}", file=sys.stderr)
    return 0


def _gallery(args) -> int:
    model = _load(_checked_out(args))  # once: both steps use the same weights
    _render(args, model)
    _examples(args, model)
    if not args.png:
        _say_how_to_look(args.out)
    return 0


def _push(args) -> int:
    from .store.hub import push_gallery

    url = push_gallery(args.folder, args.repo_id, private=args.private, token=args.token, commit_message=args.commit_message)
    print(url)
    return 0


def _pull(args) -> int:
    from .store.hub import pull_gallery

    print(pull_gallery(args.repo_id, args.folder, revision=args.revision))
    return 0


def _open(args) -> int:
    """Serve the app with `args.gallery` opened in "Explore galleries": the gallery is opened here first, so a bad
    one is one line and exit 2 before anything starts; then the app runs until Ctrl-C."""
    import os
    from pathlib import Path

    from .specs import looks_like_path
    from .store.builtin import BUILTIN_GALLERY
    from .store.pages import open_gallery

    gallery = open_gallery(args.gallery)
    from .app.galleries_tab import ENV_OPEN  # imports gradio: only once there is a gallery to serve

    app_file = Path(__file__).resolve().parents[1] / "app.py"
    if not app_file.is_file():
        raise VizError(f"The app (app.py) is not beside this installation of vit-feature-viz ({app_file.parent}): "
                       "run the command from a clone of the repository installed with pip install -e .")
    # a folder by its absolute path: the app may look it up from elsewhere; a Hub id or built-in name as given
    os.environ[ENV_OPEN] = (gallery.label if gallery.label == BUILTIN_GALLERY or not looks_like_path(gallery.label)
                            else str(Path(gallery.label).expanduser().resolve()))
    app = _load_app(app_file)
    app.demo.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True, quiet=True,
                    max_file_size="20mb")
    print(app.demo.local_url, flush=True)
    print(f"serving the app with {gallery.label} open in \"Explore galleries\"; Ctrl-C stops it", file=sys.stderr)
    app.demo.block_thread()
    return 0


def _load_app(app_file):
    """app.py as a module (it builds its `demo` from the environment when imported)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vit_feature_viz_app", app_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _checked_out(args):
    """A bad --out is found before the model loads, not after the work is done."""
    from .store.folder import GalleryFolder

    GalleryFolder(args.out).check_destination()
    return args


def _load(args):
    from .models import load_model

    from .analysis.cli import model_or_default

    return load_model(
        model_or_default(args.model), revision=args.revision, device=args.device, precision=args.precision,
        trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle,
    )


# --- arguments ----------------------------------------------------------------------------------------------
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except the ones that mean 'not set' (None, False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line and exit code 2 like every other user error."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    """Built from torch-free modules only, so `--help` and `--version` answer at once."""
    from .analysis.cli import add_analyze_command, add_load_options
    from .sae.cli import add_sae_command

    parser = _Parser(prog="vit-feature-viz", description="See what Vision Transformers learn.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)

    def model_command(name, run, help):
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("model", nargs="?", default=None,
                         help="Hub model id (org/name), local folder or built-in name (default: google/vit-base-patch16-224, "
                              "or the built-in vit-feature-viz/shapes-vit when the Hub cannot be reached)")
        add_load_options(sub)
        sub.set_defaults(run=run)
        return sub

    layers = model_command("layers", _layers, "list the model's blocks and their feature counts")
    layers.add_argument("--json", action="store_true", help="print a JSON object with a `layers` list")

    def target_args(sub, prompts=False):
        """prompts: the command takes --prompt, which makes --layer and --features optional (see _prompt_target)."""
        sub.add_argument("--layer", type=int, required=not prompts, default=None,
                         help="block index, from 0" + (" (with --prompt: only for prompt-cls)" if prompts else ""))
        sub.add_argument("--features", required=not prompts, default=None,
                         help="e.g. 7, 0,5,9, 0-63, all or random 8 (drawn with --seed)"
                              + ("; with --prompt: the prompts (default: all)" if prompts else ""))
        if prompts:
            sub.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                             help="a CLIP checkpoint's text prompt: render what it pictures for TEXT, maximizing "
                                  "the cosine of the image and text embeddings (repeat for several prompts; "
                                  "--objective prompt-cls reads block --layer's CLS instead)")
            sub.add_argument("--negative-prompt", default=None, metavar="TEXT",
                             help="with --prompt: a text whose cosine is subtracted")
        sub.add_argument("--objective", default="feature", choices=OBJECTIVES.names(), help="what to maximize")
        sub.add_argument("--direction", default=None, metavar="SOURCE",
                         help="maximize the projection of the objective's activations on vectors instead of one "
                              "channel: FILE.npy, FILE.safetensors[:KEY], probe:FILE or difference:A,B; "
                              "--features picks the vectors (rows)")
        sub.add_argument("--cosine", action="store_true", help="with --direction: the cosine, not the projection")
        sub.add_argument("--negative", action="store_true",
                         help="drive the objective most negative (saved as <objective>-negative)")
        sub.add_argument("--sae", default=None, metavar="GALLERY",
                         help="with --objective sae, sae-neuron or sae-cls: the gallery folder or Hub gallery id "
                              "holding the sparse autoencoder of --layer (vit-feature-viz sae train)")
        sub.add_argument("--sae-site", default=None, choices=["fc1", "residual"],
                         help="with --sae: which of the layer's SAEs, when the gallery holds both")
        sub.add_argument("--out", required=True, help="gallery folder (a Hugging Face dataset folder)")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")

    def render_args(sub):
        sub.add_argument("--recipe", default=DEFAULT_RECIPE, choices=RECIPES.names(), help="parametrization and augmentations")
        sub.add_argument("--steps", type=int, default=None, help="optimization steps (default: the recipe's)")
        sub.add_argument("--image-size", type=int, default=None, help="render size (default: the model's)")
        sub.add_argument("--seed", type=int, default=0, help="random seed of the starting images")
        sub.add_argument("--batch-size", type=int, default=None, help="features optimized together (default: as many as fill 8 images on CPU, 256 on GPU)")
        sub.add_argument("--diversity", type=int, default=1, metavar="N",
                         help="N images per feature that differ from each other (saved as facets 1..N)")
        sub.add_argument("--png", default=None, metavar="FOLDER", help="also write the layer's images as PNG files "
                         "into FOLDER (layer<L>-<objective>-feature<F>.png)")

    def examples_args(sub):
        sub.add_argument("--dataset", required=True, help="Hub dataset name or local imagefolder/parquet folder")
        sub.add_argument("--split", default=None,
                         help="dataset split (default: the first of test, validation, train the dataset has)")
        sub.add_argument("--image-column", default=None, help="column holding the images (default: found)")
        sub.add_argument("--max-images", type=int, default=None, help="scan only the first N rows (default: all)")
        sub.add_argument("--top-k", type=int, default=8, help="dataset examples kept per feature")
        sub.add_argument("--streaming", action="store_true", help="stream the dataset instead of downloading it")
        sub.add_argument("--scan-batch-size", type=int, default=32, help="images per forward pass while scanning")

    render = model_command("render", _render, "render images that maximize features into a gallery folder")
    target_args(render, prompts=True)
    render_args(render)
    render.add_argument("--accentuate", default=None, metavar="IMAGE",
                        help="start from this image and raise each feature in it, staying close to it (feature "
                             "accentuation; saved with the image's sha256 and the weight)")
    render.add_argument("--accentuate-weight", type=float, default=None, metavar="W",
                        help="with --accentuate: weight of the penalty on block 0's change (default 1; larger stays "
                             "closer to the image)")
    examples = model_command("examples", _examples, "find the dataset images that activate features most")
    target_args(examples)
    examples_args(examples)
    gallery = model_command("gallery", _gallery, "render and find examples in one go")
    target_args(gallery)
    render_args(gallery)
    examples_args(gallery)

    push = commands.add_parser("push", help="push a gallery folder to a Hub dataset repo")
    push.add_argument("folder", help="gallery folder")
    push.add_argument("repo_id", help="dataset repo id, e.g. your-name/vit-b16-layer5")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or your login)")
    push.add_argument("--commit-message", default=None, help="message of the Hub commit")
    push.set_defaults(run=_push)

    pull = commands.add_parser("pull", help="download a gallery dataset repo into a folder")
    pull.add_argument("repo_id", help="dataset repo id of a pushed gallery")
    pull.add_argument("folder", help="new or empty folder, or a gallery folder to add the files to")
    pull.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    pull.set_defaults(run=_pull)

    add_analyze_command(commands)
    add_sae_command(commands, _Parser, add_load_options, _load)

    opening = commands.add_parser("open", help="start the app with a gallery opened in Explore galleries",
                                  description="Start the app (python app.py) with a gallery opened in its Explore "
                                              "galleries tab, and print its URL; Ctrl-C stops it.")
    opening.add_argument("gallery", help="gallery folder, Hub dataset id of a pushed gallery, or "
                                         "vit-feature-viz/shapes-gallery (the built-in one)")
    opening.add_argument("--port", type=int, default=None, help="port (default: GRADIO_SERVER_PORT, else 7860)")
    opening.add_argument("--host", default=None, help="address to serve on (default: GRADIO_SERVER_NAME, else "
                                                      "127.0.0.1)")
    opening.set_defaults(run=_open)
    return parser


if __name__ == "__main__":
    sys.exit(main())
