#!/usr/bin/env node
/**
 * Offline checks of the Grafana dashboard and the Prometheus alert rules, run by .ci/helm-check:
 *
 *   node helm/check-observability.cjs <node_modules dir> <out dir> [rendered.yaml...]
 *
 *  1. Every PromQL expression (dashboard panels and variables, alert rules) parses with Prometheus'
 *     own grammar (@prometheus-io/lezer-promql), and every metric it selects is listed in
 *     deploy/observability/metrics.txt (a histogram's _bucket/_sum/_count count as the histogram),
 *     so a renamed or never-exported metric fails CI instead of drawing an empty panel.
 *  2. Every alert has `for:`, a severity label and summary, description and runbook annotations.
 *  3. The chart's copies in helm/ingram-conversations/files/ are identical to deploy/observability/.
 *  4. In each rendered manifest: a PrometheusRule carries exactly the rules of alerts.yaml (the
 *     chart may only add labels and leave out disabled alerts), the dashboard ConfigMap carries
 *     the dashboard unchanged, and a KEDA ScaledObject's Prometheus queries pass step 1 too.
 * It writes files for promtool into <out dir> (.ci/helm-check runs `promtool check rules` on
 * *.rules.yaml and `promtool test rules` on alerts.test.yaml):
 *   - dashboard-queries.rules.yaml: each dashboard query as a recording rule (Grafana variables
 *     replaced), so promtool parses them too;
 *   - <rendered>.<name>.rules.yaml: the rule groups of each rendered PrometheusRule;
 *   - keda-queries.rules.yaml: the rendered ScaledObjects' queries as recording rules;
 *   - alerts.yaml + alerts.test.yaml: the rules without their static `runbook` annotation (promtool's
 *     unit tests compare every annotation) and the unit tests next to them.
 * Exits 1 with one line per problem.
 */
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { isDeepStrictEqual } = require('node:util');

const [modulesDir, outDir, ...rendered] = process.argv.slice(2);
if (!modulesDir || !outDir) {
  console.error('usage: check-observability.cjs <node_modules dir with yaml and @prometheus-io/lezer-promql> <out dir> [rendered.yaml...]');
  process.exit(2);
}
const need = (id) => require(require.resolve(id, { paths: [modulesDir] }));
const YAML = need('yaml');
const { parser } = need('@prometheus-io/lezer-promql');

const repo = path.resolve(__dirname, '..');
// IC_OBSERVABILITY_DIR: another copy of deploy/observability (.ci/helm-check uses it to prove the check fails on a bad one).
const observability = process.env.IC_OBSERVABILITY_DIR ? path.resolve(process.env.IC_OBSERVABILITY_DIR) : path.join(repo, 'deploy', 'observability');
const chartFiles = path.join(repo, 'helm', 'ingram-conversations', 'files');
const rel = (file) => path.relative(repo, file);
const problems = [];

// ---- the metric names the services export -------------------------------------------------------
const metricsFile = path.join(observability, 'metrics.txt');
const metricTypes = new Map();
for (const [i, raw] of fs.readFileSync(metricsFile, 'utf8').split('\n').entries()) {
  const line = raw.replace(/#.*/, '').trim();
  if (!line) continue;
  const [name, type, ...rest] = line.split(/\s+/);
  if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(name) || rest.length > 0) problems.push(`${rel(metricsFile)}:${i + 1}: expected "<metric name> [<type>]", got "${raw}"`);
  else metricTypes.set(name, type ?? 'untyped');
}
if (metricTypes.size === 0) problems.push(`${rel(metricsFile)}: lists no metrics`);

/** The listed metric a selected series name belongs to, or undefined. */
function listedMetric(name) {
  if (metricTypes.has(name)) return name;
  const histogram = /^(.*)_(bucket|sum|count)$/.exec(name);
  if (histogram && ['histogram', 'summary'].includes(metricTypes.get(histogram[1])) && (histogram[2] !== 'bucket' || metricTypes.get(histogram[1]) === 'histogram')) return histogram[1];
  return undefined;
}

// ---- PromQL ---------------------------------------------------------------------------------------
/** Grafana's variables, replaced by values PromQL accepts. */
const withoutGrafanaVariables = (expr) =>
  expr
    .replace(/\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}/g, '5m')
    .replace(/\$\{\w+(:\w+)?\}|\[\[\w+\]\]|\$\w+/g, 'x');

