"""llama.cpp's greedy decoding of given token ids, timed: run by benchmarks.cpu_vs_llamacpp with
the python of its own venv (llama-cpp-python installed there), so it imports nothing of this
project. Reads {"gguf", "threads", "max_new", "prompts": [[ids]]} as JSON on stdin; writes per
prompt {"tokens", "first_s", "total_s"} as JSON on stdout."""
import json
import sys
import time

from llama_cpp import Llama


def main() -> None:
    job = json.load(sys.stdin)
    longest = max(len(p) for p in job["prompts"])
    llm = Llama(model_path=job["gguf"], n_ctx=longest + job["max_new"] + 8, n_threads=job["threads"],
                n_threads_batch=job["threads"], n_batch=512, verbose=False)
    eos = llm.token_eos()
    out = []
    for prompt in job["prompts"]:
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
        out.append({"tokens": tokens, "first_s": first, "total_s": time.perf_counter() - start})
    json.dump({"version": __import__("llama_cpp").__version__, "runs": out}, sys.stdout)


if __name__ == "__main__":
    main()
