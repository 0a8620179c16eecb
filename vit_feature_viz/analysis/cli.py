"""`vit-feature-viz analyze EXPERIMENT MODEL... --dataset ...`: the CLI face of the experiments.

Kept apart from cli.py so the experiments' options live next to the experiments; cli.py only registers it.
Heavy imports (torch models, matplotlib) happen when the command runs, not when the parser is built.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from . import EXPERIMENTS

DEFAULT_OUT = "analyses"  # a gallery folder of its own: writing into the current folder would mix with whatever is there


def add_analyze_command(commands) -> None:
    sub = commands.add_parser(
        "analyze", help="run one of the paper's experiments and write a table and a plot",
        description="Run an experiment on one or more checkpoints and write analysis/<experiment>/<run>.csv and "
                    ".png into --out (a gallery folder, so `push` shares them); the folder is the experiment's name "
                    "with underscores (analysis/cls_isolation/).",
    )
    sub.add_argument("experiment", choices=EXPERIMENTS.names())
    sub.add_argument("models", nargs="*", metavar="MODEL", help="Hub model ids or local folders (CNNs too for "
                     "foreground-background and frequency); none: google/vit-base-patch16-224, or the built-in "
                     "vit-feature-viz/shapes-vit when the Hub cannot be reached")
    sub.add_argument("--dataset", required=True, help="Hub dataset id or local folder with images and labels")
    sub.add_argument("--split", default=None, help="the split evaluated (default: the first of test, validation, "
                     "train the dataset has)")
    sub.add_argument("--max-images", type=int, default=None, help="use only the first N images of the split")
    sub.add_argument("--out", default=DEFAULT_OUT, help="gallery folder to write analysis/ into, made if missing")
    sub.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    sub.add_argument("--streaming", action="store_true", help="stream the dataset instead of downloading it")
    sub.add_argument("--image-column", default=None, help="column holding the images (default: found)")
    sub.add_argument("--label-column", default=None, help="column holding the labels (default: found: label, "
                     "labels, fine_label, class, target or category)")
    sub.add_argument("--probe-split", default=None, help="models without a classifier head (DINOv2, MAE): fit a "
                     "linear probe on their frozen CLS features of this labelled split of --dataset, e.g. train")
    sub.add_argument("--probe-images", type=int, default=5000, help="use at most N images of --probe-split")
    sub.add_argument("--box-column", default=None, help="foreground-background, occlusion, cls-attention: boxes x0,y0,x1,y1 in pixels")
    sub.add_argument("--box-format", default="xyxy", choices=["xyxy", "xywh"],
                     help="boxes as x0,y0,x1,y1 or x,y,width,height")
    sub.add_argument("--mask-column", default=None, help="foreground-background, occlusion, cls-attention: foreground masks")
    sub.add_argument("--fill", default="black", choices=["black", "grey"], help="what replaces the removed part")
    sub.add_argument("--cutoffs", default=None, help="frequency: fractions of Nyquist, e.g. 0.0625,0.125,0.25,0.5,1")
    sub.add_argument("--layer", type=int, default=None,
                     help="clip-names, cls-attention (default: the last): block index, from 0")
    sub.add_argument("--fractions", default=None, help="occlusion: fractions of patches dropped, e.g. 0,0.25,0.5,0.75")
    sub.add_argument("--drop", default="tokens", choices=["tokens", "pixels"], help="occlusion: how a ViT loses a "
                     "patch: its token leaves the sequence, or its pixels take the --fill colour (CNNs: always pixels)")
    sub.add_argument("--grids", default=None, help="patch-shuffle: tiles per side shuffled, e.g. 1,2,4,8,16")
    sub.add_argument("--features", default=None, help="clip-names: e.g. 7, 0,5,9 or 0-15")
    sub.add_argument("--vocabulary", default=None, help="clip-names: text file, one word or phrase a line "
                     "(default: the shipped list of common visual concepts)")
    sub.add_argument("--sae", default=None, metavar="GALLERY", help="clip-names: name the latents of the sparse "
                     "autoencoder of --layer in this gallery (folder or Hub id) instead of the MLP channels")
    sub.add_argument("--top-images", type=int, default=16, help="clip-names: images per feature that define it")
    sub.add_argument("--top-names", type=int, default=5, help="clip-names: names kept per feature")
    sub.add_argument("--shape-column", default=None,
                     help="cue-conflict: the shape's class (default: shape, else the label column)")
    sub.add_argument("--cue-column", default=None,
                     help="cue-conflict: the other cue's class (default: color, colour, texture or cue)")
    add_load_options(sub, "repos")
    sub.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.set_defaults(run=run_analyze)


def add_load_options(sub, repos: str = "repo") -> None:
    """How models are loaded, the same in every command: revision, device, precision and the two trust flags."""
    sub.add_argument("--revision", default=None, help=f"branch, tag or commit of the model {repos}")
    sub.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    sub.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                     help="auto: bf16 where the CPU or GPU runs it fast, else fp32")
    them = "it" if repos == "repo" else "them"
    sub.add_argument("--trust-remote-code", action="store_true",
                     help=f"run model code shipped in the {repos} (only if you trust {them})")
    sub.add_argument("--allow-pickle", action="store_true", help=f"load pickle weights (only if you trust the {repos})")


def model_or_default(name: str | None) -> str:
    """The model a command names, else the default every command starts with: a popular Hub ViT, or the built-in
    one when the Hub cannot be reached (said in a note on stderr)."""
    if name:
        return name
    from ..models.builtin import default_model_id

    name, notice = default_model_id()
    if notice:
        print(f"note: {notice}", file=sys.stderr)
    return name


def run_analyze(args) -> int:
    from ..store.folder import GalleryFolder
    from ..store.progress import PROGRESS_DIR, Resumed, clear_progress, progress_folder

    GalleryFolder(args.out).check_destination()  # a bad --out is found before the work, not after it
    args.models = args.models or [model_or_default(None)]  # like the other commands
    options = dict(
        split=args.split, max_images=args.max_images, batch_size=args.batch_size, streaming=args.streaming,
        image_column=args.image_column, progress=not args.quiet, revision=args.revision, device=args.device,
        precision=args.precision, trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle,
    )
    if args.experiment == "clip-names":
        options.update(layer=args.layer, features=args.features, vocabulary=args.vocabulary,
                       top_images=args.top_images, top_names=args.top_names)
        if args.sae and args.layer is not None:  # without a layer clip_names says what is missing
            from ..core.requested import requested_objective

            options["objective"] = requested_objective("sae", args.layer, sae=args.sae)
    else:
        options["label_column"] = args.label_column
        if args.probe_split:
            from .probe import ProbeRequest

            options["probe"] = ProbeRequest(args.dataset, args.probe_split, args.probe_images, args.image_column,
                                            args.label_column, args.streaming, progress=not args.quiet,
                                            cache=str(Path(args.out) / PROGRESS_DIR / "probes"))
    if args.experiment == "foreground-background":
        options.update(box_column=args.box_column, mask_column=args.mask_column, box_format=args.box_format,
                       fill=args.fill)
    if args.experiment == "frequency" and args.cutoffs:
        options["cutoffs"] = _floats(args.cutoffs)
    if args.experiment == "cls-attention":
        options.update(layer=args.layer, box_column=args.box_column, mask_column=args.mask_column,
                       box_format=args.box_format)
    if args.experiment == "cue-conflict":
        options.update(shape_column=args.shape_column, cue_column=args.cue_column)
    if args.experiment == "occlusion":
        options.update(box_column=args.box_column, mask_column=args.mask_column, box_format=args.box_format,
                       fill=args.fill, drop=args.drop, **({"fractions": _floats(args.fractions, "--fractions")}
                                                          if args.fractions else {}))
    if args.experiment == "patch-shuffle" and args.grids:
        options["grids"] = _floats(args.grids, "--grids")
    command = {"experiment": args.experiment, "models": args.models, "dataset": args.dataset,
               **{key: value for key, value in options.items() if key != "progress"}}
    checkpoint = progress_folder(args.out, "analyze", command)  # saved after every batch: the same command resumes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Resumed)
        result = EXPERIMENTS.get(args.experiment)(args.models, args.dataset, checkpoint=checkpoint, **options)
    for warning in caught:
        if issubclass(warning.category, Resumed):
            print(f"note: {warning.message}", file=sys.stderr)
        else:  # shown as they would have been
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    files = result.save(args.out)
    clear_progress(checkpoint)
    print(result.summary(), file=sys.stderr)
    print(files["table"])
    print(files["plot"])
    return 0


def _floats(text: str, option: str = "--cutoffs") -> list[float]:
    from ..errors import VizError

    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        example = {"--grids": "1,2,4,8", "--fractions": "0,0.25,0.5,0.75"}.get(option, "0.125,0.25,0.5,1")
        raise VizError(f"{option} must be numbers separated by commas, not '{text}': use e.g. {example}.") from None
