"""fp8 matmuls on the Flux transformer's own linear shapes, against bf16 in the same run.

    python -m bench.fp8 [--out DIR]

Needs a CUDA card with fp8 tensor cores (compute capability 8.9 or newer) and torchao. For each
of FLUX.1's large linear layers at 512 and 1024 px (tokens = image + 512 text), it times:
- generation: a forward pass, bf16 against torchao's dynamic fp8 (rowwise scales, weights
  quantised once), both compiled;
- LoRA training: forward + backward to the input with the weight frozen, bf16 against torchao's
  float8 training (rowwise), both compiled (compile drops the unused weight gradient).
Ratios below 1 are the fp8 gain; layers are summed in proportion to how often FLUX.1 runs them.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"

# (name, in, out, uses per forward, which tokens): FLUX.1-dev has 19 double blocks (image and text
# streams each with q, k, v, out and a 4x MLP) and 38 single blocks (q, k, v, a 4x MLP in, and
# proj_out over the attention and MLP outputs together).
LAYERS = [
    ("double qkv/out", 3072, 3072, 19 * 4, "img"),
    ("double mlp in", 3072, 12288, 19, "img"),
    ("double mlp out", 12288, 3072, 19, "img"),
    ("single qkv", 3072, 3072, 38 * 3, "all"),
    ("single mlp in", 3072, 12288, 38, "all"),
    ("single proj_out", 15360, 3072, 38, "all"),
]


def time_ms(fn, repeat: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat * 1000


def generation_pair(linear: torch.nn.Linear, x: torch.Tensor) -> tuple[float, float]:
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    bf16 = torch.compile(linear)
    fp8_linear = copy.deepcopy(linear)
    quantize_(fp8_linear, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
    fp8 = torch.compile(fp8_linear)
    with torch.no_grad():
        return time_ms(lambda: bf16(x)), time_ms(lambda: fp8(x))


def training_pair(linear: torch.nn.Linear, x: torch.Tensor) -> tuple[float, float]:
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    wrapper = torch.nn.Sequential(copy.deepcopy(linear))
    convert_to_float8_training(wrapper, config=Float8LinearConfig.from_recipe_name("rowwise"))
    timings = []
    for module in (linear, wrapper):
        module.requires_grad_(False)
        compiled = torch.compile(module)
        x_grad = x.detach().requires_grad_(True)

        def step(compiled=compiled, x_grad=x_grad) -> None:
            compiled(x_grad).sum().backward()

        timings.append(time_ms(step))
    return timings[0], timings[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU")
    import torchao

    device = torch.device("cuda")
    rows = []
    for resolution in (512, 1024):
        img = (resolution // 16) ** 2
        for name, fan_in, fan_out, uses, which in LAYERS:
            tokens = img if which == "img" else img + 512
            linear = torch.nn.Linear(fan_in, fan_out, dtype=torch.bfloat16, device=device)
            x = torch.randn(1, tokens, fan_in, dtype=torch.bfloat16, device=device)
            gen = generation_pair(linear, x)
            train = training_pair(linear, x)
            rows.append({"resolution": resolution, "layer": name, "tokens": tokens,
                         "uses": uses, "gen_bf16_ms": round(gen[0], 4),
                         "gen_fp8_ms": round(gen[1], 4), "train_bf16_ms": round(train[0], 4),
                         "train_fp8_ms": round(train[1], 4)})
            r = rows[-1]
            print(f"{resolution:5d} {name:16s} T={tokens:5d}  generate {r['gen_bf16_ms']:.3f} -> "
                  f"{r['gen_fp8_ms']:.3f} ms   train {r['train_bf16_ms']:.3f} -> "
                  f"{r['train_fp8_ms']:.3f} ms", flush=True)
    summary = {}
    for resolution in (512, 1024):
        mine = [r for r in rows if r["resolution"] == resolution]
        for kind in ("gen", "train"):
            bf16 = sum(r[f"{kind}_bf16_ms"] * r["uses"] for r in mine)
            fp8 = sum(r[f"{kind}_fp8_ms"] * r["uses"] for r in mine)
            summary[f"{kind}_{resolution}"] = {"bf16_ms": round(bf16, 2), "fp8_ms": round(fp8, 2),
                                               "ratio": round(fp8 / bf16, 3)}
            print(f"{resolution} px {kind}: all large linears of one pass {bf16:.1f} -> "
                  f"{fp8:.1f} ms ({fp8 / bf16:.2f}x)")
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "torchao": torchao.__version__, "rows": rows, "summary": summary}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fp8.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
