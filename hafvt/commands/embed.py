"""``hafvt catalogue``, ``hafvt images``, ``hafvt embed`` and ``hafvt demo-encoder``.

  hafvt catalogue build OUT --reviews-x R --meta-x M --reviews-y R --meta-y M   raw Amazon dumps -> scenario
  hafvt catalogue attach DIR --meta-x M [M ...] --meta-y M [M ...]             titles/images for a C2DSR release
  hafvt images DIR [--workers 16]                                               download + verify images
  hafvt embed DIR --model NAME --pretrained TAG|PATH|random-init                CLIP embedding cache
  hafvt demo-encoder DIR [--embed]                                              offline demo CLIP
  hafvt demo-oracle DIR                                                         demo's latent attributes as a cache
"""
from __future__ import annotations

import argparse
import json

MAX_PIXELS_HELP = "refuse images of more pixels, read from the header before decoding (default: 40,000,000)"


def cmd_catalogue_build(args) -> int:
    from hafvt.data.amazon import BuildConfig, build_from_dumps

    cfg = BuildConfig(args.min_interactions, args.min_per_domain, args.max_len, args.seed)
    report = build_from_dumps(args.out, args.reviews_x, args.meta_x, args.reviews_y, args.meta_y, cfg)
    print(json.dumps(report, indent=2))
    return 0


def cmd_catalogue_attach(args) -> int:
    from hafvt.data.amazon import attach_catalogue

    print(json.dumps(attach_catalogue(args.dir, args.meta_x, args.meta_y), indent=2))
    return 0


def cmd_images(args) -> int:
    from hafvt.embed.images import MAX_PIXELS, REPORT_FILE, download_images

    for flag, value, low in (("--workers", args.workers, 1), ("--timeout", args.timeout, 1e-3), ("--max-mb", args.max_mb, 1e-3),
                             ("--max-pixels", args.max_pixels, 1), ("--retries", args.retries, 0), ("--backoff", args.backoff, 0)):
        if value is not None and not value >= low:
            raise ValueError(f"{flag} must be >= {low:g}, got {value}")
    report = download_images(args.dir, workers=args.workers, retries=args.retries, backoff=args.backoff,
                             timeout=args.timeout, max_bytes=int(args.max_mb * (1 << 20)),
                             allow_private=args.allow_private, max_pixels=args.max_pixels or MAX_PIXELS)
    print(json.dumps({k: report[k] for k in ("n_items", "usable", "unusable", "counts", "fallback")}, indent=2))
    print(f"details: {args.dir}/{REPORT_FILE}")
    return 0


def cmd_embed(args) -> int:
    from hafvt.embed.clip import embed_scenario
    from hafvt.embed.images import MAX_PIXELS

    out = embed_scenario(args.dir, args.model, args.pretrained, images=args.images, titles=args.titles,
                         device=args.device, batch_size=args.batch_size, workers=args.workers,
                         precision=args.precision, shard_size=args.shard_size, name=args.name,
                         overwrite=args.overwrite, jpeg_draft=args.jpeg_draft, weights_dir=args.weights_dir,
                         decode=args.decode, max_pixels=args.max_pixels or MAX_PIXELS)
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        manifest = json.loads((out / "manifest.json").read_text())
        print(f"{out}: tables {manifest['tables']}, dim {manifest['embed_dim']}, fallback {json.dumps(manifest['fallback'])}")
    return 0


def cmd_demo_encoder(args) -> int:
    from hafvt.embed.demo_encoder import DEMO_MODEL, train_demo_encoder

    ckpt = train_demo_encoder(args.dir, out_dir=args.out, epochs=args.epochs, batch_size=args.batch_size,
                              seed=args.seed, threads=args.threads)
    log = json.loads((ckpt.parent / "train_log.json").read_text())
    print(f"{ckpt}: {log['pairs']} pairs, {log['epochs']} epochs, {log['seconds']} s, in-sample image->title "
          f"top-1 {log['image_to_title_top1_in_sample']:.3f} (chance {log['chance_top1']:.4f})")
    command = f"hafvt embed {args.dir} --model {DEMO_MODEL} --pretrained {ckpt}"
    if args.embed:
        from hafvt.embed.clip import embed_scenario

        print(embed_scenario(args.dir, DEMO_MODEL, str(ckpt), device=args.device, overwrite=True))
    else:
        print(f"next: {command}")
    return 0


