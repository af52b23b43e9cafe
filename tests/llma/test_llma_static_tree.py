"""Several drafts packed into the static backend's one block (llma.static with `tree` = N).

The drafts follow the same last token (the block's first row); each draft's rows read the keys after
it from the draft's own slots, and `keep` moves the kept draft's keys into place. Greedy steps run the
same packed kernels, so LLMA is bit-identical to greedy through the same backend. On CPU in fp32
(SDPA, one attention per draft); the split-KV kernel's tree is tested in
test_llma_split_attention.py, and on a GPU below.
"""
import pytest
import torch

from llma.engine import Engine, LLMAConfig
from llma.static import StaticBackend, select_backend
from llma.options import DEFAULT_PACKED_DRAFTS, EngineOptions
from llma.static.packing import draft_caps, pack, single
from test_llma_static import _hf_greedy, _ids, _tiny, expect_row_invariance
from test_llma_static_rows import _rag_prompts, llma_on_pieces

BLOCK, TREE = 16, 4


def test_draft_caps_share_half_the_block_among_the_later_drafts():
    assert draft_caps(32, 1) == (31,)
    assert draft_caps(32, 6) == (31, 3, 3, 3, 3, 3)  # 15 slots for the five later drafts
    assert draft_caps(32, 5) == (31, 4, 4, 4, 3)
    assert draft_caps(16, 4) == (15, 3, 2, 2)
    with pytest.raises(ValueError, match="at most 8 drafts"):
        draft_caps(16, 9)


def test_pack_lays_the_drafts_after_the_root():
    p = pack([[7, 1, 2], [7, 3], [7, 4, 5, 6]], 8, 4)
    assert p.ids == [7, 1, 2, 3, 4, 5, 6, 0]
    assert p.rel == [0, 1, 2, 1, 1, 2, 3, 7]  # positions after the root; the padding row its own
    assert p.draft == [0, 0, 0, 1, 2, 2, 2, 0]
    assert p.shift == [0, 2, 3, 0]  # draft 1's first token sits 2 slots past its position
    assert p.index == [[0, 1, 2], [0, 3], [0, 4, 5, 6]]
    assert p.info() == p.rel + p.draft + p.shift
    one = single([7, 1, 2], 4, 2)
    assert (one.ids, one.rel, one.draft, one.shift, one.index) == ([7, 1, 2, 0], [0, 1, 2, 3], [0] * 4, [0, 0],
                                                                   [[0, 1, 2]])
    for bad in ([], [[7, 1], [8, 2]], [[7, 1, 2, 3, 4], [7, 5, 6, 7, 8]], [[7]] * 5, [[]]):
        with pytest.raises(ValueError, match="packed block"):
            pack(bad, 8, 4)


def _packed_rows_equal_each_draft_alone(model, **options):
    """forward_rows' logits equal each draft's alone, bitwise; after `keep` the sequence goes on as
    if the kept draft's tokens had been fed alone."""
    prompt = _ids(30, 1)
    rows = [[5, 6, 7, 8], [5, 9, 10], [5, 11], [5, 12, 13, 14, 15]]
    st = StaticBackend(model, block=BLOCK, packed_drafts=TREE, **options)
    st.prefill(prompt)
    logits = st.forward_rows(rows)
    assert logits.shape[:2] == (4, 5) and st.cached == 35
    alone = StaticBackend(model, block=BLOCK, packed_drafts=TREE, **options)
    for row, got in zip(rows, logits):
        alone.prefill(prompt)
        assert torch.equal(got[: len(row)], alone.forward(row))
    st.keep(3, 30 + 1 + 2)  # the last draft's first two tokens: their keys move after the root
    assert st.cached == 33
    alone.prefill(prompt)
    alone.forward([5, 12, 13])
    assert torch.equal(st.forward([14, 1, 2]), alone.forward([14, 1, 2]))


