"""Training speed: lorabooth's step against a bare step on the same transformer and batch.

For each model (the demo, and a mid-size Flux config with hidden size 256):
- `bare`: the same LoRA'd transformer and batch, a plain forward + backward + AdamW step, with
  no caching, logging, metrics or checkpoints;
- `lorabooth`: Trainer.train_step, data drawn from its caches as in a real run;
- whole runs of N steps with caching (encode once) against encoding the photos every step.

- compile (mid-size model): steady s/step with the repeated blocks compiled against eager, the
  compile time of a first process (cold inductor cache) and of a second one (warm cache), each
  in a fresh process as a new run would be;
- with `--reference SCRIPT` (diffusers' examples/dreambooth/train_dreambooth_lora_flux.py):
  `lorabooth train` eager and compiled against that script run unchanged on the same mid-size
  model and photos (same LoRA targets and rank, cached latents, the photos cropped square for
  both as the script's --center_crop does, so both train the same shapes), each s/step taken as
  (T(110 steps) - T(10 steps)) / 100 of whole processes, the median of REPEATS rounds that take
  every case in turn, each case (the reference too) warmed first by a run whose time is not
  counted (one round's figures moved by up to 10% on this shared 2-core machine, where a
  process's start-up jitter divided by 50 steps, and the first round's reference ran from a
  cold disk cache); the script runs in fp32 and in its bf16
  mixed precision, lorabooth with `train.memory` auto (fp32 on a CPU) and, on a CPU that
  multiplies bf16 natively, "bf16", and every lorabooth row is set against both.

    python -m bench.train [--steps 30] [--device cpu|cuda] [--no-compile] [--reference SCRIPT]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench._common import report
from lorabooth.core.config import set_config_value
from lorabooth.core.models.demo import build_demo_pipeline, ensure_demo_model
from lorabooth.core.models.resolve import ModelSource
from lorabooth.core.models.sizes import cpu_has_bf16
from lorabooth.core.train import flow
from lorabooth.core.train.trainer import Trainer
from lorabooth.core.workspace import init_workspace

REPO = Path(__file__).resolve().parent.parent


def mid_size_model(folder: Path) -> Path:
    """The demo pipeline with a bigger transformer: hidden 256, 4 double and 8 single blocks,
    and a T5 tokenizer of T5's own kind (a Unigram), which diffusers' reference script loads
    as T5TokenizerFast."""
    from diffusers import FluxTransformer2DModel

    if (folder / "model_index.json").exists():
        return folder
    pipe = build_demo_pipeline()
    torch.manual_seed(0)
    pipe.transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=4, num_single_layers=8, attention_head_dim=64,
        num_attention_heads=4, joint_attention_dim=64, pooled_projection_dim=64,
        guidance_embeds=True, axes_dims_rope=(16, 24, 24))
    pipe.tokenizer_2 = t5_tokenizer()
    pipe.save_pretrained(folder)
    return folder


def t5_tokenizer():
    """A Unigram T5 tokenizer over the demo's words and single characters (ids below the demo
    T5's 600-entry vocabulary)."""
    import string

    from transformers import T5Tokenizer

    from lorabooth.core.models.demo import _DEMO_WORDS

    pieces = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0}
    for word in [*_DEMO_WORDS, "zorb"]:
        pieces.setdefault("\u2581" + word, -1.0)
    for char in string.ascii_lowercase + string.digits + string.punctuation:
        pieces.setdefault(char, -5.0)
        pieces.setdefault("\u2581" + char, -5.0)
    return T5Tokenizer(vocab=list(pieces.items()), extra_ids=0, model_max_length=512)