def cmd_demo_oracle(args) -> int:
    from hafvt.embed.oracle import LABEL, write_oracle_cache

    out = write_oracle_cache(args.dir, name=args.name)
    manifest = json.loads((out / "manifest.json").read_text())
    print(f"{out}: tables {manifest['tables']}, dim {manifest['embed_dim']} [{LABEL}]; "
          f"train with --set embeddings={out.name}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("catalogue", help="build a scenario + item catalogue from raw Amazon dumps, or attach one")
    act = p.add_subparsers(dest="action", required=True)
    b = act.add_parser("build", help="raw review + metadata dumps of two categories -> C2DSR files + catalogue.jsonl")
    b.add_argument("out", help="the scenario directory to write")
    for d in ("x", "y"):
        b.add_argument(f"--reviews-{d}", required=True, help=f"domain {d.upper()} reviews (2014 or 2018, .json[.gz])")
        b.add_argument(f"--meta-{d}", required=True, help=f"domain {d.upper()} metadata (2014 or 2018, .json[.gz])")
    b.add_argument("--min-interactions", type=int, default=10, help="drop users and items with fewer (papers: 10)")
    b.add_argument("--min-per-domain", type=int, default=3, help="items of each domain per sequence (papers: 3)")
    b.add_argument("--max-len", type=int, default=15, help="items per sequence window (papers silent; C2DSR maxlen)")
    b.add_argument("--seed", type=int, default=0, help="draw of the valid/test halves")
    b.set_defaults(func=cmd_catalogue_build)
    a = act.add_parser("attach", help="catalogue.jsonl for an existing C2DSR release via its ASIN column")
    a.add_argument("dir")
    a.add_argument("--meta-x", nargs="+", required=True, help="metadata dump(s) for domain X")
    a.add_argument("--meta-y", nargs="+", required=True, help="metadata dump(s) for domain Y")
    a.set_defaults(func=cmd_catalogue_attach)

    p = sub.add_parser("images", help="download and verify the catalogue's images (resumable)")
    p.add_argument("dir")
    p.add_argument("--workers", type=int, default=16, help="concurrent downloads")
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--backoff", type=float, default=1.0, help="seconds before the first retry, doubling")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per request, all of it (connect, headers, body)")
    p.add_argument("--max-mb", type=float, default=20.0, help="size cap per image")
    p.add_argument("--max-pixels", type=int, default=None, help=MAX_PIXELS_HELP)
    p.add_argument("--allow-private", action="store_true",
                   help="also fetch from loopback, private and link-local addresses (for tests and local mirrors)")
    p.set_defaults(func=cmd_images)

    p = sub.add_parser("embed", help="frozen open_clip image/title embeddings -> <DIR>/embeddings/<name>/")
    p.add_argument("dir")
    p.add_argument("--model", required=True, help="an open_clip model name (e.g. ViT-B-32) or a config beside --pretrained")
    p.add_argument("--pretrained", required=True, help="an open_clip tag (weights already on disk), a checkpoint file, or random-init")
    p.add_argument("--images", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--titles", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda:LOCAL_RANK when available)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers decoding images (default: min(8, cores))")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="auto: fp16 on GPU, fp32 on CPU")
    p.add_argument("--shard-size", type=int, default=4096, help="items per resumable shard")
    p.add_argument("--name", default=None, help="cache name (default: <model>__<tag or file stem>)")
    p.add_argument("--overwrite", action="store_true", help="recompute even if a cache with other settings exists")
    p.add_argument("--jpeg-draft", action="store_true", help="let libjpeg decode at reduced size (faster, slightly different pixels)")
    p.add_argument("--decode", default="auto", choices=["auto", "gpu", "cpu"],
                   help="gpu: JPEGs decoded (nvjpeg) and resized on the GPU, other files by PIL; cpu: PIL in the "
                        "workers; auto: gpu on a CUDA device unless --jpeg-draft")
    p.add_argument("--weights-dir", default=None, help="where cached open_clip weights live (default: the usual caches)")
    p.add_argument("--max-pixels", type=int, default=None, help=MAX_PIXELS_HELP + " (larger ones get the fallback)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("demo-encoder", help="train the small offline demo CLIP on a scenario's own (image, title) pairs")
    p.add_argument("dir")
    p.add_argument("--out", default=None, help="checkpoint folder (default: DIR/encoders/hafvt-demo-clip)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--embed", action="store_true", help="then embed DIR through the checkpoint route")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_demo_encoder)

    p = sub.add_parser("demo-oracle", help="embedding cache of the demo's latent item attributes (an upper bound, not CLIP)")
    p.add_argument("dir", help="a demo scenario directory (with latent.json)")
    p.add_argument("--name", default="demo-oracle", help="cache name in DIR/embeddings/")
    p.set_defaults(func=cmd_demo_oracle)
