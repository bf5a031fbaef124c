#!/usr/bin/env node
/**
 * Keeps helm/ingram-conversations/values.schema.json in step with values.yaml, and every value
 * documented with a `## @param` line.
 *
 *   node helm/values-schema.cjs <node_modules dir with yaml> [--write]
 *
 * The schema is derived from the defaults: a value's type is its default's type, and every block
 * with fixed keys rejects unknown keys (`additionalProperties: false`), so a misspelt value such as
 * `responsesWorker.concurency` fails `helm install`/`template`/`lint` instead of being ignored.
 * Free-form maps (labels, annotations, resources, affinity…) accept anything. Cross-field rules
 * and friendlier messages live in templates/_validate.tpl.
 *
 * Without --write it only checks (for .ci/helm-check): exit 1 if the committed schema differs from
 * the generated one, or a value lacks a `## @param`, or a `## @param` names no value.
 */
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const [modulesDir, flag] = process.argv.slice(2);
if (!modulesDir) {
  console.error('usage: values-schema.cjs <node_modules dir with yaml> [--write]');
  process.exit(2);
}
const YAML = require(require.resolve('yaml', { paths: [modulesDir] }));

const chart = path.join(__dirname, 'ingram-conversations');
const valuesText = fs.readFileSync(path.join(chart, 'values.yaml'), 'utf8');
const values = YAML.parse(valuesText);
const schemaFile = path.join(chart, 'values.schema.json');

/** Maps whose keys are the user's (their defaults may be non-empty). Matched on the last path segment. */
const FREE_FORM = new Set(['resources', 'updateStrategy', 'podSecurityContext', 'containerSecurityContext', 'annotations', 'labels', 'behavior']);
/** Values that take more than their default's type. `*` matches one segment. */
const OVERRIDES = {
  '*.pdb.minAvailable': { type: ['integer', 'string'] },
  '*.pdb.maxUnavailable': { type: ['integer', 'string'] },
  '*.autoscaling.targetCPU': { type: ['integer', 'string'] },
  '*.autoscaling.targetMemory': { type: ['integer', 'string'] },
  '*.image.tag': { type: ['string', 'number'] },
  'image.tag': { type: ['string', 'number'] },
  'image.pullPolicy': { type: 'string', enum: ['Always', 'IfNotPresent', 'Never'] },
  'model.adapter': { type: 'string', enum: ['openai-compatible', 'development'] },
  'networkPolicy.egress.*.ports': { type: 'array', items: { type: 'integer', minimum: 1, maximum: 65535 } },
  'metrics.prometheusRule.disabledAlerts': { type: 'array', items: { type: 'string' } },
  '*.service.type': { type: 'string', enum: ['ClusterIP', 'NodePort', 'LoadBalancer'] },
  'global.imagePullSecrets': { type: 'array' },
  'image.pullSecrets': { type: 'array' },
};

// `## @param <path> [modifiers] <description>` lines.
const params = new Map();
for (const match of valuesText.matchAll(/^## @param (\S+)(?: \[[^\]]*\])? ?(.*)$/gm)) params.set(match[1], match[2].trim());

const problems = [];
const documented = (p) => {
  const parts = p.split('.');
  return parts.some((_, i) => params.has(parts.slice(0, i + 1).join('.')));
};
const override = (p) =>
  Object.entries(OVERRIDES).find(([pattern]) => {
    const a = pattern.split('.');
    const b = p.split('.');
    return a.length === b.length && a.every((seg, i) => seg === '*' || seg === b[i]);
  })?.[1];

function node(value, p) {
  const description = params.get(p);
  const base = description ? { description } : {};
  const forced = override(p);
  const isMap = value !== null && typeof value === 'object' && !Array.isArray(value);
  const freeForm = isMap && (FREE_FORM.has(p.split('.').pop()) || Object.keys(value).length === 0);
  if (!isMap || freeForm) {
    if (!documented(p)) problems.push(`values.yaml: ${p} has no "## @param" line`);
  }
  if (forced) return { ...base, ...forced };
  if (isMap && freeForm) return { ...base, type: 'object' };
  if (isMap) {
    const properties = {};
    for (const [k, v] of Object.entries(value)) properties[k] = node(v, p ? `${p}.${k}` : k);
    return { ...base, type: 'object', additionalProperties: false, properties };
  }
  if (Array.isArray(value)) return { ...base, type: 'array' };
  if (typeof value === 'boolean') return { ...base, type: 'boolean' };
  if (Number.isInteger(value)) return { ...base, type: 'integer' };
  if (typeof value === 'number') return { ...base, type: 'number' };
  if (typeof value === 'string') return { ...base, type: 'string' };
  return base;
}

const schema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'ingram-conversations values',
  description: 'Generated from values.yaml by helm/values-schema.cjs --write; do not edit by hand.',
  ...node(values, ''),
};

for (const p of params.keys()) {
  const found = p.split('.').reduce((obj, key) => (obj && typeof obj === 'object' && key in obj ? obj[key] : undefined), values);
  if (found === undefined) problems.push(`values.yaml: "## @param ${p}" names no value`);
}

const text = `${JSON.stringify(schema, null, 2)}\n`;
if (flag === '--write') {
  fs.writeFileSync(schemaFile, text);
  console.log(`wrote ${path.relative(process.cwd(), schemaFile)}`);
} else {
  const current = fs.existsSync(schemaFile) ? fs.readFileSync(schemaFile, 'utf8') : '';
  if (current !== text) problems.push('values.schema.json is out of date: run `node helm/values-schema.cjs .tools/k8s-validate/node_modules --write`');
}
if (problems.length > 0) {
  for (const problem of problems) console.error(`  ✗ ${problem}`);
  process.exit(1);
}
console.log(`  ✓ values.schema.json matches values.yaml; all ${params.size} "## @param" lines name a value and every value is documented`);
