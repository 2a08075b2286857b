"""Offline checks of deploy/grafana: the dashboard, the scrape config and the alert rules.

Every PromQL expression is checked against the metrics the service really exports
(``processor.metrics.Metrics``), so renaming a metric or a label breaks these tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from processor.config.scalars import split_endpoint
from processor.metrics import Counter, Metrics

ROOT = Path(__file__).parent.parent
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD_FILE = GRAFANA_DIR / "user-enricher-dashboard.json"
PROMETHEUS_FILE = GRAFANA_DIR / "prometheus.yml"  # static targets: any promtool checks it
# Pod discovery for a Prometheus in Kubernetes (not in Debian's Prometheus build).
PROMETHEUS_KUBERNETES_FILE = GRAFANA_DIR / "prometheus-kubernetes.yml"
PROMETHEUS_FILES = (PROMETHEUS_FILE, PROMETHEUS_KUBERNETES_FILE)
KUBERNETES_JOBS = ("user-enricher-kubernetes", "user-enricher-kubernetes-sidecar")
ALERTS_FILE = GRAFANA_DIR / "alerts.yml"
GRAFANA_README = GRAFANA_DIR / "README.md"
COMPOSE_DIR = ROOT / "deploy" / "compose"
K8S_DIR = ROOT / "deploy" / "kubernetes"

ENRICHER = "user-enricher"  # compose service, Kubernetes container and Service name
DATASOURCE_UID = "${datasource}"
GRID_WIDTH = 24
USAGE_LABELS = ("user", "team", "provider", "model")  # the usage variables, in order
# Labels Prometheus puts on every series of a target; the rest come from prometheus.yml.
BUILTIN_TARGET_LABELS = frozenset({"job", "instance"})
GRAFANA_BUILTINS = frozenset(
    {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms"}
)
# What the dashboard must show (the brief it was built to): a metric dropped from it fails.
REQUIRED_DASHBOARD_METRICS = frozenset(
    {
        "user_enricher_llm_requests_total",
        "user_enricher_llm_tokens_total",
        "user_enricher_llm_cost_usd_total",
        "user_enricher_llm_errors_total",
        "user_enricher_spans_received_total",
        "user_enricher_spans_enriched_total",
        "user_enricher_spans_unmatched_total",
        "user_enricher_spans_ambiguous_total",
        "user_enricher_spans_held_total",
        "user_enricher_spans_released_total",
        "user_enricher_queue_batches",
        "user_enricher_spans_dropped_total",
        "user_enricher_spans_lost_total",
        "user_enricher_export_latency_seconds_bucket",
        "user_enricher_session_store_connected",
        "user_enricher_sessions_active",
    }
)


# --------------------------------------------------------------------------- metrics


@cache
def exported_series() -> dict[str, frozenset[str]]:
    """Every sample name a fresh ``Metrics()`` exposes, with the labels its samples carry.

    Labelled metrics expose nothing until a child exists, so each gets one child first.
    Sample names are the exposition's: ``_total`` for counters, ``_bucket`` (with
    ``le``), ``_sum`` and ``_count`` for histograms.
    """
    metrics = Metrics()
    for declared in metrics.families():
        if isinstance(declared, Counter) and declared.labelnames:
            declared.add(tuple("probe" for _ in declared.labelnames), 1)
    series: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in series.items()}


# --------------------------------------------------------------------------- PromQL

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    |(?P<variable>\$\{\w+\}|\$\w+)
    |(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?:ms|[smhdwy])?)
    |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=,(){}\[\]])
    |(?P<space>\s+)
    """,
    re.VERBOSE,
)
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = _GROUPING | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
_AGGREGATIONS = frozenset(
    {
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
        "bottomk", "topk", "quantile", "limitk", "limit_ratio",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Token:
    """One PromQL token: its kind (a ``_TOKEN`` group name) and text."""

    kind: str
    text: str


@dataclass(frozen=True)
class Selector:
    """A metric name in an expression, the labels its matchers use, and its token index."""

    metric: str
    labels: frozenset[str]
    index: int


@dataclass(frozen=True)
class Grouping:
    """A ``by``/``without``/``on``/… clause: its labels, and for ``by``/``without`` the
    token range of the aggregation's argument."""

    keyword: str
    labels: tuple[str, ...]
    argument: range | None


@dataclass
class Query:
    """What one PromQL expression uses: selectors, groupings and dashboard variables."""

    expr: str
    selectors: list[Selector] = field(default_factory=list)
    groupings: list[Grouping] = field(default_factory=list)
    variables: set[str] = field(default_factory=set)

    @property
    def metrics(self) -> set[str]:
        """The metric names the expression reads."""
        return {selector.metric for selector in self.selectors}

    def result_labels(self, target_labels: frozenset[str]) -> frozenset[str]:
        """Labels a result series can carry: the ``by`` labels where the expression
        aggregates, else the labels of the metrics it reads plus the target's."""
        by = {label for g in self.groupings if g.keyword == "by" for label in g.labels}
        if by:
            return frozenset(by)
        read = {label for m in self.metrics for label in exported_series().get(m, ())}
        return frozenset(read) | target_labels


def tokenize(expr: str) -> list[Token]:
    """Split a PromQL expression into tokens (whitespace dropped); fails on any
    character the tokenizer does not know, so nothing is silently skipped."""
    tokens = []
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        assert match is not None, f"cannot tokenize {expr[position:]!r} in {expr!r}"
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append(Token(kind, match.group()))
        position = match.end()
    return tokens


def closing(tokens: list[Token], start: int, open_: str = "(", close: str = ")") -> int:
    """Index of the token closing the bracket opened at ``start``."""
    depth = 0
    for index in range(start, len(tokens)):
        if tokens[index].text == open_:
            depth += 1
        elif tokens[index].text == close:
            depth -= 1
            if depth == 0:
                return index
    raise AssertionError(f"unbalanced {open_!r} in {' '.join(t.text for t in tokens)}")


def label_list(tokens: list[Token], start: int) -> tuple[tuple[str, ...], int]:
    """The labels of a ``( a, b )`` list opened at ``start``, and the index after it."""
    end = closing(tokens, start)
    labels = tuple(t.text for t in tokens[start + 1 : end] if t.text != ",")
    for token in tokens[start + 1 : end]:
        assert token.kind == "ident" or token.text == ",", f"bad label list near {token.text}"
    return labels, end + 1


def aggregation_argument(tokens: list[Token], name_index: int) -> range:
    """Token range of the parenthesised argument of the aggregation at ``name_index``
    (skipping a ``by``/``without`` clause written before the argument)."""
    index = name_index + 1
    if tokens[index].text in ("by", "without"):
        _, index = label_list(tokens, index + 1)
    assert tokens[index].text == "(", f"expected the argument of {tokens[name_index].text}"
    return range(index, closing(tokens, index) + 1)


def analyse(expr: str) -> Query:
    """The selectors, groupings and variables of one PromQL expression."""
    tokens = tokenize(expr)
    # Grafana fills variables in anywhere, matcher strings included.
    query = Query(expr, variables=set(_VARIABLE.findall(expr)))
    # The argument of each aggregation, by the token index of its by/without keyword.
    clause_argument: dict[int, range] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        following = tokens[index + 1].text if index + 1 < len(tokens) else ""
        if token.text == "[":  # a range or subquery: durations and variables only
            index = closing(tokens, index, "[", "]")
        elif token.kind == "ident" and token.text in _GROUPING:
            labels: tuple[str, ...] = ()
            after = index + 1
            if following == "(":
                labels, after = label_list(tokens, index + 1)
            argument = None
            if token.text in ("by", "without"):
                argument = clause_argument.get(index)
                assert argument is not None, f"{token.text} without an aggregation in {expr}"
            query.groupings.append(Grouping(token.text, labels, argument))
            index = after
            continue
        elif token.kind == "ident" and token.text in _AGGREGATIONS and following != "{":
            assert following in ("(", "by", "without"), f"bad {token.text} in {expr}"
            argument = aggregation_argument(tokens, index)
            if following in ("by", "without"):  # `sum by (l) (x)`
                clause_argument[index + 1] = argument
            elif argument.stop < len(tokens) and tokens[argument.stop].text in ("by", "without"):
                clause_argument[argument.stop] = argument  # `sum (x) by (l)`
        elif token.kind == "ident" and following == "(":
            pass  # a function
        elif token.kind == "ident" and token.text not in _KEYWORDS:
            matched: set[str] = set()
            name_index = index
            if following == "{":
                end = closing(tokens, index + 1, "{", "}")
                matched = matchers(tokens[index + 2 : end], expr)
                index = end
            query.selectors.append(Selector(token.text, frozenset(matched), name_index))
        elif token.text == "{":
            raise AssertionError(f"selector without a metric name in {expr}")
        index += 1
    return query


def matchers(tokens: list[Token], expr: str) -> set[str]:
    """Label names of a ``{a="x", b=~"y"}`` matcher list (the tokens inside the braces)."""
    labels = set()
    for start in range(0, len(tokens), 4):
        name, op, value, *rest = [*tokens[start : start + 4], Token("op", ",")]
        assert name.kind == "ident", f"bad matcher near {name.text} in {expr}"
        assert op.text in ("=", "!=", "=~", "!~"), f"bad matcher operator {op.text} in {expr}"
        assert value.kind == "string", f"matcher value must be a string in {expr}"
        assert rest[0].text == ",", f"bad matcher list in {expr}"
        labels.add(name.text)
    return labels


def check_query(query: Query, target_labels: frozenset[str]) -> None:
    """Fails unless every metric and label ``query`` uses exists where it is used."""
    series = exported_series()
    assert query.selectors, f"no metric in {query.expr}"
    for selector in query.selectors:
        assert selector.metric in series, (
            f"{selector.metric} (in {query.expr}) is not exported; known: {sorted(series)}"
        )
        extra = selector.labels - series[selector.metric] - target_labels - {"__name__"}
        assert not extra, f"{selector.metric} has no label {sorted(extra)} ({query.expr})"
    everywhere = {label for m in query.metrics for label in series[m]} | target_labels
    for grouping in query.groupings:
        if grouping.argument is None:  # on / ignoring / group_left / group_right
            stray = set(grouping.labels) - everywhere
            assert not stray, f"{grouping.keyword} {sorted(stray)} unknown in {query.expr}"
            continue
        inside = [s for s in query.selectors if s.index in grouping.argument]
        assert inside, f"{grouping.keyword} over no metric in {query.expr}"
        for selector in inside:
            missing = set(grouping.labels) - series[selector.metric] - target_labels
            assert not missing, (
                f"{grouping.keyword} ({', '.join(sorted(missing))}): not a label of "
                f"{selector.metric} in {query.expr}"
            )


# --------------------------------------------------------------------------- files


def load_yaml(path: Path) -> Any:
    """Parse one YAML file with the safe loader."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_yaml_documents(path: Path) -> list[Any]:
    """Every document of a multi-document YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


@cache
def dashboard() -> dict[str, Any]:
    """The parsed dashboard JSON."""
    parsed = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    assert isinstance(parsed, dict)
    return parsed


def all_panels() -> Iterator[dict[str, Any]]:
    """Every panel, rows and panels nested in collapsed rows included."""
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def targets() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """``(panel, target)`` for every query of every panel."""
    for panel in all_panels():
        for target in panel.get("targets", []):
            yield panel, target


def template_variables() -> dict[str, dict[str, Any]]:
    """The dashboard's template variables, by name."""
    return {var["name"]: var for var in dashboard()["templating"]["list"]}


def variable_query(variable: Mapping[str, Any]) -> str:
    """A query variable's query (Grafana stores it as a string or as ``{"query": …}``)."""
    query = variable["query"]
    return str(query["query"] if isinstance(query, Mapping) else query)


_LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>[A-Za-z_]\w*)\s*\)")


