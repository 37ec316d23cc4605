"""`[retention]`: how long finished rows stay in the hot tables and their side tables.

One model for the config section and the retention move (`store.run_retention`, the processor's
`retention` job every `interval_s`); `shared.runtime.config` loads it as the `[retention]`
section.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RetentionSettings(BaseModel):
    """How long finished data stays (seconds) and how much one statement moves.

    `finished_after_s`: terminal rows stay in the hot table this long, then move to history;
    `dead_s`: dead rows (kept longer so `requeue_dead` finds them); `parts_s`: outbound_part
    rows (as long as receipts can arrive); `events_s`: event log; `body_after_s`: message text
    in history tables; `batch`: rows per statement; `max_batches`: statements per table and
    run; `interval_s`: how often the processor runs the move. Dedupe keys are purged only after
    their own `expires_at`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    finished_after_s: float = Field(default=3600, ge=0)  # move finished rows to history after
    body_after_s: float = Field(default=86400 * 7, ge=0)  # then blank message bodies
    dead_s: float = Field(default=86400 * 7, ge=0)  # dead rows stay requeueable this long
    parts_s: float = Field(default=86400 * 3, ge=0)  # outbound_part kept while receipts can come
    events_s: float = Field(default=86400 * 30, ge=0)
    batch: int = Field(default=5000, ge=1)  # rows per move statement
    max_batches: int = Field(default=100, ge=1)  # statements per table and run
    interval_s: float = Field(default=30, gt=0)
