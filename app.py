"""llma-rag web chat: `python app.py` (see --help). Wires the Gradio UI to `rag/`; no retrieval or
decoding logic lives here. Binds to 127.0.0.1:7860 unless told otherwise."""
import os

# Before gradio / transformers are imported: no telemetry, no hub access.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402

from ui import highlight, stats, uploads  # noqa: E402
from ui.service import Service  # noqa: E402
from ui.startup import answers_at_once, load_examples, load_pipeline, remote_service  # noqa: E402
from ui.turns import ChatTurns, fresh_state  # noqa: E402

ROOT = Path(__file__).resolve().parent
MODEL_EVENTS = "model"  # concurrency id shared by everything that uses the model
EXCLUSIVE_EVENTS = "uploads"  # a session's uploads indexed one batch at a time
log = logging.getLogger("llma-rag.app")
COMPARE_HINT = ('<div class="llma-muted">"Compare with plain greedy" re-runs the last question '
                'with and without copying (same references, no cached answers), alternately after '
                'a warm-up, and reports the median speedup and its spread.</div>')


def page_assets() -> dict:
    """The page's CSS, its script (copy buttons copy the text shown: ui/page.js) and theme, for
    `launch`."""
    return dict(css=highlight.CSS + stats.CSS, js=(ROOT / "ui" / "page.js").read_text(encoding="utf-8"),
                theme=gr.themes.Soft())


def make_settings(top_k, min_n, max_n, k, adaptive, max_new_tokens, temperature, use_llma,
                  use_history):
    """RagSettings from the settings widgets; ValueError (shown to the user) on bad values."""
    from llma import LLMAConfig
    from rag import RagSettings

    llma = LLMAConfig(enabled=bool(use_llma), min_n=int(min_n), max_n=int(max_n), k=int(k),
                      adaptive=bool(adaptive), max_new_tokens=int(max_new_tokens),
                      temperature=float(temperature))
    return RagSettings(top_k=int(top_k), llma=llma, use_history_refs=bool(use_history))


def _not_ready(service: Service) -> str | None:
    if service.ready.is_set():
        return None
    return service.status if service.error else f"The model is not ready yet: {service.status}"


def session_key(request: gr.Request | None) -> str | None:
    """The browser session's private key for the pipeline's answer cache (Gradio's session hash:
    one per page load or API client); None (no cache) when Gradio gives none."""
    session = getattr(request, "session_hash", None)
    return session if isinstance(session, str) and session else None


