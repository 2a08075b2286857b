"""What the metrics say about the span path: one place that turns outcomes into counts."""

from __future__ import annotations

from collections.abc import Callable

from processor.correlate.outcome import Outcome
from processor.correlate.usage import UsageKey
from processor.correlate.usage_labels import UserLabels
from processor.metrics import Metrics


class Recorder:
    """Counts outcomes; per-user usage is folded in when the metrics are read."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        policy: str,
        labels: UserLabels | None = None,
        usage_totals: Callable[[], dict[UsageKey, list[float]]] | None = None,
    ) -> None:
        self.metrics = self._metrics = metrics
        self._policy = policy
        self._labels = labels
        metrics.spans_ambiguous.declare([(policy,)])
        if labels is not None and usage_totals is not None:
            metrics.before_read(lambda: self._flush_usage(usage_totals))

    def outcome(self, o: Outcome) -> None:
        """Count what one outcome did to its spans."""
        m = self._metrics
        if o.spans:
            m.spans_received.inc(o.spans)
        for (method, confidence), count in o.attributed.items():
            if confidence == "ambiguous":
                m.spans_ambiguous.add((self._policy,), count)
            if not (confidence == "ambiguous" and self._policy != "nearest"):
                m.spans_enriched.add((method, confidence), count)
        for counter, value in (
            (m.spans_unmatched, o.unattributed),
            (m.spans_no_address, o.no_address),
            (m.spans_held, o.held),
            (m.enrich_failures, o.failed),
        ):
            if value:
                counter.inc(value)
        for reason, count in (
            ("early", o.released_early),
            ("deadline", o.released_deadline),
            ("forced", o.forced_out),
        ):
            if count:
                m.spans_released.add((reason,), count)
        if o.usage and self._labels is not None:
            self._usage(o)

    def _flush_usage(self, usage_totals: Callable[[], dict[UsageKey, list[float]]]) -> None:
        """Fold the usage the correlator summed since the last read into the metrics."""
        totals = usage_totals()
        if totals:
            self._usage(Outcome(usage=totals))

    def _usage(self, o: Outcome) -> None:
        """Per-user LLM usage: one label lookup per (user, provider, model) of the batch."""
        assert self._labels is not None
        m = self._metrics
        for (user, provider, model), (
            calls,
            tokens_in,
            tokens_out,
            cost,
            errors,
        ) in o.usage.items():
            who, team = self._labels(user)
            labels = (who, team, provider, model)
            m.llm_requests.add(labels, calls)
            if tokens_in:
                m.llm_tokens.add((*labels, "input"), tokens_in)
            if tokens_out:
                m.llm_tokens.add((*labels, "output"), tokens_out)
            if cost:
                m.llm_cost.add(labels, cost)
            if errors:
                m.llm_errors.add(labels, errors)
