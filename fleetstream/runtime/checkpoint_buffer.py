"""Finish each bundle before a checkpoint's barrier, so that no output is left in a buffer
that nothing flushes.

Upstream: Beam's Flink runner (2.62, `DoFnOperator.snapshotState`) finishes an operator's open
bundle when a checkpoint reaches it and keeps what that bundle outputs in a buffer, since
nothing may go downstream once the barrier has. The buffer is flushed when the operator next
starts a bundle or takes in a watermark (apache/beam#12345, BEAM-10558, added the second for
an Impulse's lone element). Neither comes to a stage whose input is finite, such as the
partitions that `beam.Create` lists for the Python Kafka reader. The Impulse sends its final
watermark at once. The stage holds that watermark back while its bundle is open. If the
checkpoint closes that bundle, the operator passes the watermark on inside the snapshot,
while the buffer is still open, so the flush is a no-op. The outputs then stay in the
operator's state for good.

Seen here: a `kafka.raw_reader: python` job computed every partition's start and never read
(docs/runtime.md, "Reading the raw topics"). `tests/test_checkpoint_buffer_flink.py` strands
a bounded stage's output in every run without this option.

The Flink runner's `finishBundleBeforeCheckpointing` finishes the bundle in
`prepareSnapshotPreBarrier` instead, before the barrier goes downstream, so nothing is
buffered. The operator finishes the bundle in `snapshotState` anyway, so this only moves
that work earlier.

It can go once the runner flushes that buffer after the snapshot. Upstream's `DoFnOperator`
was still the same when this was written.
"""
from __future__ import annotations

#: the Flink runner's pipeline option (a flag) that finishes bundles before the barrier
FINISH_BUNDLE_BEFORE_CHECKPOINTING = "--finish_bundle_before_checkpointing"