def build_ui(service: Service, examples: list[str] | None = None,
             max_new_tokens: int = 256, answers: int = 1) -> gr.Blocks:
    examples = load_examples() if examples is None else examples

    turns = ChatTurns(service, make_settings, session_key, COMPARE_HINT)

    def respond(message, state, top_k, min_n, max_n, k, adaptive, max_new_tokens, temperature,
                use_llma, use_history, request: gr.Request):
        """Stream one answer: (chatbot, state, textbox, sources, stats, plot, compare, stop,
        notice); see ui.turns."""
        values = (top_k, min_n, max_n, k, adaptive, max_new_tokens, temperature, use_llma, use_history)
        yield from turns.respond(message, state, values, request)

    def retry(state, top_k, min_n, max_n, k, adaptive, max_new_tokens, temperature, use_llma,
              use_history, retry_data: gr.RetryData, request: gr.Request):
        values = (top_k, min_n, max_n, k, adaptive, max_new_tokens, temperature, use_llma, use_history)
        yield from turns.retry(state, values, request)

    def respond_next(state, top_k, min_n, max_n, k, adaptive, max_new_tokens, temperature,
                     use_llma, use_history, request: gr.Request):
        values = (top_k, min_n, max_n, k, adaptive, max_new_tokens, temperature, use_llma, use_history)
        yield from turns.respond_next(state, values, request)

    def sent(message, top_k, min_n, max_n, k, adaptive, max_new_tokens, temperature, use_llma,
             use_history, request: gr.Request):
        values = (top_k, min_n, max_n, k, adaptive, max_new_tokens, temperature, use_llma, use_history)
        return turns.sent(message, values, request)

    def stop(request: gr.Request):
        turns.stop(request)

    def clear(state, request: gr.Request):
        return turns.clear(state, request)

    def compare(state, top_k, min_n, max_n, k, adaptive, max_new_tokens, temperature, use_llma,
                use_history, request: gr.Request):
        values = (top_k, min_n, max_n, k, adaptive, max_new_tokens, temperature, use_llma, use_history)
        question = state.get("last_question")
        if not question:
            gr.Warning("Ask a question first; the comparison re-runs the last one.")
            return gr.skip()
        if problem := _not_ready(service):
            gr.Warning(problem)
            return gr.skip()
        try:
            settings = make_settings(*values)
            result = service.pipe.compare_with_greedy(question, state.get("last_history", []),
                                                      settings, session=session_key(request))
        except ValueError as exc:
            gr.Warning(f"Invalid settings: {exc}")
            return gr.skip()
        except Exception as exc:
            log.exception("comparison failed")
            gr.Warning(service.public(f"Comparison failed: {exc}"))
            return gr.skip()
        return stats.comparison_html(result)

    def add_documents(files, request: gr.Request, progress=gr.Progress()):
        """Index the uploads for this session only: (message, files, uploads list, status)."""
        session = session_key(request)
        if problem := _not_ready(service) or (None if session else "Uploads need a browser session."):
            gr.Warning(problem)
            return problem, gr.skip(), gr.skip(), gr.skip()
        result = uploads.add_uploads(service.pipe, session, files, progress)
        if result.rejected:
            gr.Warning("; ".join(f"{n}: {r}" for n, r in result.rejected))
        if result.saved:
            gr.Info(f"Indexed {len(result.saved)} document(s) for this session.")
        return (result.message(), None, *uploads_view(session))

    def remove_documents(names, request: gr.Request):
        """Remove the selected uploads of this session: (message, uploads list, status)."""
        session = session_key(request)
        if _not_ready(service) or not session:
            return gr.skip(), gr.skip(), gr.skip()
        return uploads.remove_uploads(service.pipe, session, names), *uploads_view(session)

    def uploads_view(session):
        documents = service.pipe.documents(session)
        return (gr.CheckboxGroup(choices=list(documents), value=[]),
                uploads.status_line(service.status, documents))

    def forget_session(request: gr.Request):
        """The tab was closed: drop its cached answers and uploads."""
        session = session_key(request)
        turns.forget(request)
        if service.pipe is not None and session is not None:
            service.pipe.forget_session(session)

    def poll_status():
        """(status, timer, min n-gram, copy length, adaptive). Once the model is ready, its drafting
        defaults come in the same update as "Ready." (they depend on its backend: on a GPU every step
        verifies a fixed block, so full-block copies); before, the sliders keep their values."""
        if not service.ready.is_set():  # polled again unless loading failed
            return service.status, gr.Timer(active=service.error is None), gr.skip(), gr.skip(), gr.skip()
        defaults = service.pipe.draft_defaults
        return service.status, gr.Timer(active=False), defaults.min_n, defaults.k, defaults.adaptive

    with gr.Blocks(title="llma-rag: document QA with LLMA") as demo:
        state = gr.State(fresh_state())
        gr.Markdown("## llma-rag · document QA with LLMA (Inference with Reference)\n"
                    "Answers stream token by token. Highlighted text was copied from a reference "
                    "and verified by the model, several tokens per forward pass; the output is "
                    "identical to plain greedy decoding.", elem_id="llma-title")
        status = gr.Markdown("Connecting…", elem_id="llma-status")  # poll_status on page load
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                gr.HTML(highlight.legend_html(), elem_id="llma-legend")
                chatbot = gr.Chatbot(label="Chat", show_label=False, elem_id="llma-chat", height=520,
                                     latex_delimiters=[], buttons=["copy", "copy_all"],
                                     feedback_options=None, group_consecutive_messages=False)
                with gr.Row():
                    msg = gr.Textbox(placeholder="Ask about the documents… (Enter sends, "
                                     "Shift+Enter: new line)", show_label=False, scale=6,
                                     lines=1, max_lines=6, elem_id="llma-input", autofocus=True)
                    send = gr.Button("Ask", variant="primary", scale=1, min_width=80,
                                     elem_id="llma-send")
                    stop_btn = gr.Button("Stop", variant="stop", scale=1, min_width=80,
                                         interactive=False, elem_id="llma-stop")
                notice = gr.HTML("", elem_id="llma-notice")
                with gr.Row():
                    compare_btn = gr.Button("Compare with plain greedy", elem_id="llma-compare-btn")
                    clear_btn = gr.Button("Clear chat", elem_id="llma-clear")
                if examples:
                    gr.Examples(examples=[[q] for q in examples], inputs=[msg],
                                label="Example questions", examples_per_page=8)
            with gr.Column(scale=2):
                with gr.Accordion("Statistics (last answer)", open=True):
                    stats_box = gr.HTML(stats.stats_html(None), elem_id="llma-stats")
                    plot = gr.BarPlot(None, x="step", y="accepted",
                                      color="source", color_map=stats.plot_colors(),
                                      color_title="copied from",
                                      x_lim=[0, 10], y_lim=[0, 5], x_axis_format="d",
                                      y_axis_format="d", title="Copied tokens per forward pass",
                                      height=220, x_title="forward pass", y_title="copied tokens",
                                      elem_id="llma-plot")
                    compare_box = gr.HTML(COMPARE_HINT, elem_id="llma-compare-out")
                with gr.Accordion("Sources", open=True):
                    sources = gr.HTML(highlight.render_sources([]), elem_id="llma-sources")
                with gr.Accordion("Settings", open=False):
                    top_k = gr.Slider(0, 10, value=4, step=1, label="Passages (top k)")
                    # Drafting: the HF loop's defaults until the model is loaded (poll_status).
                    min_n = gr.Slider(1, 8, value=2, step=1, label="Min n-gram")
                    max_n = gr.Slider(1, 8, value=4, step=1, label="Max n-gram")
                    k = gr.Slider(1, 64, value=8, step=1, label="Copy length k")
                    adaptive = gr.Checkbox(True, label="Adaptive copy length")
                    max_new = gr.Slider(8, 1024, value=max_new_tokens, step=8, label="Max new tokens",
                                        elem_id="llma-max-new")
                    temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0 = greedy)")
                    use_llma = gr.Checkbox(True, label="LLMA on (off = plain decoding)")
                    use_history = gr.Checkbox(True, label="Copy from earlier turns")
                with gr.Accordion("Add documents", open=False):
                    gr.Markdown(uploads.PRIVACY_NOTE, elem_id="llma-upload-note")
                    files = gr.File(label=f"Upload {', '.join(uploads.ALLOWED_SUFFIXES)} "
                                    f"(≤ {uploads.MAX_UPLOAD_BYTES // 2**20} MB each)",
                                    file_count="multiple", type="filepath", elem_id="llma-upload")
                    upload_btn = gr.Button("Add to index", elem_id="llma-upload-btn")
                    upload_msg = gr.Textbox(label="Indexing", interactive=False, lines=3,
                                            elem_id="llma-upload-msg")
                    upload_list = gr.CheckboxGroup([], label="Your uploads (this session only)",
                                                   elem_id="llma-uploads")
                    remove_btn = gr.Button("Remove selected", elem_id="llma-remove-btn")
        settings = [top_k, min_n, max_n, k, adaptive, max_new, temperature, use_llma, use_history]
        outputs = [chatbot, state, msg, sources, stats_box, plot, compare_box, stop_btn, notice]
        # Answers: as many at once as the engine decodes together (1: the one-at-a-time engine).
        model = dict(concurrency_id=MODEL_EVENTS, concurrency_limit=answers)
        for trigger in (send.click, msg.submit):
            # Every question is kept: queued behind this session's answer, with a notice.
            # Queued (warnings and notices need the queue), but never waits: no concurrency limit.
            trigger(sent, [msg, *settings], [msg, notice], api_name=False, show_progress="hidden",
                    trigger_mode="multiple", concurrency_limit=None).then(
                respond_next, [state, *settings], outputs, api_name=False, trigger_mode="multiple",
                show_progress="minimal", **model)
        # The API's "ask" (gradio_client, reliability.load): the question in, the same outputs.
        gr.Button(visible=False, elem_id="llma-ask-api").click(
            respond, [msg, state, *settings], outputs, api_name="ask", **model)
        chatbot.retry(retry, [state, *settings], outputs, api_name=False, **model)
        stop_btn.click(stop, None, None, api_name=False, concurrency_limit=None)  # never waits
        for clearing in (clear_btn.click, chatbot.clear):  # the chatbot's own trash icon too
            clearing(clear, state, outputs, queue=False, api_name=False)
        compare_btn.click(compare, [state, *settings], compare_box, api_name="compare", **model)
        upload_btn.click(add_documents, files, [upload_msg, files, upload_list, status],
                         api_name="add_documents", concurrency_id=EXCLUSIVE_EVENTS, concurrency_limit=1)
        remove_btn.click(remove_documents, upload_list, [upload_msg, upload_list, status],
                         api_name="remove_documents", concurrency_id=EXCLUSIVE_EVENTS,
                         concurrency_limit=1)
        timer = gr.Timer(1.0, active=False)  # started by the page load while the model loads
        polled = [status, timer, min_n, k, adaptive]
        timer.tick(poll_status, None, polled, queue=False, show_progress="hidden", api_name=False)
        demo.load(poll_status, None, polled, queue=False, api_name="status")
        demo.unload(forget_session)
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default=env("LLMA_HOST", "127.0.0.1"), help="bind address [LLMA_HOST]")
    p.add_argument("--port", type=int, default=int(env("LLMA_PORT", "7860")), help="[LLMA_PORT]")
    p.add_argument("--index", default=env("LLMA_INDEX", str(ROOT / "indexes" / "demo")),
                   help="index folder, built/updated from --docs at start [LLMA_INDEX]")
    p.add_argument("--docs", default=env("LLMA_DOCS", str(ROOT / "data" / "docs")),
                   help="documents folder, indexed for every user [LLMA_DOCS]")
    p.add_argument("--model", default=env("LLMA_MODEL"), help="model (default: bundled) [LLMA_MODEL]")
    p.add_argument("--device", default=env("LLMA_DEVICE"), help="cpu, cuda, auto [LLMA_DEVICE]")
    p.add_argument("--dtype", default=env("LLMA_DTYPE"), help="float32, bfloat16… [LLMA_DTYPE]")
    p.add_argument("--max-new-tokens", type=int, default=int(env("LLMA_MAX_NEW_TOKENS", "256")),
                   help="initial 'max new tokens' setting [LLMA_MAX_NEW_TOKENS]")
    p.add_argument("--server", default=env("LLMA_SERVER"),
                   help="answer with a remote `python -m rag.serve --index` server at this URL [LLMA_SERVER]")
    p.add_argument("--api-key", default=env("LLMA_API_KEY"), help="that server's API key [LLMA_API_KEY]")
    return p.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    # Before the start-up thread: importing transformers from two threads at once can fail.
    answers = answers_at_once(args.device)
    service = remote_service(args) if args.server else \
        Service(args.docs, args.index, args.model, args.device, args.dtype, loader=load_pipeline)
    service.start(background=True)
    demo = build_ui(service, max_new_tokens=args.max_new_tokens, answers=answers)
    demo.queue(default_concurrency_limit=answers, max_size=64)
    demo.launch(server_name=args.host, server_port=args.port, show_error=True,
                max_file_size=uploads.MAX_UPLOAD_BYTES, footer_links=["api"], **page_assets())


if __name__ == "__main__":
    main()