const used = new Set();
/** Parses `expr`; reports syntax errors and metrics not in metrics.txt. Returns the metric names. */
function checkPromQL(expr, where) {
  const names = [];
  const tree = parser.parse(expr);
  const cursor = tree.cursor();
  do {
    if (cursor.type.isError) {
      problems.push(`${where}: PromQL syntax error at ${cursor.from}: …${expr.slice(Math.max(0, cursor.from - 20), cursor.from + 20)}… in: ${expr}`);
      break;
    }
    if (cursor.name === 'VectorSelector') {
      const selector = cursor.node;
      const identifier = selector.getChild('Identifier');
      if (identifier) names.push(expr.slice(identifier.from, identifier.to));
      else problems.push(`${where}: selector without a metric name (${expr.slice(selector.from, selector.to)}); name the metric so it can be checked`);
    }
  } while (cursor.next());
  for (const name of names) {
    const listed = listedMetric(name);
    if (listed) used.add(listed);
    else problems.push(`${where}: metric ${name} is not in ${rel(metricsFile)} (the services do not export it)`);
  }
  return names;
}

// ---- the dashboard --------------------------------------------------------------------------------
const dashboardFile = path.join(observability, 'grafana-dashboard.json');
const dashboardText = fs.readFileSync(dashboardFile, 'utf8');
let dashboard = {};
try {
  dashboard = JSON.parse(dashboardText);
} catch (error) {
  problems.push(`${rel(dashboardFile)}: not JSON: ${error.message}`);
}
if (!dashboard.uid || !dashboard.title) problems.push(`${rel(dashboardFile)}: uid and title are required`);
const queries = [];
const panelIds = new Set();
(function walkPanels(panels) {
  for (const panel of panels ?? []) {
    const where = `${rel(dashboardFile)}: panel ${JSON.stringify(panel.title ?? panel.id)}`;
    if (panelIds.has(panel.id)) problems.push(`${where}: duplicate panel id ${panel.id}`);
    panelIds.add(panel.id);
    if (panel.type !== 'row' && (panel.targets ?? []).length === 0) problems.push(`${where}: has no queries`);
    for (const target of panel.targets ?? []) {
      if (typeof target.expr !== 'string' || !target.expr.trim()) problems.push(`${where}: target ${target.refId} has no expr`);
      else queries.push({ expr: target.expr, where: `${where} ${target.refId}` });
      if (target.datasource?.uid !== '${datasource}') problems.push(`${where}: target ${target.refId} must use the $datasource variable`);
    }
    walkPanels(panel.panels);
  }
})(dashboard.panels);
for (const variable of dashboard.templating?.list ?? []) {
  if (variable.type !== 'query') continue;
  const query = typeof variable.query === 'string' ? variable.query : variable.query?.query;
  const where = `${rel(dashboardFile)}: variable $${variable.name}`;
  const labelValues = /^\s*label_values\(\s*(.*),\s*\w+\s*\)\s*$/.exec(query ?? '');
  const queryResult = /^\s*query_result\((.*)\)\s*$/.exec(query ?? '');
  if (labelValues) queries.push({ expr: labelValues[1], where });
  else if (queryResult) queries.push({ expr: queryResult[1], where });
  else if (!/^\s*label_values\(\s*\w+\s*\)\s*$/.test(query ?? '')) problems.push(`${where}: unsupported query ${JSON.stringify(query)}`);
}
const dashboardRules = [];
for (const [i, { expr, where }] of queries.entries()) {
  const promql = withoutGrafanaVariables(expr);
  checkPromQL(promql, where);
  dashboardRules.push({ record: `dashboard:query_${i + 1}`, expr: promql });
}

// ---- the alert rules ------------------------------------------------------------------------------
const alertsFile = path.join(observability, 'alerts.yaml');
const alertsText = fs.readFileSync(alertsFile, 'utf8');
const alerts = YAML.parse(alertsText);
const alertRules = new Map();
for (const group of alerts?.groups ?? []) {
  for (const rule of group.rules ?? []) {
    const where = `${rel(alertsFile)}: ${rule.alert ?? rule.record ?? '?'}`;
    checkPromQL(String(rule.expr ?? ''), where);
    if (!rule.alert) continue;
    if (alertRules.has(rule.alert)) problems.push(`${where}: defined twice`);
    alertRules.set(rule.alert, rule);
    if (!/^\d+[smhd]$/.test(String(rule.for ?? ''))) problems.push(`${where}: needs a \`for:\` duration, so one bad scrape does not page`);
    if (!['critical', 'warning', 'info'].includes(rule.labels?.severity)) problems.push(`${where}: labels.severity must be critical, warning or info`);
    for (const annotation of ['summary', 'description', 'runbook']) {
      if (!String(rule.annotations?.[annotation] ?? '').trim()) problems.push(`${where}: annotations.${annotation} is required`);
    }
  }
}
if (alertRules.size === 0) problems.push(`${rel(alertsFile)}: no alerts`);

// ---- the chart's copies ---------------------------------------------------------------------------
for (const name of ['alerts.yaml', 'grafana-dashboard.json']) {
  const copy = path.join(chartFiles, name);
  const original = path.join(observability, name);
  if (!fs.existsSync(copy) || fs.readFileSync(copy, 'utf8') !== fs.readFileSync(original, 'utf8')) {
    problems.push(`${rel(copy)} differs from ${rel(original)}: cp ${rel(original)} ${rel(copy)}`);
  }
}

