"""`CGlue`: the CPU decoding step's work besides the 4-bit products in a few C calls per layer
instead of dozens of small torch ops: norms, residual additions, bias and rotary, SiLU, cache
writes (csrc/elementwise.c), the attention of decoding rows (csrc/attention.c) and an 8-bit output
head (csrc/head.c, `Q8Matrix`).

The C sources (csrc/) are compiled once per machine with the system's C compiler (`cc`, -O3
-march=native) into a cache folder and loaded with ctypes. `CGlue.build` returns None
(and logs why) where there is no compiler or the build fails; callers then keep the torch ops.

Contract (csrc/common.h's): each row's results depend on that row's inputs only, never on the row count
or the other rows; the same bits on every call on one machine and build. They are not the torch
ops' bits (another summation order, another exp): a different engine setting, whose outputs are
its own greedy's.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)
SOURCES = sorted(Path(__file__).with_name("csrc").glob("*.[ch]"))
# -fopenmp: libgomp, the OpenMP runtime torch's CPU build already loaded (one runtime, one team)
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-std=gnu11", "-fopenmp")
CHUNK = 128  # csrc/attention.c's keys per work item
Q8_GROUP = 32  # csrc/head.c's inputs per scale of an 8-bit matrix (GGUF's Q8_0 blocks)
_P, _I, _F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
SIGNATURES = {
    "llma_norm": (_P, _P, _F, _I, _I, _P, _I),
    "llma_add_norm": (_P, _P, _P, _P, _F, _I, _I, _P, _P, _I),
    "llma_qkv_rotary": (_P, _P, _P, _P, _I, _I, _I, _I, _P, _P, _P, _I),
    "llma_silu_mul": (_P, _I, _I, _P, _I),
    "llma_cache_write": (_P, _P, _P, _P, _P, _P, _I, _I, _I, _I),
    "llma_q8_matmul": (_P, _P, _P, _I, _I, _I, _I, _P),
    "llma_attend": (_P, _P, _P, _P, _P, _P, _P, _P, _I, _I, _I, _I, _I, _I, _F, _I, _P, _P),
}


def _cpu_key() -> str:
    """What a -march=native build depends on: the machine's CPU flags and model."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = sorted({ln for ln in info.splitlines() if ln.startswith(("flags", "model name"))})
        return "\n".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def _compile(compiler: str, folder: Path) -> Path:
    """The shared library for this source, compiler and CPU in `folder`, built if missing."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    texts = [f"{p.name}\n{p.read_text()}" for p in SOURCES]
    key = hashlib.sha256("\n".join((*texts, version, " ".join(FLAGS), _cpu_key())).encode())
    library = folder / f"llma-glue-{key.hexdigest()[:16]}.so"
    if library.is_file():
        return library
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        built = Path(tmp) / library.name
        sources = [str(p) for p in SOURCES if p.suffix == ".c"]
        result = subprocess.run([compiler, *FLAGS, "-o", str(built), *sources, "-lm"],
                                capture_output=True, text=True, timeout=300)
        if result.returncode:
            raise RuntimeError(f"{compiler} failed: {result.stderr.strip()[-500:]}")
        built.replace(library)  # atomic: a concurrent build of the same key writes the same file
    return library


def c_compiler() -> str | None:
    """The path of the system's C compiler (cc, else gcc, else clang); None where there is none."""
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _pointer(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class CGlue:
    """The compiled functions, on contiguous CPU tensors (checked); see csrc/ for each."""

    def __init__(self, library: Path) -> None:
        self.library = library
        lib = ctypes.CDLL(str(library))
        for name, args in SIGNATURES.items():
            getattr(lib, name).argtypes = args
            getattr(lib, name).restype = None
        self._lib = lib

    @staticmethod
    def build(folder: Path) -> CGlue | None:
        """The glue compiled into (or found in) `folder`; None, logged, where it cannot be built."""
        compiler = c_compiler()
        if compiler is None:
            log.info("no C compiler: the CPU step's elementwise work stays in torch ops")
            return None
        try:
            return CGlue(_compile(compiler, folder))
        except (OSError, RuntimeError, subprocess.SubprocessError) as err:
            log.warning("the CPU glue did not build (%s): the elementwise work stays in torch ops", err)
            return None

    @staticmethod
    def _check(*tensors: torch.Tensor | None) -> None:
        for t in tensors:
            if t is not None and (t.device.type != "cpu" or not t.is_contiguous()):
                raise ValueError("the CPU glue takes contiguous CPU tensors")

    def norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """rms_norm(x [rows, n] fp32) * weight, in bf16."""
        self._check(x, weight)
        out = torch.empty(x.shape, dtype=torch.bfloat16)
        self._lib.llma_norm(x.data_ptr(), weight.data_ptr(), eps, x.shape[0], x.shape[1], out.data_ptr(),
                            torch.get_num_threads())
        return out

    def add_norm(self, x: torch.Tensor, delta: torch.Tensor, bias: torch.Tensor | None,
                 weight: torch.Tensor, eps: float, wide: bool = False) -> torch.Tensor:
        """x [rows, n] (fp32) += delta (bf16 [rows, n]) (+ bias), in place; returns rms_norm(x) *
        weight in bf16 (fp32 if `wide`)."""
        self._check(x, delta, bias, weight)
        out = torch.empty(x.shape, dtype=torch.float32 if wide else torch.bfloat16)
        self._lib.llma_add_norm(x.data_ptr(), delta.data_ptr(), _pointer(bias), weight.data_ptr(), eps,
                                x.shape[0], x.shape[1], None if wide else out.data_ptr(),
                                out.data_ptr() if wide else None, torch.get_num_threads())
        return out

    def qkv_rotary(self, qkv: torch.Tensor, bias: torch.Tensor | None, cos: torch.Tensor,
                   sin: torch.Tensor, heads: int, kv_heads: int, head_dim: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """qkv [rows, (heads + 2 kv) * d] (bf16) + bias -> q [rows, heads, d], k, v [rows, kv, d]
        (fp32), q and k rotated by the rows' cos, sin [rows, d]."""
        self._check(qkv, bias, cos, sin)
        if head_dim > 512:
            raise ValueError(f"the CPU glue takes head_dim up to 512, got {head_dim}")
        rows = qkv.shape[0]
        q = torch.empty(rows, heads, head_dim)
        k, v = torch.empty(rows, kv_heads, head_dim), torch.empty(rows, kv_heads, head_dim)
        self._lib.llma_qkv_rotary(qkv.data_ptr(), _pointer(bias), cos.data_ptr(), sin.data_ptr(), rows, heads,
                                  kv_heads, head_dim, q.data_ptr(), k.data_ptr(), v.data_ptr(),
                                  torch.get_num_threads())
        return q, k, v

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        """gate_up [rows, 2 n] (bf16: gate, then up) -> silu(gate) * up [rows, n] in bf16."""
        self._check(gate_up)
        rows, n = gate_up.shape[0], gate_up.shape[1] // 2
        out = torch.empty(rows, n, dtype=torch.bfloat16)
        self._lib.llma_silu_mul(gate_up.data_ptr(), rows, n, out.data_ptr(), torch.get_num_threads())
        return out

    def cache_write(self, k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    slots: torch.Tensor, at: torch.Tensor) -> None:
        """Rows' keys and values k, v [rows, kv, d] (fp32) into one layer's caches [slots, kv, cap, d]
        at (slots, at) [rows] (int64)."""
        self._check(k_cache, v_cache, k, v, slots, at)
        _, kv, cap, d = k_cache.shape
        self._lib.llma_cache_write(k_cache.data_ptr(), v_cache.data_ptr(), k.data_ptr(), v.data_ptr(),
                                   slots.data_ptr(), at.data_ptr(), k.shape[0], kv, d, cap)

    def attend(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, rows: torch.Tensor,
               meta: torch.Tensor, scale: float, out: torch.Tensor) -> None:
        """Attention of decoding rows over their cache slots, into out [any, heads * d] (fp32).

        q [any, heads, d]; k_cache, v_cache [slots, kv, cap, d] (one layer's); rows [n]: the rows of
        q and out to compute; meta [4, n] (int64): per row its slot, its block's root position, the
        keys it sees (positions 0 .. seen - 1) and its draft's shift (a position p > root is at
        slot entry p + shift). A row's bits depend on its query and the keys it sees only.
        """
        self._check(q, k_cache, v_cache, rows, meta, out)
        n, (_, heads, d), (_, kv, cap, _) = rows.numel(), q.shape, k_cache.shape
        if heads % kv or heads // kv > 16 or d > 512:
            raise ValueError("the CPU glue's attention takes up to 16 query heads per key head, head_dim <= 512")
        chunks = -(-int(meta[2].max()) // CHUNK)
        part = torch.empty(n * kv * chunks * (heads // kv) * (d + 2))
        m = meta.data_ptr()
        self._lib.llma_attend(q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), rows.data_ptr(), m, m + 8 * n,
                              m + 16 * n, m + 24 * n, n, heads, kv, d, cap, chunks, scale,
                              torch.get_num_threads(), part.data_ptr(), out.data_ptr())

    def q8_matmul(self, x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """x [rows, in] (fp32) @ (q * scale).T -> [rows, out] (fp32); q [out, in] (int8), scale
        [out, in / Q8_GROUP] (fp32): `Q8Matrix`'s. A row's bits depend on its own x only."""
        self._check(x, q, scale)
        out = torch.empty(x.shape[0], q.shape[0])
        self._lib.llma_q8_matmul(x.data_ptr(), q.data_ptr(), scale.data_ptr(), x.shape[0], q.shape[0], q.shape[1],
                                 torch.get_num_threads(), out.data_ptr())
        return out


class Q8Matrix:
    """`weight` [out, in] as 8-bit levels, a scale per Q8_GROUP inputs (GGUF's Q8_0 layout): the
    scale is the group's largest magnitude / 127, so a matrix dequantized from Q8_0 blocks comes
    back exactly (`exact`); any other is rounded to its groups' levels. `glue.q8_matmul` multiplies."""

    def __init__(self, weight: torch.Tensor) -> None:
        out, inputs = weight.shape
        if inputs % Q8_GROUP:
            raise ValueError(f"8-bit weights need inputs in multiples of {Q8_GROUP}, got {inputs}")
        w = weight.detach().float().reshape(out, inputs // Q8_GROUP, Q8_GROUP)
        scale = w.abs().amax(-1) / 127
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        self.q = torch.round(w / scale[..., None]).clamp_(-127, 127).to(torch.int8).reshape(out, inputs)
        self.scale = scale.contiguous()
        self.exact = bool(torch.equal((self.q.view(out, -1, Q8_GROUP).float() * scale[..., None]).reshape(out, inputs),
                                      weight.detach().float()))
