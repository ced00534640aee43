"""Names the layers share: the values of recipe fields that towers, training and the report all read.

Standard library only, so `results/` can import them beside `launch/` and `towers/` (one definition,
no copies). Each tuple lists the accepted values, the default first.

    from runfolder.vocabulary import IMAGE_INITS, IMAGE_POOLS, TOY_TASKS
"""

from __future__ import annotations

# The image tower's initial weights. `library`: what its library gives (open_clip's ViT: PyTorch's layer
# defaults, since open_clip's VisionTransformer.init_parameters is a no-op; timm's Mixer: timm's init).
# `original`: the init of the tower's original training code (the ViT: CLIP's normal init, the scheme
# open_clip applies to its text Transformer; the Mixer: the Flax defaults of the Mixer paper's JAX code).
IMAGE_INITS = ("library", "original")
# How the image tower pools its tokens. `library`: the tower's own (ViT: the class token; Mixer: the mean
# of the patch tokens); `avg`: the mean of the patch tokens; `map`: attention pooling with one learned
# query (open_clip's AttentionalPooler).
IMAGE_POOLS = ("library", "avg", "map")
# The embedded toy set's task: `standard` (one large target, small distractors) or `hard` (a smaller
# target among more and larger distractors): benchmarks/data/toy.py.
TOY_TASKS = ("standard", "hard")