@cache
def prometheus_config(path: Path = PROMETHEUS_FILE) -> dict[str, Any]:
    """A parsed Prometheus config file (prometheus.yml unless told)."""
    parsed = load_yaml(path)
    assert isinstance(parsed, dict)
    return parsed


def all_scrape_jobs() -> list[dict[str, Any]]:
    """The scrape configs of every shipped Prometheus config file."""
    return [job for path in PROMETHEUS_FILES for job in prometheus_config(path)["scrape_configs"]]


def scrape_job(name: str, path: Path = PROMETHEUS_FILE) -> dict[str, Any]:
    """One scrape config of a Prometheus config file, by job name."""
    jobs = {job["job_name"]: job for job in prometheus_config(path)["scrape_configs"]}
    assert name in jobs, f"{path.name} has no job {name}; it has {sorted(jobs)}"
    job: dict[str, Any] = jobs[name]
    return job


@cache
def target_labels() -> frozenset[str]:
    """Labels series get from their target: job, instance, and those the shipped configs
    add (static labels and relabel target_labels)."""
    labels = set(BUILTIN_TARGET_LABELS)
    for job in all_scrape_jobs():
        for static in job.get("static_configs", []):
            labels.update(static.get("labels", {}))
        for rule in job.get("relabel_configs", []):
            if "target_label" in rule and not rule["target_label"].startswith("__"):
                labels.add(rule["target_label"])
    return frozenset(labels)


