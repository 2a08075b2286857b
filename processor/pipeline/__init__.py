"""From accepted request to export queue: admission, delivery bookkeeping, metrics."""

from processor.errors import Backpressure
from processor.pipeline.admission import Pipeline
from processor.pipeline.ledger import Ledger
from processor.pipeline.record import Recorder

__all__ = ["Backpressure", "Ledger", "Pipeline", "Recorder"]
