"""ui.controls: one session's queue of questions, Stop and Clear, without a browser."""
from ui.controls import Controls, SessionControl
from ui.turns import notice_html


def test_questions_wait_in_order_behind_the_streaming_answer():
    c = SessionControl()
    assert c.enqueue("first") is False  # nothing before it
    assert c.next_question() == "first"
    c.begin()
    assert c.enqueue("second") is True and c.enqueue("third") is True
    assert c.queued == 2 and "2 questions wait" in notice_html(c)
    c.end()
    assert c.next_question() == "second"
    c.begin()
    assert c.queued == 1 and "1 question waits" in notice_html(c)
    c.end()
    assert c.next_question() == "third" and c.next_question() is None
    assert "wait" not in notice_html(c)


def test_stop_only_while_streaming_and_a_new_turn_resets_it():
    c = SessionControl()
    assert c.request_stop() is False and not c.stop.is_set()
    c.begin()
    assert c.request_stop() is True and c.stop.is_set()
    c.end()
    c.begin()
    assert not c.stop.is_set()


def test_clear_stops_the_answer_drops_waiting_questions_and_starts_a_new_epoch():
    c = SessionControl()
    epoch = c.begin()
    c.enqueue("asked in the old chat")
    c.clear()
    assert c.cleared_since(epoch) and c.stop.is_set() and c.next_question() is None
    assert c.begin() == epoch + 1 and not c.stop.is_set()


def test_each_session_has_its_own_control_until_dropped():
    controls = Controls()
    a, b = controls.get("a"), controls.get("b")
    assert a is controls.get("a") and a is not b
    a.clear()
    assert b.epoch == 0
    controls.drop("a")
    assert controls.get("a") is not a and len(controls) == 2
    assert controls.get(None) is not controls.get(None)  # no session: nothing shared
