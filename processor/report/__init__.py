"""``user-enricher report``: per-user LLM usage (requests, tokens, cost, errors) from Jaeger.

- :mod:`~processor.report.timerange`: ``--since``/``--start``/``--end`` and windows (pure)
- :mod:`~processor.report.jaeger`: the API v3 and legacy query clients (aiohttp)
- :mod:`~processor.report.spans`: both APIs' answers as :class:`SpanRecord` (pure)
- :mod:`~processor.report.aggregate`: span records -> per-user rows (pure)
- :mod:`~processor.report.render`: table, JSON and CSV (pure)
- :mod:`~processor.report.command`: the options and the run, for :mod:`processor.cli`
"""
