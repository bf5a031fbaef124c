#!/usr/bin/env node
/**
 * Checks the environment the chart gives each container against the service's own env schema
 * (the zod object in services/<name>/dist/env.js), run by .ci/helm-check:
 *
 *   node helm/env-contract.cjs <node_modules dir with yaml> <rendered.yaml>...
 *
 * For every Deployment it assembles the container's env as Kubernetes would (its ConfigMap via
 * envFrom, plain values, Secret keys decoded from a chart-created Secret or a placeholder for an
 * existing one) and then requires that
 *  - every variable the chart sets is one the service reads (a renamed or misspelt variable would
 *    otherwise be ignored without a word), apart from OTEL_*, POD_* and NODE_OPTIONS;
 *  - the service's schema accepts the result (types, ranges, enums, MODEL_MAP's JSON…);
 *  - REDIS_URL is set wherever the service reads it, and the responses role is explicit.
 * It needs the services built (`npx tsc -b`); without dist/ it says so and checks nothing.
 */
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const [modulesDir, ...files] = process.argv.slice(2);
if (!modulesDir || files.length === 0) {
  console.error('usage: env-contract.cjs <node_modules dir with yaml> <rendered.yaml>...');
  process.exit(2);
}
const YAML = require(require.resolve('yaml', { paths: [modulesDir] }));
const repo = path.resolve(__dirname, '..');

const IGNORED = [/^OTEL_/, /^POD_/, /^NODE_OPTIONS$/];
const PLACEHOLDERS = {
  DATABASE_URL: 'postgres://placeholder:placeholder@postgres:5432/ic',
  REDIS_URL: 'redis://redis:6379/0',
};

/** The zod object exported by <script dir>/env.js, or undefined. */
function envSchemaFor(script) {
  const file = path.join(repo, path.dirname(script), 'env.js');
  if (!fs.existsSync(file)) return undefined;
  const mod = require(file);
  return Object.values(mod).find((value) => value && typeof value.safeParse === 'function' && value.shape);
}

const problems = [];
const notes = [];
let checked = 0;
for (const file of files) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, 'utf8')).map((d) => d.toJS()).filter(Boolean);
  const configMaps = new Map(docs.filter((d) => d.kind === 'ConfigMap').map((d) => [d.metadata.name, d.data ?? {}]));
  const secrets = new Map(docs.filter((d) => d.kind === 'Secret').map((d) => [d.metadata.name, d.data ?? {}]));
  for (const doc of docs.filter((d) => d.kind === 'Deployment' || d.kind === 'Job')) {
    for (const container of doc.spec.template.spec.containers) {
      const where = `${path.basename(file)}: ${doc.kind}/${doc.metadata.name}`;
      const script = (container.args ?? []).find((arg) => arg.endsWith('.js'));
      if (!script) {
        notes.push(`${where}: custom args, env not checked`);
        continue;
      }
      const schema = envSchemaFor(script);
      if (!schema) {
        notes.push(`${where}: no env schema next to ${script} (${fs.existsSync(path.join(repo, script)) ? 'not checked' : `${script} is not built or does not exist`})`);
        continue;
      }
      const env = {};
      for (const from of container.envFrom ?? []) {
        if (from.configMapRef && configMaps.has(from.configMapRef.name)) Object.assign(env, configMaps.get(from.configMapRef.name));
      }
      for (const entry of container.env ?? []) {
        if ('value' in entry) env[entry.name] = entry.value;
        else if (entry.valueFrom?.secretKeyRef) {
          const ref = entry.valueFrom.secretKeyRef;
          const data = secrets.get(ref.name);
          if (data && ref.key in data) env[entry.name] = Buffer.from(data[ref.key], 'base64').toString('utf8');
          else if (data && ref.optional) continue;
          else env[entry.name] = PLACEHOLDERS[entry.name] ?? 'placeholder-secret-from-an-existing-secret'; // an existingSecret: content unknown here
        } else env[entry.name] = 'from-the-downward-api';
      }
      const known = new Set(Object.keys(schema.shape));
      for (const name of Object.keys(env)) {
        if (!known.has(name) && !IGNORED.some((re) => re.test(name))) problems.push(`${where}: sets ${name}, which ${script} does not read`);
      }
      const result = schema.safeParse(env);
      if (!result.success) {
        for (const issue of result.error.issues) problems.push(`${where}: ${issue.path.join('.')}: ${issue.message} (value ${JSON.stringify(env[issue.path[0]])})`);
      }
      if (known.has('REDIS_URL') && !env.REDIS_URL) problems.push(`${where}: REDIS_URL is required in Kubernetes`);
      // `all` only where it is meant: API pods that run the turns they accept (responsesApi.runTurns).
      const apiRunningTurns = env.RESPONSES_ROLE === 'all' && env.EAGER_TURNS === 'true' && /responses-api$/.test(where);
      if (known.has('RESPONSES_ROLE') && !['api', 'worker'].includes(env.RESPONSES_ROLE) && !apiRunningTurns) {
        problems.push(`${where}: RESPONSES_ROLE must be api or worker (or all on responses-api pods with EAGER_TURNS), not ${env.RESPONSES_ROLE ?? '(unset: all)'}`);
      }
      checked += 1;
    }
  }
}

for (const note of notes) console.log(`  - ${note}`);
if (problems.length > 0) {
  for (const problem of problems) console.error(`  ✗ ${problem}`);
  process.exit(1);
}
console.log(checked > 0 ? `  ✓ ${checked} containers' env accepted by their services' env schemas` : '  - no service env schema found (build first: npx tsc -b); env contract not checked');