// ---- what the chart renders -----------------------------------------------------------------------
fs.mkdirSync(outDir, { recursive: true });
const written = [];
const write = (name, text) => {
  fs.writeFileSync(path.join(outDir, name), text);
  written.push(name);
};
const scalerRules = [];
let prometheusRules = 0;
let dashboardConfigMaps = 0;
for (const file of rendered) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, 'utf8')).map((d) => d.toJS()).filter(Boolean);
  for (const doc of docs.filter((d) => d.kind === 'PrometheusRule')) {
    const where = `${path.basename(file)}: PrometheusRule/${doc.metadata?.name}`;
    prometheusRules += 1;
    const renderedAlerts = (doc.spec?.groups ?? []).flatMap((g) => g.rules ?? []);
    if (renderedAlerts.length === 0) problems.push(`${where}: has no rules`);
    for (const rule of renderedAlerts) {
      const original = alertRules.get(rule.alert);
      if (!original) {
        problems.push(`${where}: alert ${rule.alert} is not in ${rel(alertsFile)}`);
        continue;
      }
      for (const key of ['expr', 'for', 'annotations']) {
        if (!isDeepStrictEqual(rule[key], original[key])) problems.push(`${where}: alert ${rule.alert}: ${key} differs from ${rel(alertsFile)}`);
      }
      for (const [k, v] of Object.entries(original.labels ?? {})) {
        if (rule.labels?.[k] !== v) problems.push(`${where}: alert ${rule.alert}: label ${k} must stay ${v}`);
      }
    }
    write(`${path.basename(file, '.yaml')}.${doc.metadata?.name}.rules.yaml`, YAML.stringify({ groups: doc.spec?.groups ?? [] }));
  }
  for (const doc of docs.filter((d) => d.kind === 'ScaledObject')) {
    for (const trigger of doc.spec?.triggers ?? []) {
      if (trigger.type !== 'prometheus') continue;
      const where = `${path.basename(file)}: ScaledObject/${doc.metadata?.name} trigger ${trigger.name}`;
      checkPromQL(String(trigger.metadata?.query ?? ''), where);
      scalerRules.push({ record: `keda:${path.basename(file, '.yaml').replace(/[^a-zA-Z0-9_]/g, '_')}:${String(trigger.name).replace(/[^a-zA-Z0-9_]/g, '_')}`, expr: trigger.metadata.query });
    }
  }
  for (const doc of docs.filter((d) => d.kind === 'ConfigMap' && d.metadata?.labels && Object.keys(d.data ?? {}).some((k) => k.endsWith('.json')))) {
    dashboardConfigMaps += 1;
    for (const [key, text] of Object.entries(doc.data)) {
      let parsed;
      try {
        parsed = JSON.parse(text);
      } catch (error) {
        problems.push(`${path.basename(file)}: ConfigMap/${doc.metadata.name}: ${key} is not JSON: ${error.message}`);
        continue;
      }
      if (!isDeepStrictEqual(parsed, dashboard)) problems.push(`${path.basename(file)}: ConfigMap/${doc.metadata.name}: ${key} differs from ${rel(dashboardFile)}`);
    }
  }
}

write('dashboard-queries.rules.yaml', YAML.stringify({ groups: [{ name: 'grafana-dashboard-queries', rules: dashboardRules }] }));
if (scalerRules.length > 0) write('keda-queries.rules.yaml', YAML.stringify({ groups: [{ name: 'keda-scaledobject-queries', rules: scalerRules }] }));
const testable = YAML.parse(alertsText);
for (const group of testable.groups ?? []) for (const rule of group.rules ?? []) delete rule.annotations?.runbook;
fs.writeFileSync(path.join(outDir, 'alerts.yaml'), YAML.stringify(testable));
fs.copyFileSync(path.join(observability, 'alerts.test.yaml'), path.join(outDir, 'alerts.test.yaml'));

if (problems.length > 0) {
  for (const problem of problems) console.error(`  ✗ ${problem}`);
  process.exit(1);
}
const unused = [...metricTypes.keys()].filter((name) => !used.has(name));
console.log(`  ✓ ${queries.length} dashboard queries and ${alertRules.size} alerts parse and only use the ${metricTypes.size} metrics in ${rel(metricsFile)}`);
if (unused.length > 0) console.log(`  - listed but not queried: ${unused.join(', ')}`);
console.log(`  ✓ chart copies match; ${prometheusRules} rendered PrometheusRule(s) carry alerts.yaml's rules, ${dashboardConfigMaps} dashboard ConfigMap(s) carry the dashboard, ${scalerRules.length} KEDA queries only use listed metrics`);
console.log(`  wrote ${written.map((name) => path.join(path.relative(repo, outDir), name)).join(', ')}`);