def test_packed_rows_equal_each_draft_alone_and_keep_moves_the_kept_one(request):
    expect_row_invariance(request, torch.float32, BLOCK)
    _packed_rows_equal_each_draft_alone(_tiny().model)


def test_keep_moves_keys_onto_slots_they_overlap(request):
    """A kept draft that starts one slot after the root's next and keeps 4 tokens: its keys move
    over slots they themselves occupy (copied through a clone); the sequence goes on as if fed alone."""
    expect_row_invariance(request, torch.float32, BLOCK)
    model, prompt = _tiny().model, _ids(30, 1)
    st, alone = StaticBackend(model, block=BLOCK, packed_drafts=TREE), StaticBackend(model, block=BLOCK, packed_drafts=TREE)
    st.prefill(prompt)
    st.forward_rows([[5, 6], [5, 9, 10, 11, 12, 13]])  # the second draft's slots: 2..6, its shift 1
    st.keep(1, 30 + 1 + 4)
    alone.prefill(prompt)
    alone.forward([5, 9, 10, 11, 12])
    assert st.cached == alone.cached == 35
    assert torch.equal(st.forward([13, 1, 2]), alone.forward([13, 1, 2]))


def test_forward_argmax_gives_each_rows_argmax_of_its_logits():
    """The argmax made in the step, mapped to each draft's rows, equals the argmax of forward_rows'
    logits for the same rows (and of forward's for one row), on a packed, a side-by-side and a plain
    backend; the cache goes on the same way after keep or trim."""
    model, prompt = _tiny().model, _ids(30, 1)
    rows = [[5, 6, 7, 8], [5, 9, 10], [5, 11]]
    for options in ({"packed_drafts": TREE}, {"cache_copies": 3}):
        a, b = StaticBackend(model, block=BLOCK, **options), StaticBackend(model, block=BLOCK, **options)
        a.prefill(prompt), b.prefill(prompt)
        got, logits = a.forward_argmax(rows).rows(), b.forward_rows(rows)
        assert got == [logits[i, : len(r)].argmax(-1).tolist() for i, r in enumerate(rows)]
        a.keep(1, 30 + 1 + 2), b.keep(1, 30 + 1 + 2)
        assert a.forward_argmax([[10, 3]]).rows() == [b.forward([10, 3]).argmax(-1).tolist()]
        a.trim(33), b.trim(33)
        assert a.cached == b.cached == 33
        assert torch.equal(a.forward([10, 4]), b.forward([10, 4]))
    plain = StaticBackend(model, block=BLOCK)
    plain.prefill(prompt)
    with pytest.raises(ValueError, match="forward_argmax needs 1 to 16 tokens"):
        plain.forward_argmax([list(range(17))])
    assert plain.forward_argmax([[5, 6]]).index == ((0, 1),) and plain.cached == 32


def test_a_kept_draft_moves_in_its_own_sequence_only(request):
    """`keep` leaves the move to the next step; a new prompt's prefill cancels it, so nothing of the
    last answer is moved into the new sequence."""
    expect_row_invariance(request, torch.float32, BLOCK)
    model, first, second = _tiny().model, _ids(30, 1), _ids(40, 2)  # slots 31..33: the new prompt's
    st, fresh = StaticBackend(model, block=BLOCK, packed_drafts=TREE), StaticBackend(model, block=BLOCK, packed_drafts=TREE)
    st.prefill(first)
    st.forward_rows([[5, 6], [5, 9, 10, 11]])
    st.keep(1, 30 + 1 + 3)  # would move 3 keys from slots 33.. onto 31..
    st.prefill(second)
    fresh.prefill(second)
    assert torch.equal(st.forward(list(range(3, 18))), fresh.forward(list(range(3, 18))))


