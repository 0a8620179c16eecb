"""`vit-feature-viz sae train MODEL --layer L ...`: the CLI face of sparse autoencoders.

Kept apart from cli.py (which only registers it) so the SAE's options live next to it; nothing heavy is
imported until the command runs, so `--help` answers at once.
"""

from __future__ import annotations

import sys
import warnings

SITE_CHOICES = ("fc1", "residual")  # store/sae_files.SITES, spelled here so the parser stays free of numpy/datasets


def add_sae_command(commands, parser_class, add_load_options, load_model) -> None:
    """`sae train`: `add_load_options(sub)` adds the model loading flags; `load_model(args)` loads the model;
    `parser_class` words usage mistakes as the other commands do."""
    sae = commands.add_parser("sae", help="sparse autoencoders: train one on a layer, its latents become features",
                              description="Sparse autoencoders (TopK) on a layer's patch tokens; their latents render, "
                                          "scan and browse like channels (--objective sae --sae GALLERY).")
    actions = sae.add_subparsers(dest="sae_command", parser_class=parser_class)
    train = actions.add_parser("train", help="train an SAE on a layer and save it in a gallery (sae/<layer>-<site>/)",
                               description="Train a TopK sparse autoencoder on a layer's patch tokens, measure it and "
                                           "save it in a gallery folder; run the same command again to resume.")
    train.add_argument("model", nargs="?", default=None, help="Hub model id, local folder or built-in name")
    add_load_options(train)
    train.add_argument("--layer", type=int, required=True, help="block index, from 0")
    train.add_argument("--site", default="fc1", choices=SITE_CHOICES,
                       help="fc1: the MLP hidden after GELU; residual: the block's output")
    train.add_argument("--dataset", required=True, help="Hub dataset id, local folder or built-in shapes set")
    train.add_argument("--split", default=None, help="dataset split (default: test, else validation, else train)")
    train.add_argument("--image-column", default=None, help="column holding the images (default: found)")
    train.add_argument("--max-images", type=int, default=None, help="use only the first N images (default: all)")
    train.add_argument("--latents", type=int, default=0, help="dictionary size (default: 4x the layer's width)")
    train.add_argument("--k", type=int, default=16, help="latents active per token (TopK)")
    train.add_argument("--epochs", type=int, default=1, help="passes over the images")
    train.add_argument("--patches-per-image", type=int, default=16, help="patch tokens sampled from each image")
    train.add_argument("--buffer-tokens", type=int, default=16384, help="tokens held for shuffling (bounds memory)")
    train.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    train.add_argument("--token-batch", type=int, default=256, help="tokens per training step")
    train.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    train.add_argument("--dead-after", type=int, default=20_000, help="tokens without firing after which a latent "
                                                                      "counts as dead (the auxiliary loss revives it)")
    train.add_argument("--seed", type=int, default=0, help="random seed (weights, token sampling)")
    train.add_argument("--eval-images", type=int, default=256, help="images the final measurements use")
    train.add_argument("--eval-split", default=None, help="split the measurements use (default: --split)")
    train.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS",
                       help="save a resumable checkpoint at most this often (and after every epoch)")
    train.add_argument("--out", required=True, help="gallery folder the SAE is saved in (sae/<layer>-<site>/)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=lambda args: _train(args, load_model))
    sae.set_defaults(run=lambda args: _usage(sae))


def _usage(parser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _train(args, load_model) -> int:
    from ..store.progress import Resumed
    from .train import SaeSettings, train_sae

    settings = SaeSettings(layer=args.layer, site=args.site, latents=args.latents, k=args.k, max_images=args.max_images,
                           epochs=args.epochs, image_batch=args.batch_size, patches_per_image=args.patches_per_image,
                           buffer_tokens=args.buffer_tokens, token_batch=args.token_batch, lr=args.lr,
                           dead_after=args.dead_after, seed=args.seed)
    from ..store.folder import GalleryFolder

    GalleryFolder(args.out).check_destination()  # before the model loads
    model = load_model(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Resumed)
        saved = train_sae(model, args.dataset, args.out, settings, split=args.split, image_column=args.image_column,
                          eval_images=args.eval_images, eval_split=args.eval_split, checkpoint_seconds=args.checkpoint_every,
                          progress=not args.quiet, revision=args.revision,
                          report=lambda line: print(line, file=sys.stderr, flush=True))
    for warning in caught:
        print(f"note: {warning.message}", file=sys.stderr)
    metrics = saved.config["metrics"]
    parts = [f"FVE {metrics['fve']:.3f}", f"L0 {metrics['l0']:.1f}",
             f"dead {metrics['dead_latents']}/{metrics['latents']}"]
    if "accuracy_drop" in metrics:
        parts.append(f"accuracy {metrics['accuracy']:.3f} -> {metrics['accuracy_spliced']:.3f} with the layer replaced")
    if "top1_agreement" in metrics:
        parts.append(f"top-1 agreement {metrics['top1_agreement']:.3f}")
    if "next_block_relative_change" in metrics:
        parts.append(f"next block output changes by {metrics['next_block_relative_change']:.3f} (relative)")
    print(f"saved the SAE of layer {args.layer} ({args.site}) in {saved.folder}: " + ", ".join(parts), file=sys.stderr)
    print(f"its latents as features: vit-feature-viz gallery {model.model_id} --layer {args.layer} --objective sae "
          f"--sae {args.out} --features 0-15 --dataset {args.dataset} --out {args.out}", file=sys.stderr)
    return 0
