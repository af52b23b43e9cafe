"""The default model's prefill at 150 tokens, then at each length given, then exit with nothing freed.

    heaptrack -o /tmp/hw_short python -m reliability.high_water
    heaptrack -o /tmp/hw_long python -m reliability.high_water 400
    heaptrack_print -f /tmp/hw_long.zst -d /tmp/hw_short.zst -l 1 -n 3 -s 3

Run under a native heap profiler twice, with and without a longer prompt: the difference in what
is still allocated at exit names what keeps memory after a longer input (the high-water mark of
benchmarks/results/reliability/shape_memory.md). It collects garbage, then exits without interpreter
teardown, so that what is allocated then is what the process held.
"""
from __future__ import annotations

import gc
import os
import sys


def main(argv: list[str]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from llma.loading import load_model

    torch.set_num_threads(1)
    model = load_model(device="cpu").model
    tokens = list(range(100, 100 + max([150, *map(int, argv)])))
    with torch.inference_mode():
        for n in [150, *map(int, argv)]:
            model(input_ids=torch.tensor([tokens[:n]]), use_cache=True, logits_to_keep=1)
    gc.collect()  # the last output's KV cache sits in reference cycles: free it
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
