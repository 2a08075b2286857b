"""``user-enricher report``: per-user LLM usage (requests, tokens, cost, errors) from Jaeger.

- :mod:`~processor.tools.report.timerange`: ``--since``/``--start``/``--end`` and windows (pure)
- :mod:`~processor.tools.report.jaeger`: the API v3 and legacy query clients (aiohttp)
- :mod:`~processor.tools.report.spans`: both APIs' answers as :class:`SpanRecord` (pure)
- :mod:`~processor.tools.report.aggregate`: span records -> per-user rows (pure)
- :mod:`~processor.tools.report.render`: table, JSON and CSV (pure)
- :mod:`~processor.tools.report.command`: the options and the run, for :mod:`processor.cli`
"""
