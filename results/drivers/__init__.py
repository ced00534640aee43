"""The experiment drivers: each trains a committed comparison through launch/train.py (as subprocesses),
scores it, and writes its outputs and report into a folder of results/.

    python -m results.drivers.reference        # the reference comparison -> results/reference/
    python -m results.drivers.tuning           # equal tuning of both arms -> results/tuning/
    python -m results.drivers.controls         # the toy's controls -> results/pooling/, results/toy_variants/
    python -m results.drivers.text_mask_2x2    # the text-mask factorial -> results/text_mask/
    python -m results.drivers.scaling_sweep run   # the scaling-law sweep -> results/scaling/
    python -m results.drivers.scaling_estimate    # its wall time, from a few timed steps

The report they call (`python -m results.report`) and its modules are the .py files of results/; the
folders of results/ are the committed outputs.
"""
