"""Retry policy for calls to remote services, in one place: what is transient, how long to keep trying.

Firestore calls are made with ``retry=None`` so that only this policy runs: the client library's own
default retries ``RESOURCE_EXHAUSTED`` on commit for about 60 s, which turns a too-large commit on the
emulator (its 4 MiB cap answers 429) into a minute-long hang. Our writes are idempotent (deterministic ids,
create-only), so this policy may also retry ``DEADLINE_EXCEEDED`` and ``ABORTED`` on commit, which the
client deliberately does not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import tenacity
from google.api_core import exceptions as gexc

T = TypeVar("T")

#: google.api_core errors for UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED and INTERNAL.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.Aborted,
    gexc.ResourceExhausted,
    gexc.InternalServerError,
    gexc.RetryError,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """True when trying the same call again may succeed (network, overload, contention)."""
    return isinstance(exc, TRANSIENT_ERRORS)


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
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[tenacity.RetryCallState], None] | None = None,
    ) -> tenacity.Retrying:
        """A tenacity ``Retrying`` that retries transient errors and re-raises the last error."""
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            wait=tenacity.wait_random_exponential(multiplier=self.initial_wait, max=self.max_wait),
            stop=tenacity.stop_before_delay(self.total_timeout)
            | tenacity.stop_after_attempt(self.max_attempts),
            sleep=sleep,
            before_sleep=on_retry,
            reraise=True,
        )

    def call(self, fn: Callable[[], T], **kwargs: Any) -> T:
        """Run ``fn`` under this policy."""
        return self.retrying(**kwargs)(fn)


DEFAULT_POLICY = RetryPolicy()
#: One attempt, no retry: for tests and for callers that retry whole syncs themselves.
NO_RETRY = RetryPolicy(max_attempts=1)
