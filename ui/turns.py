"""The chat's handlers: ask (streamed), retry, stop, clear, and the notice for a question sent while
an answer streams. app.py wires them to the page; every output tuple follows `OUTPUTS`.

Earlier turns live in the browser session's own state ({"display", "history", "epoch", ...});
Stop and Clear act through `ui.controls`, which the streaming handler reads after every step.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator
from typing import Any

import gradio as gr

from . import highlight, stats
from .chat import StreamView, assistant_message, check_question, user_message
from .controls import Controls, SessionControl
from .notice import notice_html as answer_notice

log = logging.getLogger("llma-rag.app")
# chatbot, state, textbox, sources, statistics, plot, comparison, Stop button, notice
OUTPUTS = ("chat", "state", "msg", "sources", "stats", "plot", "compare", "stop", "notice")
STOPPED_STATS = '<div class="llma-muted">Stopped before the end: no statistics for a cut answer.</div>'


def out(**values: Any) -> tuple:
    """An output tuple: the named values, gr.skip() for the others."""
    unknown = set(values) - set(OUTPUTS)
    if unknown:
        raise ValueError(f"unknown outputs {sorted(unknown)}")
    return tuple(values.get(name, gr.skip()) for name in OUTPUTS)


def fresh_state(epoch: int = 0) -> dict[str, Any]:
    return {"display": [], "history": [], "epoch": epoch}


def notice_html(control: SessionControl) -> str:
    """The line under the input: how many of this session's questions wait."""
    if control.queued <= 0:
        return '<div class="llma-notice-none"></div>'  # not "": the page keeps an old value for it
    waiting = "1 question waits" if control.queued == 1 else f"{control.queued} questions wait"
    return (f'<div class="llma-notice">⏳ {waiting} for the current answer to end; '
            f'{"it is" if control.queued == 1 else "they are"} asked next.</div>')


def plot_value(steps: Any) -> gr.BarPlot:
    """The steps plot's update; None (not an empty frame) when there is nothing to plot: Gradio's
    plot takes its colours from the first data it gets after None."""
    if not steps:
        return gr.BarPlot(value=None)
    frame = stats.steps_frame(steps)
    x_lim, y_lim = stats.plot_limits(frame, len(steps))
    return gr.BarPlot(value=frame, x_lim=x_lim, y_lim=y_lim)