def test_tree_bad_input():
    model = _tiny().model
    bad_options = ({"packed_drafts": -1}, {"packed_drafts": 2, "cache_copies": 2},
                   {"packed_drafts": 2, "attention": "bmm"}, {"packed_drafts": 9, "block": 16})
    for bad in bad_options:
        with pytest.raises(ValueError, match="packed_drafts|drafts"):
            StaticBackend(model, **bad)
    st = StaticBackend(model, block=8, packed_drafts=3)
    st.prefill(_ids(10, 5))
    with pytest.raises(ValueError, match="forward_rows needs"):
        st.forward_rows([[1]] * 4)
    with pytest.raises(ValueError, match="same token"):
        st.forward_rows([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="at most 8 tokens"):
        st.forward_rows([[1, 2, 3, 4, 5], [1, 6, 7, 8, 9]])
    st.forward_rows([[1, 2], [1, 3]])
    with pytest.raises(ValueError, match="keep needs"):
        st.keep(3, 11)
    st.keep(1, 12)
    with pytest.raises(ValueError, match="keep needs a forward_rows"):
        st.keep(1, 12)  # once per forward_rows
    assert st.cached == 12 and st.drafts_per_step == 3 and st.name == "static+tree3"


def test_packed_drafts_chosen_through_the_options():
    model = _tiny().model
    backend = select_backend(model, EngineOptions("static", packed_drafts=4))
    assert backend.draft_caps == draft_caps(32, 4) and backend.drafts_per_step == 4
    assert select_backend(model, EngineOptions("static")).drafts_per_step == 1  # CPU: one draft


def test_llma_with_a_tree_bit_identical_to_greedy_and_uses_it():
    loaded = _tiny()
    prompt, _, _, greedy, events = llma_on_pieces(loaded, StaticBackend(loaded.model, block=BLOCK, packed_drafts=TREE))
    assert greedy == _hf_greedy(loaded.model, prompt, 40)
    assert max(e.candidates for e in events) > 1
    assert sum(e.accepted for e in events) > 10


@pytest.mark.slow
@pytest.mark.shared_data("llma-rag/rag.jsonl")
def test_smollm_with_a_tree_identical_to_greedy_fp32(smollm, shared_data):
    """The real default model, fp32 on CPU, two rag.jsonl prompts: LLMA with 6 drafts packed in the
    block gives greedy's tokens, greedy through the packed backend gives plain greedy's (first prompt)."""
    tree = StaticBackend(smollm.model, block=32, packed_drafts=6, max_len=2048)
    one = StaticBackend(smollm.model, block=32, max_len=2048)
    config = LLMAConfig(max_new_tokens=32)
    for i, p in enumerate(_rag_prompts(smollm.tokenizer, 2, shared_data)):
        greedy = Engine(smollm, backend=tree).generate(p.prompt, p.references, config.greedy()).tokens
        llma = list(Engine(smollm, backend=tree).stream(p.prompt, p.references, config))
        assert [t for e in llma for t in e.new_tokens] == greedy
        if i == 0:
            plain = Engine(smollm, backend=one).generate(p.prompt, p.references, config.greedy()).tokens
            assert plain == greedy
        assert max(e.candidates for e in llma) > 1


@pytest.mark.cuda
def test_cuda_graphs_with_a_tree_llma_bit_identical_to_greedy():
    from test_llma_split_attention import _tiny as _tiny_16  # 16-wide heads, as split attention needs

    loaded = _tiny_16("cuda", torch.bfloat16)
    backend = select_backend(loaded.model)  # the default on CUDA: DEFAULT_PACKED_DRAFTS packed, compiled
    assert backend.name == f"static-graphs+compile+tree{DEFAULT_PACKED_DRAFTS}" and backend.attention == "split"
    assert Engine(loaded, backend=backend).warm_up() and len(backend.graph_cache.steps) == 1  # the step's graph, made
    _packed_rows_equal_each_draft_alone(loaded.model, attention="split")  # graphs: auto on CUDA
    assert max(e.candidates for e in llma_on_pieces(loaded, backend, seed=11)[-1]) > 1
