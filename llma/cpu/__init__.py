"""The CPU decode path: the layers' weights as 4-bit groups (the bundled GGUF's own Q4_1 levels) run
through torch's CPU int4 kernel, for the batch engine (llma.batch) on CPU."""