class ChatTurns:
    """`service`: ui.service.Service; `make_settings(*values)`: RagSettings from the settings
    widgets (ValueError on bad values); `session_key(request)`: the answer cache's session."""

    def __init__(self, service: Any, make_settings: Callable[..., Any],
                 session_key: Callable[[Any], str | None], compare_hint: str = "") -> None:
        self.service, self.make_settings, self.session_key = service, make_settings, session_key
        self.compare_hint = compare_hint
        self.controls = Controls()

    def control(self, request: Any) -> SessionControl:
        return self.controls.get(self.session_key(request))

    def _problem(self) -> str | None:
        service = self.service
        if service.ready.is_set():
            return None
        return service.status if service.error else f"The model is not ready yet: {service.status}"

    # -- events outside the queue ------------------------------------------------------------
    def sent(self, message: Any, values: tuple, request: Any) -> tuple[Any, str]:
        """Runs at once on every send: takes the question from the textbox into this session's
        queue (`respond_next` then answers it) and, when an answer is still streaming, says
        that the question waits for it. A question that cannot be asked now (empty, too long,
        model not ready, bad settings) is a warning, and stays in the textbox."""
        question, problem = check_question(message)
        if not problem:
            try:
                self.make_settings(*values)
            except (ValueError, TypeError) as exc:
                problem = f"Invalid settings: {exc}"
        problem = problem or self._problem()
        if problem:
            gr.Warning(problem)
            return gr.skip(), gr.skip()
        control = self.control(request)
        if control.enqueue(question):
            gr.Info(f"Queued: “{question[:60]}{'…' if len(question) > 60 else ''}” is asked when "
                    "the current answer ends.")
        return "", notice_html(control)

    def stop(self, request: Any) -> None:
        if not self.control(request).request_stop():
            gr.Info("No answer is being written.")

    def clear(self, state: Any, request: Any) -> tuple:
        """A new, empty chat; an answer streaming now is stopped and dropped."""
        control = self.control(request)
        control.clear()
        return self._cleared(control)

    def _cleared(self, control: SessionControl) -> tuple:
        return out(chat=[], state=fresh_state(control.epoch), sources=highlight.render_sources([]),
                   stats=stats.stats_html(None), plot=plot_value([]), compare=self.compare_hint,
                   stop=gr.update(interactive=False), notice=notice_html(control))

    def forget(self, request: Any) -> None:
        self.controls.drop(self.session_key(request))

    # -- queued events -------------------------------------------------------------------------
    def retry(self, state: Any, values: tuple, request: Any) -> Iterator[tuple]:
        """The last answer again: its turn is dropped and its question asked anew."""
        question = (state or {}).get("last_question")
        control = self.control(request)
        if not question or state.get("epoch", 0) != control.epoch or len(state["display"]) < 2:
            gr.Warning("Nothing to retry.")
            yield out()
            return
        trimmed = dict(state, display=state["display"][:-2], history=state.get("last_history", []))
        yield from self.respond(question, trimmed, values, request)

    def respond_next(self, state: Any, values: tuple, request: Any) -> Iterator[tuple]:
        """Answer the oldest question `sent` queued for this session (none: nothing to do)."""
        question = self.control(request).next_question()
        if question is None:
            yield out()
            return
        yield from self.respond(question, state, values, request)

    def respond(self, message: Any, state: Any, values: tuple, request: Any) -> Iterator[tuple]:
        """Stream one answer (see OUTPUTS). Earlier turns come from this browser's own state;
        cached answers from this session's cache only."""
        control = self.control(request)
        epoch = control.begin()
        try:
            yield from self._respond(message, state, values, request, control, epoch)
        finally:
            control.end()

    def _respond(self, message: Any, state: Any, values: tuple, request: Any,
                 control: SessionControl, epoch: int) -> Iterator[tuple]:
        question, problem = check_question(message)
        problem = problem or self._problem()
        notice = notice_html(control)
        if problem:
            gr.Warning(problem)
            yield out(notice=notice)
            return
        try:
            settings = self.make_settings(*values)
        except (ValueError, TypeError) as exc:
            gr.Warning(f"Invalid settings: {exc}")
            yield out(notice=notice)
            return
        if not isinstance(state, dict) or state.get("epoch", 0) != epoch:
            state = fresh_state(epoch)  # written by a turn of a chat cleared since
        history = [dict(m) for m in state["history"]]
        display = state["display"] + [user_message(question), assistant_message(highlight.render_waiting())]
        turn = {"epoch": epoch, "last_question": question, "last_history": history}
        yield out(chat=display, msg="", plot=plot_value([]), compare=self.compare_hint,
                  stop=gr.update(interactive=True), notice=notice)
        view = StreamView()
        deltas = self.service.pipe.stream(question, history=history, settings=settings,
                                          session=self.session_key(request))
        stopped = False
        try:
            for delta in deltas:
                view.add(delta)
                if control.cleared_since(epoch):
                    yield self._cleared(control)
                    return
                if control.stop.is_set() and view.answer is None:
                    stopped = True
                    break
                display[-1] = assistant_message(view.html())
                yield out(chat=display)
        except Exception as exc:  # a failed answer must not take the app down
            log.exception("generation failed")
            error = self.service.public(str(exc))
            display[-1] = assistant_message(highlight.render_answer(
                view.text + f"\n\n⚠️ Error: {error}"))
            gr.Warning(f"Generation failed: {error}")
            yield out(chat=display, state={"display": display, "history": history, **turn},
                      stop=gr.update(interactive=False))
            return
        finally:
            if isinstance(deltas, Generator):
                deltas.close()  # a stopped or dropped answer ends the engine's generation too
        if control.cleared_since(epoch):
            yield self._cleared(control)
            return
        display[-1] = assistant_message(view.html(stopped=stopped))
        new_state = {"display": display, "history": history + [
            {"role": "user", "content": question}, {"role": "assistant", "content": view.text}], **turn}
        answer = view.answer
        sources = answer_notice(getattr(answer, "notice", "")) + \
            highlight.render_sources(view.passages, view.spans, getattr(answer, "sources", None))
        if stopped or answer is None:
            yield out(chat=display, state=new_state, sources=sources, stats=STOPPED_STATS,
                      plot=plot_value([]), stop=gr.update(interactive=False))
            return
        yield out(chat=display, state=new_state, sources=sources,
                  stats=stats.stats_html(answer.stats, view.stop_reason, answer.steps),
                  plot=plot_value(answer.steps), stop=gr.update(interactive=False))