def kept(job: Mapping[str, Any], source_label: str) -> str:
    """The regex of the job's ``keep`` relabel rule on ``source_label``."""
    for rule in job.get("relabel_configs", []):
        if rule.get("action") == "keep" and rule.get("source_labels") == [source_label]:
            return str(rule["regex"])
    raise AssertionError(f"{job['job_name']} keeps no {source_label}")


def pod_selector(job: Mapping[str, Any]) -> dict[str, str]:
    """The pod label selector of a job's ``kubernetes_sd_configs`` (``k=v,k=v`` form)."""
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod"
    (selector,) = [s for s in sd["selectors"] if s["role"] == "pod"]
    pairs = (item.split("=", 1) for item in str(selector["label"]).split(","))
    return {key.strip(): value.strip() for key, value in pairs}


@cache
def alert_rules() -> list[dict[str, Any]]:
    """Every rule of alerts.yml."""
    parsed = load_yaml(ALERTS_FILE)
    return [rule for group in parsed["groups"] for rule in group["rules"]]


def api_port_of(config_file: Path) -> int:
    """The port of ``api.endpoint`` in an enricher config file."""
    return split_endpoint(str(load_yaml(config_file)["api"]["endpoint"]))[1]


def telemetry_port_of(config_file: Path) -> int:
    """The port of ``telemetry.endpoint`` (where /metrics is) in an enricher config file."""
    return split_endpoint(str(load_yaml(config_file)["telemetry"]["endpoint"]))[1]


