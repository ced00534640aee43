"""What each text mask costs per text family at B/32 (77 tokens): FLOPs, mask and hidden memory, kernels.

For every family x `--text-mask`: the text tower's parameters, its training GFLOPs per caption
(towers.profile.count_flops, on the meta device), the bytes per step of what the mask adds (the
Transformer's attention mask; the Mixer's token-mixing hidden activations per block), and which of
PyTorch's scaled-dot-product-attention backends accept the Transformer's mask on this device (each
backend alone under torch.nn.attention.sdpa_kernel, one forward of the B/32 text tower on 2 captions).
On CUDA it also measures the peak memory of one training step of the text tower at --batch-size.

    python -m benchmarks.performance.text_mask_cost  # CPU: counts, bytes and CPU kernels
    python -m benchmarks.performance.text_mask_cost --device cuda --batch-size 256 \
        --out results/text_mask/cost.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import towers
from benchmarks.provenance import write_json
from runfolder.errors import OneLineParser, run_main
from towers.profile import count_flops
from towers.registry import text_mask_overrides, tower_config
from towers.text_mask import TEXT_MASKS

VARIANT = "B/32"
FAMILIES = ("transformer", "mixer")
BACKENDS = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
CAPTIONS = ["a photo of a tench.", "a bad photo of the great white shark, a type of fish."]


def _tower(family: str, mask: str, device: str | torch.device) -> torch.nn.Module:
    with torch.device(device):
        return towers.build_tower(family, "text", VARIANT, **text_mask_overrides(family, mask))


def mask_bytes(family: str, mask: str, batch: int, bytes_per_value: int = 4) -> dict:
    """Bytes per step the mask adds: the Transformer's attention mask (one tensor for all blocks), or
    the Mixer's token-mixing hidden activations (per block, kept for the backward pass)."""
    config = tower_config(family, "text", VARIANT)
    length = 77
    if family == "transformer":
        values = batch * config["heads"] * length * length if mask == "caption" else length * length
        return {"attention_mask_bytes": values * bytes_per_value}
    mixing = _tower(family, mask, "meta").blocks[0].mlp_tokens
    hidden = mixing.fc1.out_features
    per_block = batch * config["width"] * hidden * bytes_per_value
    return {"token_hidden": hidden, "hidden_bytes_per_block": per_block}


def accepted_backends(mask: str, device: str) -> list[str]:
    """SDPA backends that run the Transformer text tower's forward with this mask on `device`."""
    torch.manual_seed(0)
    tower = _tower("transformer", mask, device).train()  # train mode: no MultiheadAttention fast path
    tokens = towers.tokenize(CAPTIONS).to(device)
    accepted = []
    for name, backend in BACKENDS.items():
        try:
            with torch.no_grad(), sdpa_kernel([backend]):
                tower(tokens)
            accepted.append(name)
        except RuntimeError:  # "No available kernel" / "No viable backend": the mask (or device) is refused
            pass
    return accepted


def step_peak_bytes(family: str, mask: str, batch: int) -> int:
    """Peak CUDA memory of one bf16-autocast forward + backward of the text tower at `batch`."""
    torch.manual_seed(0)
    tower = _tower(family, mask, "cuda").train()
    tokens = towers.tokenize(CAPTIONS * (batch // 2)).cuda()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        tower(tokens).float().square().mean().backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - start


def cost_rows(device: str, batch: int) -> list[dict]:
    rows = []
    for family in FAMILIES:
        for mask in TEXT_MASKS:
            tower = _tower(family, mask, "meta").train()
            tokens = torch.zeros(1, 77, dtype=torch.long, device="meta")
            with torch.no_grad():
                gflops = count_flops(lambda tower=tower, tokens=tokens: tower(tokens)) / 1e9
            row = dict(family=family, text_mask=mask, mode=getattr(tower, "token_mixing", None),
                       text_params=sum(p.numel() for p in tower.parameters()), train_gflops=gflops,
                       batch=batch, **mask_bytes(family, mask, batch))
            if family == "transformer":
                row["sdpa_backends_accepting"] = accepted_backends(mask, device)
            if device.startswith("cuda"):
                row["step_peak_bytes"] = step_peak_bytes(family, mask, batch)
            rows.append(row)
    return rows


def markdown(rows: list[dict], device: str) -> str:
    lines = [f"| text family | --text-mask | mode | text params | train GFLOPs/caption | mask adds (batch "
             f"{rows[0]['batch']}, fp32) | SDPA backends accepting ({device}) |",
             "|---|---|---|---:|---:|---|---|"]
    for row in rows:
        if row["family"] == "transformer":
            adds = f"{row['attention_mask_bytes'] / 2**20:.2f} MiB mask, all blocks"
        else:
            adds = f"{row['token_hidden']} hidden: {row['hidden_bytes_per_block'] / 2**20:.0f} MiB per block"
        if "step_peak_bytes" in row:
            adds += f"; step peak {row['step_peak_bytes'] / 2**30:.2f} GiB"
        backends = ", ".join(row.get("sdpa_backends_accepting", [])) or "(no attention)"
        lines.append(f"| {row['family']} | `{row['text_mask']}` | {row['mode'] or 'attention'} | "
                     f"{row['text_params'] / 1e6:.2f}M | {row['train_gflops']:.3f} | {adds} | {backends} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = OneLineParser(prog="python -m benchmarks.performance.text_mask_cost", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=256, help="captions per process per step")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.batch_size < 2 or args.batch_size % 2:
        parser.exit(2, f"error: --batch-size {args.batch_size}: expected an even number >= 2\n")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.exit(2, f"error: --device {args.device}: no CUDA device here\n")
    rows = cost_rows(args.device, args.batch_size)
    print(markdown(rows, args.device))
    print(f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}")
    if args.out:
        write_json(args.out, rows)  # strict JSON (NaN -> null), atomic, creates the folder
        print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    run_main(main)
