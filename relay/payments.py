"""Payment semantics (SPEC 11) as pure functions: the stage rank that says which status is
stale, and the review reasons. The counting itself happens in Redis (relay.ledger.record's
claim script), so two workers racing on one payment still agree.
"""

from __future__ import annotations

# created 0 < pending, expired, cancelled, failed 1 < paid 2 < completed 3. A late completed
# after expired is news (3 > 1), not stale; review and other are never stale.
RANKS = {
    "payment.created": 0,
    "payment.pending": 1,
    "payment.expired": 1,
    "payment.cancelled": 1,
    "payment.failed": 1,
    "payment.paid": 2,
    "payment.completed": 3,
}
REVIEW_REASONS = ("underpaid", "overpaid", "late", "compliance", "other")
FINAL = ("completed", "expired", "cancelled", "failed")  # no later stage is expected


def rank(event_type: str) -> int | None:
    """The stage of an event type; None for types that are never stale (review, other)."""
    return RANKS.get(event_type)