def k8s_object(path: Path, kind: str, name: str) -> dict[str, Any]:
    """One object of a manifest file."""
    for doc in load_yaml_documents(path):
        if doc.get("kind") == kind and doc["metadata"]["name"] == name:
            found: dict[str, Any] = doc
            return found
    raise AssertionError(f"no {kind} {name} in {path}")


def service_port(service: Mapping[str, Any], name: str) -> int:
    """The port number of a named Service port."""
    for port in service["spec"]["ports"]:
        if port["name"] == name:
            return int(port["port"])
    raise AssertionError(f"Service {service['metadata']['name']} has no port {name}")


def container_port(container: Mapping[str, Any], name: str) -> int:
    """The containerPort of a named container port."""
    for port in container["ports"]:
        if port["name"] == name:
            return int(port["containerPort"])
    raise AssertionError(f"container {container['name']} has no port {name}")


# --------------------------------------------------------------------------- the analyser


def test_analyser_finds_metrics_labels_and_groupings() -> None:
    """The PromQL analyser reports metrics, matcher labels, groupings and variables."""
    query = analyse(
        'topk(10, sum by (user) (increase(user_enricher_llm_cost_usd_total{team=~"$team"}'
        "[$__range]))) / on (user) group_left () sum(rate(up[5m])) by (instance)"
    )
    assert [(s.metric, s.labels) for s in query.selectors] == [
        ("user_enricher_llm_cost_usd_total", frozenset({"team"})),
        ("up", frozenset()),
    ]
    assert [(g.keyword, g.labels) for g in query.groupings] == [
        ("by", ("user",)),
        ("on", ("user",)),
        ("group_left", ()),
        ("by", ("instance",)),
    ]
    by_user, _, _, by_instance = query.groupings
    assert by_user.argument is not None and by_instance.argument is not None
    assert query.selectors[0].index in by_user.argument
    assert query.selectors[1].index in by_instance.argument
    assert query.selectors[0].index not in by_instance.argument
    assert query.variables == {"team", "__range"}


