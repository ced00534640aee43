"""The training precision, chosen by the machine: `--precision auto` (the default) resolves to bf16 autocast
where the device runs bf16 natively and to fp32 elsewhere, before the recipe is hashed.

Native bf16 means: a CUDA GPU that reports bf16 support; an x86 CPU with AVX512_BF16 or AMX tiles whose
kernels are allowed to use them (torch's dispatch level, `ATEN_CPU_CAPABILITY`, and oneDNN's,
`ONEDNN_MAX_CPU_ISA`, both honoured, so an AVX2-only CPU can be emulated on a newer one). Without native
bf16 a CPU emulates bf16 matrix products in fp32 pieces, an order of magnitude slower than fp32
(docs/results.md#default-run has the measurements), so `auto` never picks it there; an explicit
`--precision bf16` still runs and warns in one line.

    python -m towers.precision            # what `auto` resolves to on this machine, and why
"""

from __future__ import annotations

import torch

from runfolder.errors import OneLineParser, run_main
from runfolder.vocabulary import PRECISIONS

MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # Accelerate's names


def cpu_bf16_support() -> tuple[bool, str]:
    """(native, reason) for bf16 on this CPU, as the kernels that would run it see it."""
    capability = torch.backends.cpu.get_cpu_capability()
    cpu = getattr(torch, "cpu", None)
    has_avx512_bf16 = bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)())
    has_amx = bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)())
    hardware = "AMX" if has_amx else "AVX512_BF16" if has_avx512_bf16 else None
    if hardware is None:
        return False, f"CPU capability {capability}, no AVX512_BF16 or AMX instructions"
    if not capability.startswith("AVX512"):  # dispatch capped below AVX-512 (e.g. ATEN_CPU_CAPABILITY)
        return False, f"CPU has {hardware} but torch dispatches at {capability}"
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():  # oneDNN capped (ONEDNN_MAX_CPU_ISA)
        return False, f"CPU has {hardware} but oneDNN may not use it"
    return True, f"CPU capability {capability} with {hardware}"


def native_bf16(device: torch.device | str) -> tuple[bool, str]:
    """(native, reason) for bf16 autocast on `device` (cpu or cuda; other devices: not native)."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
        # is_bf16_supported(including_emulation=False) exists from torch 2.3; older: compute capability 8+
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:
            native = torch.cuda.get_device_capability(index)[0] >= 8
        return native, f"{name} {'supports' if native else 'does not support'} bf16"
    if device.type == "cpu":
        return cpu_bf16_support()
    return False, f"device {device.type}: bf16 support unknown"


def resolve_precision(requested: str, device: torch.device | str) -> tuple[str, str, str | None]:
    """(resolved precision, why, warning or None) for a requested --precision on `device`."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    native, reason = native_bf16(device)
    if requested == "auto":
        resolved = "bf16" if native else "fp32"
        return resolved, f"auto: {reason}", None
    warning = None
    if requested == "bf16" and not native and torch.device(device).type == "cpu":
        warning = (f"--precision bf16 on a CPU without native bf16 ({reason}): emulated and slow, "
                   "--precision auto would train in fp32")
    return requested, f"requested ({reason})", warning


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m towers.precision", description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved, why, _ = resolve_precision("auto", device)
    print(f"--precision auto on {device}: {resolved} ({why})")


if __name__ == "__main__":
    run_main(main)
