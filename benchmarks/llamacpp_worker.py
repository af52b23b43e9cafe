"""llama.cpp's greedy decoding of given token ids, timed: run by benchmarks.cpu_vs_llamacpp with
the python of its own venv (llama-cpp-python installed there), so it imports nothing of this
project. Reads JSON lines on stdin: first {"gguf", "threads", "n_ctx", "max_new"}, then one prompt
(a list of token ids) a line; answers each prompt with a line {"tokens", "first_s", "total_s"}
(the first line answered: {"version"})."""
import json
import sys
import time

import llama_cpp
from llama_cpp import Llama


def main() -> None:
    job = json.loads(sys.stdin.readline())
    llm = Llama(model_path=job["gguf"], n_ctx=job["n_ctx"], n_threads=job["threads"],
                n_threads_batch=job["threads"], n_batch=512, verbose=False)
    eos = llm.token_eos()
    print(json.dumps({"version": llama_cpp.__version__}), flush=True)
    for line in sys.stdin:
        prompt = json.loads(line)
        llm.reset()
        tokens = []
        start = time.perf_counter()
        first = None
        for token in llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            if first is None:
                first = time.perf_counter() - start
            if token == eos:
                break
            tokens.append(int(token))
            if len(tokens) == job["max_new"]:
                break
        print(json.dumps({"tokens": tokens, "first_s": first, "total_s": time.perf_counter() - start}),
              flush=True)


if __name__ == "__main__":
    main()