def test_analyser_rejects_unknown_metrics_and_labels() -> None:
    """A renamed metric, a label it lacks, or a ``by`` label it lacks fails the check."""
    labels = frozenset({"job", "instance"})
    check_query(analyse("sum by (user) (rate(user_enricher_llm_requests_total[5m]))"), labels)
    for bad in (
        "rate(user_enricher_llm_request_total[5m])",
        'rate(user_enricher_spans_enriched_total{user="x"}[5m])',
        "sum by (direction) (rate(user_enricher_llm_requests_total[5m]))",
        "user_enricher_llm_cost_usd",  # a counter without _total is not exposed
    ):
        with pytest.raises(AssertionError):
            check_query(analyse(bad), labels)


def test_exported_series_include_suffixes() -> None:
    """The exposition names carry _total, _bucket (with le), _sum and _count."""
    series = exported_series()
    assert "direction" in series["user_enricher_llm_tokens_total"]
    assert "le" in series["user_enricher_export_latency_seconds_bucket"]
    assert "user_enricher_export_latency_seconds_count" in series
    assert "user_enricher_session_store_connected" in series


# --------------------------------------------------------------------------- dashboard


def test_dashboard_parses() -> None:
    """The dashboard is a JSON object with panels, a title, a uid and a recent schemaVersion."""
    board = dashboard()
    assert board["title"] and board["uid"]
    assert board["schemaVersion"] >= 36
    assert board["panels"]


def test_panel_ids_are_unique() -> None:
    """No two panels (rows included) share an id."""
    ids = [panel["id"] for panel in all_panels()]
    assert all(isinstance(i, int) for i in ids)
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"duplicate panel ids: {duplicates}"


