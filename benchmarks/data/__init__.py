"""Every data set the suite reads or makes, below both the benchmark runners and `launch/`.

    files        where data lives (shared data, cache), file sha256, the one-line InputError
    tar_stream   a strict, fast tar member reader
    shards       WebDataset shards in the LAION / img2dataset layout: specs, decoding, bad-sample counts,
                 the ordered evaluation loader
    toy          the embedded toy set (generated on first use into the cache); toy_drawing draws it
    imagenet     ImageNet folders (ILSVRC val layout) and `.cls` shards
    sts_sets     the STS test sets (shared TSVs, or MTEB's HF datasets)
    captions     captioned image folders (captions.tsv) and the toy val split with its captions
    make_shards  `python -m benchmarks.data.make_shards`: your own image-caption pairs as shards
"""