def workspace(root: Path, resolution: int, source: Path = REPO / "sample_photos") -> Path:
    photos = root / "photos"
    shutil.copytree(source, photos, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    ws = init_workspace(root / "ws", photos, model="demo", trigger="zorb")
    # No validation loss: the reference script measures none, and runs are timed whole.
    for key, value in {"train.resolution": [resolution], "train.checkpoint_every": 100000,
                       "sample.every": 0, "train.validate": False}.items():
        set_config_value(ws.root, key, value)
    return ws.root


def median_step(fn, steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bare_step_fn(trainer: Trainer):
    """A plain step on the trainer's own transformer and a fixed batch of the same shape."""
    transformer = trainer.pipe.transformer
    dev, dt = trainer.device, trainer.dtype
    x0 = trainer.latents[0][None].to(dev)
    embeds, pooled = (t[None].to(dev, dt) for t in trainer.texts[trainer.examples[0].caption])
    _, _, h, w = x0.shape
    img_ids, txt_ids = flow.image_ids(h, w, dev, dt), flow.text_ids(embeds.shape[1], dev, dt)
    guidance = torch.ones(1, device=dev)
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        noise = torch.randn_like(x0)
        sigma = torch.rand(1, device=dev)
        noisy = (1 - sigma) * x0 + sigma * noise
        with trainer.precision():  # autocast in half precision, as diffusers' example
            pred = transformer(hidden_states=flow.pack(noisy).to(dt), timestep=sigma.to(dt),
                               guidance=guidance, pooled_projections=pooled,
                               encoder_hidden_states=embeds, txt_ids=txt_ids,
                               img_ids=img_ids, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(flow.unpack(pred.float(), h, w), noise - x0)
        loss.backward()
        optimizer.step()
    return step


def uncached_run(trainer: Trainer, steps: int) -> float:
    """N steps that encode their photo and caption each time, as a trainer without caches."""
    from lorabooth.core.dataset.buckets import crop_to_bucket
    from lorabooth.core.dataset.files import open_image

    pipe = trainer.pipe
    start = time.perf_counter()
    for i in range(steps):
        example = trainer.examples[trainer.order[i][0]]
        image = crop_to_bucket(open_image(example.photo.read_bytes()), example.bucket)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
        pixels = pixels.permute(2, 0, 1)[None] / 127.5 - 1
        with torch.no_grad():
            pipe.vae.encode(pixels.to(pipe.vae.device, pipe.vae.dtype))
            pipe.encode_prompt(example.caption, example.caption,
                               device=pipe.text_encoder_2.device, max_sequence_length=32)
        trainer.train_step()
    return time.perf_counter() - start


def bench_model(name: str, source: ModelSource, root: Path, resolution: int, steps: int,
                device: str) -> list[dict]:
    ws_root = workspace(root / name, resolution)
    from lorabooth.core.workspace import Workspace

    ws = Workspace.at(ws_root)
    trainer = Trainer(ws, source=source, device=device)
    trainer.prepare()
    trainer.schedule(10**6)
    bare = median_step(bare_step_fn(trainer), steps)
    ours = median_step(trainer.train_step, steps)
    rows = [{"model": name, "case": "one step", "lorabooth_s": ours, "baseline": "bare step",
             "baseline_s": bare, "ratio": ours / bare}]
    cached_start = time.perf_counter()
    fresh = Trainer(ws, source=source, device=device)
    shutil.rmtree(ws.cache, ignore_errors=True)
    fresh.run(steps=steps)
    cached = time.perf_counter() - cached_start
    uncached = uncached_run(trainer, steps)
    rows.append({"model": name, "case": f"{steps}-step run, cached", "lorabooth_s": cached,
                 "baseline": "encode every step", "baseline_s": uncached,
                 "ratio": cached / uncached})
    return rows


def probe(ws_root: str, model: str, mode: str, steps: int, device: str) -> None:
    """In its own process (a new run): time prepare, the first step (where compiling
    happens) and the steady steps after it; print them as JSON."""
    from lorabooth.core.workspace import Workspace

    ws = Workspace.at(Path(ws_root))
    set_config_value(ws.root, "train.compile", mode)
    trainer = Trainer(ws, source=ModelSource("mid", Path(model), is_demo=True), device=device)
    trainer.prepare()
    trainer.schedule(10**6)
    start = time.perf_counter()
    trainer.train_step()
    first = time.perf_counter() - start
    steady = median_step(trainer.train_step, steps, warmup=2)
    print(json.dumps({"first": first, "steady": steady}))


def run_probe(ws_root: Path, model: Path, mode: str, steps: int, device: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench.train", "--probe", str(ws_root),
                           str(model), mode, "--steps", str(steps), "--device", device],
                          capture_output=True, text=True, check=True, env=os.environ.copy())
    return json.loads(done.stdout.strip().splitlines()[-1])


def compile_rows(root: Path, model: Path, resolution: int, steps: int, device: str) -> list:
    ws_root = workspace(root / "compile", resolution)
    eager = run_probe(ws_root, model, "off", steps, device)
    cold = run_probe(ws_root, model, "blocks", steps, device)
    warm = run_probe(ws_root, model, "blocks", steps, device)
    # Compile time: the first step's excess over an eager first step.
    cold_compile = cold["first"] - eager["first"]
    warm_compile = warm["first"] - eager["first"]
    return [
        {"model": "mid-256", "case": "step, blocks compiled", "lorabooth_s": cold["steady"],
         "baseline": "eager step", "baseline_s": eager["steady"],
         "ratio": cold["steady"] / eager["steady"]},
        {"model": "mid-256", "case": "compile time, second process", "lorabooth_s": warm_compile,
         "baseline": "first process (cold cache)", "baseline_s": cold_compile,
         "ratio": warm_compile / cold_compile if cold_compile > 0 else "-"},
    ]


def timed_cli(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, text=True, env=os.environ.copy())
    return time.perf_counter() - start


def square_photos(root: Path, captions: bool) -> Path:
    """The sample photos centre-cropped square, as the reference script's `--center_crop`
    trains them: both sides then train the same shapes (lorabooth's aspect buckets would
    train 640x832 photos at 752 tokens, where the CPU's bf16 flash attention takes 1.4x the
    time of 768: other work, not a slower trainer). `captions`: with their .txt files (the
    script opens every file in its folder as an image, so its copy has none)."""
    folder = root / ("square-photos" if captions else "reference-photos")
    if folder.exists():
        return folder
    from PIL import Image, ImageOps

    folder.mkdir(parents=True)
    for jpg in sorted((REPO / "sample_photos").glob("*.jpg")):
        with Image.open(jpg) as img:
            side = min(img.size)
            ImageOps.fit(img.convert("RGB"), (side, side)).save(folder / jpg.name, quality=95)
        if captions and jpg.with_suffix(".txt").exists():
            shutil.copy2(jpg.with_suffix(".txt"), folder / f"{jpg.stem}.txt")
    return folder


def lorabooth_run(root: Path, model: Path, resolution: int, steps: int, compile_mode: str,
                  device: str, memory: str = "auto", tag: str = "") -> float:
    """Seconds for `lorabooth train` of `steps` in a fresh workspace on the model's folder,
    on the same square photos as the reference script."""
    ws_root = workspace(root / f"ours-{compile_mode}-{memory}-{steps}{tag}", resolution,
                        square_photos(root, captions=True))
    for key, value in {"model": str(model), "train.compile": compile_mode,
                       "train.memory": memory, "train.lr_schedule": "constant"}.items():
        set_config_value(ws_root, key, value)
    env_device = {} if device == "cuda" else {"CUDA_VISIBLE_DEVICES": ""}
    os.environ.update(env_device)
    return timed_cli([sys.executable, "-m", "lorabooth.core.cli", "train", str(ws_root),
                      "--steps", str(steps)])


def reference_run(root: Path, model: Path, script: Path, resolution: int, steps: int,
                  precision: str = "no", tag: str = "") -> float:
    """Seconds for diffusers' script, unchanged, on the same model and photos: the same LoRA
    targets and rank, latents cached, text encoded once, constant learning rate; fp32, or
    with `precision` "bf16" its mixed precision (frozen weights cast to bf16, LoRA fp32)."""
    photos = square_photos(root, captions=False)
    out = root / f"reference-{precision}-{steps}{tag}"
    return timed_cli([
        sys.executable, "-m", "bench.reference", str(script),
        "--pretrained_model_name_or_path", str(model), "--instance_data_dir", str(photos),
        "--instance_prompt", "photo of zorb", "--output_dir", str(out),
        "--resolution", str(resolution), "--center_crop", "--train_batch_size", "1",
        "--max_train_steps", str(steps), "--checkpointing_steps", "100000",
        "--rank", "16", "--learning_rate", "1e-4", "--lr_scheduler", "constant",
        "--lr_warmup_steps", "0", "--mixed_precision", precision, "--cache_latents",
        "--guidance_scale", "1", "--max_sequence_length", "512", "--seed", "0",
        "--report_to", "tensorboard", "--lora_layers",
        "to_k,to_q,to_v,to_out.0,add_k_proj,add_q_proj,add_v_proj,to_add_out"])


SHORT, LONG = 10, 110  # steps of the two runs whose difference is timed
REPEATS = 3


def reference_rows(root: Path, model: Path, script: Path, resolution: int,
                   device: str) -> list[dict]:
    """s/step as (T(LONG steps) - T(SHORT steps)) / (LONG - SHORT), each a whole process, so
    loading, caching and compiling cancel out: lorabooth eager and compiled against the
    reference script, every case in turn in each of REPEATS rounds, the median kept."""
    runs = {("reference", precision): functools.partial(
        reference_run, root, model, script, resolution, precision=precision)
        for precision in ("no", "bf16")}
    # memory = "bf16" on a CPU only where it multiplies bf16 natively (else it is emulated);
    # on a GPU auto is bf16 already, and a second set of rows would time the same runs.
    memories = ("auto", "bf16") if device == "cpu" and cpu_has_bf16() else ("auto",)
    firsts = {}
    for precision in ("no", "bf16"):
        # The same for the reference: its first process reads the libraries and the model
        # from a cold disk cache, which landed in the first round's long run (0.284 s a step
        # there, 0.250 in the second, where lorabooth's rounds moved 4%).
        reference_run(root / "warm", model, script, resolution, SHORT, precision=precision)
    for memory in memories:
        for mode in ("off", "blocks", "full"):
            runs[(mode, memory)] = functools.partial(lorabooth_run, root, model, resolution,
                                                     compile_mode=mode, device=device,
                                                     memory=memory)
            # A first run fills the compile cache, so that every measured run reads it alike
            # (else the cold compile lands in whichever runs first); its time is reported.
            firsts[(mode, memory)] = lorabooth_run(root / "warm", model, resolution, SHORT,
                                                   mode, device, memory)
    per_step: dict[tuple, list[float]] = {key: [] for key in runs}
    for repeat in range(REPEATS):
        for key, run in runs.items():
            tag = f"-{repeat}"
            per_step[key].append((run(steps=LONG, tag=tag) - run(steps=SHORT, tag=tag))
                                 / (LONG - SHORT))
    reference = {precision: statistics.median(per_step[("reference", precision)])
                 for precision in ("no", "bf16")}
    rows = []
    for (mode, memory), rounds in per_step.items():
        if mode == "reference":
            continue
        ours = statistics.median(rounds)
        case = f"step, compile {mode}" + (", memory bf16" if memory == "bf16" else "")
        for precision, name in (("no", "fp32"), ("bf16", "bf16 mixed precision")):
            rows.append({"model": "mid-256", "case": case, "lorabooth_s": ours,
                         "baseline": f"diffusers train_dreambooth_lora_flux.py, {name}",
                         "baseline_s": reference[precision],
                         "ratio": ours / reference[precision],
                         "first_10_step_run_s": firsts[(mode, memory)],
                         "rounds_s": [round(r, 4) for r in rounds],
                         "baseline_rounds_s": [round(r, 4) for r in
                                               per_step[("reference", precision)]]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile rows")
    parser.add_argument("--reference", type=Path, default=None, metavar="SCRIPT",
                        help="diffusers' examples/dreambooth/train_dreambooth_lora_flux.py "
                             "(of the installed release): adds rows against it")
    parser.add_argument("--probe", nargs=3, metavar=("WS", "MODEL", "MODE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(*args.probe, args.steps, args.device)
        return
    root = Path(tempfile.mkdtemp(prefix="lorabooth-bench-train-"))
    os.environ.setdefault("LORABOOTH_CACHE", str(root / "cache"))
    try:
        demo = ModelSource("demo", ensure_demo_model(), is_demo=True)
        mid = ModelSource("mid", mid_size_model(root / "mid-model"), is_demo=True)
        rows = bench_model("demo", demo, root, args.resolution, args.steps, args.device)
        rows += bench_model("mid-256", mid, root, args.resolution, args.steps, args.device)
        if not args.no_compile:
            rows += compile_rows(root, mid.path, args.resolution, args.steps, args.device)
        if args.reference is not None:
            rows += reference_rows(root, mid.path, args.reference.resolve(), args.resolution,
                                   args.device)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Another resolution keeps its own file (the issue's own set-up was 64 px).
    name = "train" if args.resolution == 256 else f"train-{args.resolution}px"
    report(name, rows, {"device": args.device, "resolution": args.resolution,
                           "steps": args.steps, "peak_rss_mb": round(peak_rss),
                           "goal": "one-step ratio <= 1.05; cached run faster than uncached; "
                                   "second-process compile < 0.2 of the first"})
    print(f"peak process memory: {peak_rss:.0f} MB")


if __name__ == "__main__":
    main()