def test_panels_do_not_overlap() -> None:
    """Every gridPos fits the 24-column grid and no two rectangles overlap."""
    boxes = []
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        x, y, w, h = pos["x"], pos["y"], pos["w"], pos["h"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0, panel["title"]
        assert x + w <= GRID_WIDTH, f"{panel['title']} is wider than the grid"
        boxes.append((panel["title"], x, y, w, h))
    for i, (name_a, xa, ya, wa, ha) in enumerate(boxes):
        for name_b, xb, yb, wb, hb in boxes[i + 1 :]:
            apart = xa + wa <= xb or xb + wb <= xa or ya + ha <= yb or yb + hb <= ya
            assert apart, f"panels {name_a!r} and {name_b!r} overlap"


def test_every_query_uses_the_datasource_variable() -> None:
    """Each panel and each of its targets use ``${datasource}``, a Prometheus variable."""
    datasource = template_variables()["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    seen = 0
    for panel in all_panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
    for panel, target in targets():
        assert target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        assert target["datasource"]["type"] == "prometheus", panel["title"]
        seen += 1
    for name in USAGE_LABELS:
        assert template_variables()[name]["datasource"]["uid"] == DATASOURCE_UID
    assert seen


def test_usage_variables() -> None:
    """user, team, provider and model are multi-value, include All, and list label values
    of the requests counter."""
    variables = template_variables()
    for name in USAGE_LABELS:
        var = variables[name]
        assert var["type"] == "query"
        assert var["multi"] is True and var["includeAll"] is True, name
        assert var["allValue"] == ".*", f"{name}: All must match every value as a regex"
        match = _LABEL_VALUES.fullmatch(variable_query(var))
        assert match is not None, f"{name}: not a label_values query"
        assert match["label"] == name
        (selector,) = analyse(match["selector"]).selectors
        assert selector.metric == "user_enricher_llm_requests_total"


def test_dashboard_queries_use_exported_metrics_and_labels() -> None:
    """Every metric, matcher label and grouping label of every panel query exists in the
    service's exposition."""
    for panel, target in targets():
        try:
            check_query(analyse(target["expr"]), target_labels())
        except AssertionError as error:
            raise AssertionError(f"panel {panel['title']!r}: {error}") from None


def test_variable_queries_use_exported_metrics_and_labels() -> None:
    """Each label_values variable reads an exported metric and a label it carries."""
    series = exported_series()
    for name, var in template_variables().items():
        if var["type"] != "query":
            continue
        match = _LABEL_VALUES.fullmatch(variable_query(var))
        assert match is not None, f"{name}: not a label_values query"
        query = analyse(match["selector"])
        check_query(query, target_labels())
        for metric in query.metrics:
            assert match["label"] in series[metric], f"{name}: {metric} has no {match['label']}"


def test_dashboard_variables_are_defined() -> None:
    """Every ``$variable`` in a query is a template variable or a Grafana built-in, and the
    usage metrics are filtered by all four usage variables."""
    defined = set(template_variables()) | GRAFANA_BUILTINS
    for name, var in template_variables().items():
        if var["type"] == "query":
            match = _LABEL_VALUES.fullmatch(variable_query(var))
            assert match is not None, f"{name}: not a label_values query"
            assert analyse(match["selector"]).variables <= defined, name
    filtered = 0
    for panel, target in targets():
        query = analyse(target["expr"])
        assert query.variables <= defined, f"{panel['title']}: {query.variables - defined}"
        for selector in query.selectors:
            if set(USAGE_LABELS) <= selector.labels:
                filtered += 1
    assert filtered, "no panel filters the usage metrics by the template variables"


def test_per_user_panels_are_filtered_by_the_variables() -> None:
    """A usage query that groups by user is filtered by all four usage variables."""
    for panel, target in targets():
        query = analyse(target["expr"])
        if not any("user" in g.labels for g in query.groupings if g.keyword == "by"):
            continue
        for selector in query.selectors:
            if selector.metric.startswith("user_enricher_llm_"):
                assert set(USAGE_LABELS) <= selector.labels, (
                    f"{panel['title']}: {selector.metric} is not filtered by the variables"
                )
                assert "$__rate_interval" in target["expr"] or "$__range" in target["expr"]


def test_legends_name_labels_the_result_has() -> None:
    """A ``{{label}}`` in a legend is a label the query's result series carry."""
    for panel, target in targets():
        wanted = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        available = analyse(target["expr"]).result_labels(target_labels())
        assert wanted <= available, f"{panel['title']}: legend uses {wanted - available}"


def test_dashboard_covers_the_required_metrics() -> None:
    """Usage, attribution, holding and pipeline health metrics all appear on the dashboard."""
    used = {metric for _, target in targets() for metric in analyse(target["expr"]).metrics}
    missing = REQUIRED_DASHBOARD_METRICS - used
    assert not missing, f"the dashboard does not show {sorted(missing)}"


# --------------------------------------------------------------------------- prometheus.yml


@pytest.mark.parametrize("path", PROMETHEUS_FILES, ids=lambda path: path.name)
def test_prometheus_config_parses_and_scrapes_metrics(path: Path) -> None:
    """Each Prometheus config parses, and each job scrapes /metrics over HTTP."""
    config = prometheus_config(path)
    assert config["scrape_configs"]
    for job in config["scrape_configs"]:
        assert job["metrics_path"] == "/metrics", job["job_name"]
        assert job.get("scheme", "http") == "http", job["job_name"]
    for rule_file in config.get("rule_files", []):
        assert (GRAFANA_DIR / rule_file).is_file(), f"rule file {rule_file} does not exist"


def test_compose_job_targets_the_enricher_telemetry_port() -> None:
    """The compose job scrapes the compose service user-enricher on its telemetry port,
    which the compose file keeps on the stack's network (not published to the host)."""
    (static,) = scrape_job(ENRICHER)["static_configs"]
    (target,) = static["targets"]
    host, port = split_endpoint(target)
    services = load_yaml(COMPOSE_DIR / "docker-compose.yaml")["services"]
    assert host == ENRICHER and host in services
    published = [
        int(str(entry).partition("/")[0].rpartition(":")[2])
        for entry in services[ENRICHER]["ports"]
    ]
    assert port not in published, f"compose publishes the telemetry port {port}"
    assert port == telemetry_port_of(COMPOSE_DIR / "enricher.yaml")


def test_kubernetes_standalone_job_matches_the_manifests() -> None:
    """The standalone job selects the Deployment's pod labels and keeps the port the
    container calls telemetry, where the config serves /metrics."""
    job = scrape_job("user-enricher-kubernetes", PROMETHEUS_KUBERNETES_FILE)
    standalone = K8S_DIR / "standalone"
    deployment = k8s_object(standalone / "deployment.yaml", "Deployment", ENRICHER)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = pod_selector(job)
    assert selector.items() <= pod_labels.items(), f"{selector} does not select {pod_labels}"
    (container,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == ENRICHER
    ]
    port = int(kept(job, "__meta_kubernetes_pod_container_port_number"))
    assert port == container_port(container, "telemetry")
    assert port == telemetry_port_of(standalone / "config.yaml")
    assert port != api_port_of(standalone / "config.yaml")


def test_kubernetes_sidecar_job_matches_the_manifests() -> None:
    """The sidecar job selects the pods the sidecar Service selects, and keeps the
    user-enricher container's telemetry port."""
    job = scrape_job("user-enricher-kubernetes-sidecar", PROMETHEUS_KUBERNETES_FILE)
    sidecar = K8S_DIR / "sidecar"
    service = k8s_object(sidecar / "service.yaml", "Service", ENRICHER)
    assert pod_selector(job) == service["spec"]["selector"]
    (patch,) = load_yaml(sidecar / "user-enricher-container.yaml")
    container = patch["value"]
    assert kept(job, "__meta_kubernetes_pod_container_name") == container["name"] == ENRICHER
    port = int(kept(job, "__meta_kubernetes_pod_container_port_number"))
    assert port == container_port(container, "telemetry")
    assert port == telemetry_port_of(sidecar / "config.yaml")


# --------------------------------------------------------------------------- alerts.yml


def test_alert_rules_are_complete() -> None:
    """Each rule has a name, expr, for, a severity label and summary/description annotations."""
    rules = alert_rules()
    assert rules
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in rules:
        assert {"alert", "expr", "for", "labels", "annotations"} <= rule.keys(), rule
        assert re.fullmatch(r"(\d+[smhdwy])+", str(rule["for"])), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_alert_rules_use_exported_metrics_and_labels() -> None:
    """Every metric and label of every rule exists, and annotations name only labels the
    rule's result carries."""
    for rule in alert_rules():
        query = analyse(str(rule["expr"]))
        try:
            check_query(query, target_labels())
        except AssertionError as error:
            raise AssertionError(f"alert {rule['alert']}: {error}") from None
        assert not query.variables, f"{rule['alert']}: Grafana variables in a Prometheus rule"
        text = " ".join(str(value) for value in rule["annotations"].values())
        wanted = set(re.findall(r"\$labels\.(\w+)", text))
        available = query.result_labels(target_labels())
        assert wanted <= available, f"{rule['alert']}: annotations use {wanted - available}"


# --------------------------------------------------------------------------- README


def test_readme_queries_use_exported_metrics_and_labels() -> None:
    """The PromQL in the README's promql blocks reads exported metrics and labels."""
    text = GRAFANA_README.read_text(encoding="utf-8")
    blocks = re.findall(r"```promql\n(.*?)```", text, re.DOTALL)
    assert blocks, "the README has no promql block"
    count = 0
    for block in blocks:
        for line in block.splitlines():
            expr = line.split("#", 1)[0].strip()
            if expr:
                check_query(analyse(expr), target_labels())
                count += 1
    assert count >= 3


# --------------------------------------------------------------------------- promtool


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")


def promtool(*args: str) -> None:
    """Run promtool and fail with its output unless it succeeds."""
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_accepts_the_alert_rules() -> None:
    """promtool check rules accepts alerts.yml."""
    promtool("check", "rules", str(ALERTS_FILE))


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Every dashboard and README query, Grafana variables filled in, parses as PromQL."""
    fill = {"$__rate_interval": "1m", "$__range": "1d", "$__interval": "1m"}
    exprs = [target["expr"] for _, target in targets()]
    readme = GRAFANA_README.read_text(encoding="utf-8")
    for block in re.findall(r"```promql\n(.*?)```", readme, re.DOTALL):
        exprs += [e.split("#", 1)[0].strip() for e in block.splitlines() if e.strip()]
    rules = []
    for number, expr in enumerate(e for e in exprs if e):
        for variable, value in fill.items():
            expr = expr.replace(variable, value)
        expr = re.sub(r"\$\{?\w+\}?", ".*", expr)  # the usage variables are regex matchers
        rules.append({"record": f"dashboard:query{number}", "expr": expr})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", str(path))


def test_prometheus_files_split_static_and_kubernetes_jobs() -> None:
    """prometheus.yml has static targets only (Debian's promtool has no Kubernetes
    discovery); prometheus-kubernetes.yml has the pod-discovery jobs, and the same rules."""
    static = prometheus_config(PROMETHEUS_FILE)
    assert all("kubernetes_sd_configs" not in job for job in static["scrape_configs"])
    assert ENRICHER in {job["job_name"] for job in static["scrape_configs"]}
    kubernetes = prometheus_config(PROMETHEUS_KUBERNETES_FILE)
    jobs = kubernetes["scrape_configs"]
    assert tuple(job["job_name"] for job in jobs) == KUBERNETES_JOBS
    assert all(job["kubernetes_sd_configs"] for job in jobs)
    assert kubernetes["rule_files"] == static["rule_files"]
    names = [job["job_name"] for job in all_scrape_jobs()]
    assert len(names) == len(set(names)), "a job name is in both files"


def test_readme_names_the_kubernetes_config() -> None:
    """The README tells in-cluster Prometheus users to take prometheus-kubernetes.yml."""
    text = GRAFANA_README.read_text(encoding="utf-8")
    assert f"[`{PROMETHEUS_KUBERNETES_FILE.name}`]({PROMETHEUS_KUBERNETES_FILE.name})" in text
    for job in KUBERNETES_JOBS:
        assert f"`{job}`" in text


def promtool_check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """``promtool check config`` on a file where it lies (its rule_files resolve next to it)."""
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_promtool
def test_promtool_accepts_the_scrape_config() -> None:
    """promtool check config accepts prometheus.yml as it is, alert rules included, with
    any promtool build (Debian's has no Kubernetes discovery)."""
    done = promtool_check_config(PROMETHEUS_FILE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ALERTS_FILE.name in done.stdout  # the rules were checked too


@needs_promtool
def test_promtool_accepts_the_kubernetes_scrape_config() -> None:
    """promtool check config accepts prometheus-kubernetes.yml, where promtool was built
    with Kubernetes discovery (skipped on Debian's build, which rejects the field)."""
    done = promtool_check_config(PROMETHEUS_KUBERNETES_FILE)
    if "kubernetes_sd_configs not found" in done.stdout + done.stderr:
        pytest.skip("this promtool was built without Kubernetes discovery")
    assert done.returncode == 0, done.stdout + done.stderr
