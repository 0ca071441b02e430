"""Every retry and every wait of this package, in one place: what is transient, how long to keep trying.

Four kinds of trying again live here, each with its sleep and clock injectable so that tests never wait
for real:

* :class:`RetryPolicy`: a remote call (a shared-log request) retried with exponential back-off while its
  error is transient. Backends say which of their own errors are transient (``is_transient`` on the
  backend, see :func:`classify`); Firestore calls are made with ``retry=None`` so that only this policy
  runs (the client's own default retries ``RESOURCE_EXHAUSTED`` on commit for about 60 s, which turns a
  too-large commit on the emulator into a minute-long hang).
* :class:`Backoff`: the wait between whole syncs after a failure (``watch``), with jitter so that devices
  that failed together do not retry together.
* :func:`patiently`: a local attempt that cannot succeed *yet* (a row lock held by the application), tried
  again for a bounded time.
* :func:`bounded_retries`: an attempt that lost a race (an application write during a reconcile pass),
  repeated a bounded number of times, then given up with a clear error.

:func:`until_stopped` keeps a listener's connection open until told to stop, backing off after failures;
:func:`wait_until` waits for a condition (a server starting), for the test helpers.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import tenacity

from .errors import SyncError

T = TypeVar("T")
log = logging.getLogger(__name__)
Sleep = Callable[[float], None]
Clock = Callable[[], float]

#: Errors of the standard library that are transient whoever raised them.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


def is_transient(exc: BaseException) -> bool:
    """True when trying the same thing again may succeed, as far as this package knows.

    Its own errors say so (``SyncError.transient``); a lost connection or a time-out is transient; a
    database error that is not the program's fault (SQLAlchemy's ``OperationalError``: the server went
    away, a lock time-out, a serialization failure) is too. A backend's own foreign errors are for the
    backend to judge (:func:`classify`).
    """
    if isinstance(exc, SyncError):
        return exc.transient
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    from sqlalchemy.exc import OperationalError

    return isinstance(exc, OperationalError)


def classify(exc: BaseException, backend: object | None = None) -> bool:
    """Whether ``exc`` is transient: :func:`is_transient`, or the backend's ``is_transient(exc)`` (the
    optional part of the shared-log protocol by which a backend names its own transient errors)."""
    if is_transient(exc):
        return True
    judge = getattr(backend, "is_transient", None)
    return bool(judge(exc)) if callable(judge) else False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential back-off with full jitter, bounded in attempts and in total time.

    The wait before attempt n is uniform in [0, min(max_wait, initial_wait * 2**n)]; no attempt starts
    once ``total_timeout`` seconds have passed since the first (so the bound is ``total_timeout`` plus one
    call's own timeout).
    """

    initial_wait: float = 0.2
    max_wait: float = 10.0
    total_timeout: float = 60.0
    max_attempts: int = 12

    def retrying(
        self,
        *,
        transient: Callable[[BaseException], bool] = is_transient,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
        on_retry: Callable[[tenacity.RetryCallState], None] | None = None,
    ) -> tenacity.Retrying:
        """A tenacity ``Retrying`` that retries errors ``transient`` accepts and re-raises the last one."""
        started = clock()
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(transient),
            wait=tenacity.wait_random_exponential(multiplier=self.initial_wait, max=self.max_wait),
            stop=_stop_after(self.total_timeout, clock, started)
            | tenacity.stop_after_attempt(self.max_attempts),
            sleep=sleep,
            before_sleep=on_retry,
            reraise=True,
        )

    def call(self, fn: Callable[[], T], **kwargs: Any) -> T:
        """Run ``fn`` under this policy (``kwargs`` as for :meth:`retrying`)."""
        return self.retrying(**kwargs)(fn)


def _stop_after(seconds: float, clock: Clock, started: float) -> tenacity.stop.stop_base:
    """Stop once ``seconds`` passed on ``clock`` (tenacity's own ``stop_after_delay`` reads the real one)."""

    class _StopAfter(tenacity.stop.stop_base):
        def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
            return clock() - started >= seconds

    return _StopAfter()


DEFAULT_POLICY = RetryPolicy()
#: One attempt, no retry: for tests and for callers that retry whole syncs themselves.
NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(slots=True)
class Backoff:
    """The wait after the n-th failure in a row: ``minimum * 2**(n-1)``, capped at ``maximum``, times a
    jitter factor in [0.5, 1] (``jitter`` returns a number in [0, 1]; inject a constant in tests)."""

    minimum: float = 1.0
    maximum: float = 60.0
    jitter: Callable[[], float] | None = None
    """None: ``random.random``."""

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` (>= 1) failures in a row."""
        base = min(self.maximum, self.minimum * 2.0 ** max(0, failures - 1))
        return base * (0.5 + 0.5 * (self.jitter or random.random)())


def patiently(
    attempt: Callable[[], T],
    *,
    busy: Callable[[BaseException], bool],
    patience: float,
    first_wait: float = 0.005,
    max_wait: float = 0.1,
    sleep: Sleep = time.sleep,
    clock: Clock = time.monotonic,
) -> T | None:
    """Call ``attempt`` until it succeeds, waiting (doubling from ``first_wait`` up to ``max_wait``) while
    it fails with an error that ``busy`` accepts; None if it was still busy after ``patience`` seconds.

    Other errors are raised at once. The caller decides what giving up means (e.g. to wait blocking).
    """
    started = clock()
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(busy),
        wait=tenacity.wait_exponential(multiplier=first_wait, max=max_wait),
        stop=_stop_after(patience, clock, started),
        sleep=sleep,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except Exception as exc:
        if busy(exc):
            return None
        raise


def bounded_retries(
    attempt: Callable[[], T],
    *,
    lost: type[BaseException],
    attempts: int,
    give_up: Callable[[int], BaseException],
    sleep: Sleep = time.sleep,
    wait: float = 0.01,
) -> T:
    """Call ``attempt`` again while it raises ``lost`` (it lost a race and rolled back), at most
    ``attempts`` times in all, waiting a little more each time; then raise ``give_up(attempts)`` (with the
    last ``lost`` error as its cause)."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(lost),
        wait=tenacity.wait_random_exponential(multiplier=wait, max=1.0),
        stop=tenacity.stop_after_attempt(attempts),
        sleep=sleep,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except lost as exc:
        raise give_up(attempts) from exc


def until_stopped(
    run: Callable[[], None],
    *,
    stop: threading.Event,
    backoff: Backoff,
    transient: Callable[[BaseException], bool] = is_transient,
) -> None:
    """Run ``run`` again and again until ``stop`` is set (a listener's connection loop): after it fails
    with a transient error, wait ``backoff`` (longer after each failure in a row, cut short by ``stop``);
    a permanent error ends the loop, logged."""
    failures = 0
    while not stop.is_set():
        try:
            run()
            failures = 0
        except Exception as exc:
            if not transient(exc):
                log.warning("giving up: %s", exc, exc_info=True)
                return
            failures += 1
            log.debug("failed %d time(s) in a row; trying again", failures, exc_info=True)
            stop.wait(backoff.delay(failures))


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.1,
    sleep: Sleep = time.sleep,
    clock: Clock = time.monotonic,
) -> bool:
    """Poll ``condition`` every ``interval`` seconds until it holds (True) or ``timeout`` passed (False)."""
    deadline = clock() + timeout
    while not condition():
        if clock() >= deadline:
            return False
        sleep(interval)
    return True
