"""Admission on its own: slots per request, the audio budget, one 503 message per engine state, and
Retry-After from the measured drain rate."""

from __future__ import annotations

import pytest

from server.admission import Admission, EngineState
from server.errors import ApiError


def _admission(state: EngineState | None = None, **kw) -> Admission:
    state = state or EngineState(ready=True, stopping=False)
    return Admission(kw.pop("max_requests", 2), kw.pop("max_audio_seconds", 100.0), lambda: state)


def test_slots_count_requests_and_free_on_leave():
    adm = _admission()
    a, b = adm.enter(), adm.enter()
    with pytest.raises(ApiError) as full:
        adm.enter()
    assert full.value.status == 429 and full.value.code == "queue_full"
    assert full.value.headers["Retry-After"] == "1"  # nothing has finished yet: no rate measured
    adm.leave(a)
    adm.leave(a)  # once only
    c = adm.enter()
    assert adm.requests == 2
    for t in (b, c):
        adm.leave(t)
    assert adm.requests == 0


def test_audio_budget_refuses_what_does_not_fit_now_but_never_a_lone_request():
    adm = _admission(max_requests=10, max_audio_seconds=100.0)
    a, b, c = adm.enter(), adm.enter(), adm.enter()
    adm.reserve_audio(a, 60.0)
    with pytest.raises(ApiError) as over:
        adm.reserve_audio(b, 60.0)
    assert over.value.status == 429 and "audio" in over.value.message
    adm.reserve_audio(c, 40.0)  # fits exactly
    adm.leave(a)
    adm.leave(c)
    assert adm.audio_seconds == 0
    adm.reserve_audio(b, 600.0)  # alone: longer than the budget, still admitted
    assert adm.audio_seconds == 600.0


@pytest.mark.parametrize("state,code", [
    (EngineState(ready=False, stopping=False), "not_ready"),
    (EngineState(ready=False, stopping=True), "shutting_down"),
    (EngineState(ready=False, stopping=False, load_error="model 'x': broken"), "model_load_failed"),
])
def test_engine_states_are_503_before_any_slot(state, code):
    adm = _admission(state)
    with pytest.raises(ApiError) as err:
        adm.enter()
    assert err.value.status == 503 and err.value.code == code
    assert adm.requests == 0


@pytest.mark.parametrize("gap,expected", [(0.3, 1), (1.2, 2), (7.5, 8), (500.0, 60)])
def test_retry_after_follows_the_drain_rate(gap, expected):
    """Finishes ``gap`` seconds apart: one slot frees every ``gap`` seconds (capped at a minute)."""
    now = [0.0]
    adm = Admission(100, 100.0, lambda: EngineState(ready=True, stopping=False), clock=lambda: now[0])
    for t in [adm.enter() for _ in range(5)]:
        adm.leave(t)
        now[0] += gap
    assert adm.retry_after() == expected
