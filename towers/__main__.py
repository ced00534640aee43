"""`python -m towers`: every registered model's parameters and GFLOPs per sample, as a table.

Non-embedding parameters leave out token and position embeddings (the count scaling laws use);
train GFLOPs = 3 x (image + text) forward GFLOPs, as launch/train.py records them.

Built on the meta device (nothing is allocated), so the whole table takes seconds.
"""

from __future__ import annotations

from runfolder.errors import OneLineParser, run_main
from towers.clip import available_models
from towers.profile import profile


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m towers", description=__doc__)
    parser.add_argument("--models", nargs="*", default=None, help="model names (default: all)")
    args = parser.parse_args(argv)
    names = args.models or available_models()
    unknown = [n for n in names if n not in available_models()]
    if unknown:
        parser.error(f"unknown model(s) {unknown}: expected names from {available_models()}")
    header = (f"{'model':<28}{'image params':>14}{'text params':>14}{'total params':>15}"
              f"{'non-emb params':>16}{'image GFLOPs':>14}{'text GFLOPs':>13}{'train GFLOPs':>14}")
    print(header)
    print("-" * len(header))
    for name in names:
        row = profile(name)
        print(f"{name:<28}{row['image_params']:>14,}{row['text_params']:>14,}{row['total_params']:>15,}"
              f"{row['non_embedding_params']:>16,}{row['image_gflops']:>14.3f}{row['text_gflops']:>13.3f}"
              f"{3 * (row['image_gflops'] + row['text_gflops']):>14.3f}")


if __name__ == "__main__":
    run_main(main)
