"""From accepted request to export queue: admission, delivery bookkeeping, metrics."""

from processor.pipeline.admission import Backpressure, Pipeline
from processor.pipeline.ledger import Ledger
from processor.pipeline.record import Recorder

__all__ = ["Backpressure", "Ledger", "Pipeline", "Recorder"]
