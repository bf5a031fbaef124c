#!/usr/bin/env node
/**
 * Offline validation of `helm template` output, run by .ci/helm-check.
 *
 *   node helm/validate-manifests.cjs <tools-node_modules-dir> <rendered.yaml>...
 *
 * For every YAML document it checks, in order:
 *  1. Schema: the kubernetes-models class for its apiVersion/kind (ServiceMonitor and PrometheusRule
 *     through @kubernetes-models/prometheus-operator, ScaledObject through @kubernetes-models/keda)
 *     must accept it. A kind with no model is an error, so a
 *     new kind in the chart has to be wired in here rather than slipping through unchecked.
 *  2. Unknown fields: kubernetes-models' JSON schemas allow any extra property, so a misindented or
 *     misspelt field (`imagee:`, a probe field one level too deep) would pass step 1 and be silently
 *     dropped by the API server. The TypeScript declarations that ship with the models do list every
 *     field, so the document is walked against them with the TypeScript compiler API.
 *  3. Wiring across documents: selectors match pod labels, Services/Ingress/HPA/PDB/ServiceMonitor
 *     point at things that exist, named ports and probe ports exist, env references resolve, and the
 *     chart's own rules (checksum annotations, non-root, read-only root fs, resources, probes).
 *
 * Exits 1 with one line per problem, 0 when every document passes.
 */
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const [modulesDir, ...files] = process.argv.slice(2);
if (!modulesDir || files.length === 0) {
  console.error('usage: validate-manifests.cjs <node_modules dir with kubernetes-models, yaml, typescript> <rendered.yaml>...');
  process.exit(2);
}
const need = (id) => require(require.resolve(id, { paths: [modulesDir] }));
const YAML = need('yaml');
const ts = need('typescript');

/** apiVersion/kind → module specifier of its model (and declaration). */
function modelModule(apiVersion, kind) {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion];
  if (group === 'monitoring.coreos.com') return `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`;
  if (group === 'keda.sh') return `@kubernetes-models/keda/${group}/${version}/${kind}`;
  return `kubernetes-models/${group ? `${group}/` : ''}${version}/${kind}`;
}

// ---------------------------------------------------------------------------------------------
// Load documents.
// ---------------------------------------------------------------------------------------------
const problems = [];
const docs = [];
for (const file of files) {
  const text = fs.readFileSync(file, 'utf8');
  let source = '';
  for (const parsed of YAML.parseAllDocuments(text, { prettyErrors: true })) {
    // `helm template` marks each document with "# Source: <template>"; keep it for messages.
    const sourceMatch = /# Source: (\S+)/.exec(String(parsed.commentBefore ?? '')) ?? /# Source: (\S+)/.exec(text.slice(parsed.range?.[0] ?? 0, parsed.range?.[1] ?? 0));
    if (sourceMatch) source = sourceMatch[1];
    for (const error of [...parsed.errors, ...parsed.warnings]) problems.push(`${file}: ${source}: YAML: ${error.message}`);
    const value = parsed.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) continue;
    const label = `${files.length > 1 ? `${path.basename(file)}: ` : ''}${value.kind ?? '?'}/${value.metadata?.name ?? '?'} (${source || file})`;
    if (typeof value !== 'object' || Array.isArray(value)) {
      problems.push(`${label}: document is not a mapping`);
      continue;
    }
    if (!value.apiVersion || !value.kind) {
      problems.push(`${label}: apiVersion and kind are required`);
      continue;
    }
    docs.push({ doc: value, label, file, module: modelModule(value.apiVersion, value.kind) });
  }
}
if (docs.length === 0) problems.push('no Kubernetes documents found');

// ---------------------------------------------------------------------------------------------
// 1. Schema validation with kubernetes-models.
// ---------------------------------------------------------------------------------------------
for (const entry of docs) {
  let Model;
  try {
    Model = need(entry.module)[entry.doc.kind];
  } catch {
    Model = undefined;
  }
  if (typeof Model !== 'function') {
    problems.push(`${entry.label}: no kubernetes-models model for ${entry.doc.apiVersion} ${entry.doc.kind} (wire it into helm/validate-manifests.cjs)`);
    entry.module = undefined;
    continue;
  }
  try {
    new Model(entry.doc).validate();
  } catch (error) {
    const details = Array.isArray(error.errors)
      ? error.errors.map((e) => `${e.instancePath || '/'} ${e.message}${e.params?.allowedValues ? ` (${e.params.allowedValues.join(', ')})` : ''}`)
      : [error.message];
    for (const detail of details) problems.push(`${entry.label}: schema: ${detail}`);
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Unknown fields, against the models' TypeScript declarations.
// ---------------------------------------------------------------------------------------------
const typed = docs.filter((entry) => entry.module);
if (typed.length > 0) {
  const kinds = [...new Map(typed.map((entry) => [entry.module, entry.doc.kind])).entries()];
  const entryFile = path.join(path.resolve(modulesDir), '..', '__validate_entry__.ts');
  const entrySource = kinds
    .map(([specifier, kind], i) => `import type { I${kind} as T${i} } from ${JSON.stringify(specifier)};\nexport type K${i} = T${i};`)
    .join('\n');
  const options = { noEmit: true, strict: true, skipLibCheck: true, types: [], module: ts.ModuleKind.CommonJS, moduleResolution: ts.ModuleResolutionKind.Node10, target: ts.ScriptTarget.ES2020 };
  const host = ts.createCompilerHost(options);
  const readFile = host.readFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  const getSourceFile = host.getSourceFile.bind(host);
  host.readFile = (name) => (path.resolve(name) === entryFile ? entrySource : readFile(name));
  host.fileExists = (name) => path.resolve(name) === entryFile || fileExists(name);
  host.getSourceFile = (name, languageVersion, ...rest) =>
    path.resolve(name) === entryFile ? ts.createSourceFile(name, entrySource, languageVersion, true) : getSourceFile(name, languageVersion, ...rest);
  const program = ts.createProgram([entryFile], options, host);
  const checker = program.getTypeChecker();
  const diagnostics = ts.getPreEmitDiagnostics(program).filter((d) => d.file && path.resolve(d.file.fileName) === entryFile);
  for (const d of diagnostics) problems.push(`type loading: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`);

  const moduleSymbol = checker.getSymbolAtLocation(program.getSourceFile(entryFile));
  const exported = new Map((moduleSymbol ? checker.getExportsOfModule(moduleSymbol) : []).map((s) => [s.name, s]));
  const typeByModule = new Map(kinds.map(([specifier], i) => [specifier, exported.get(`K${i}`) && checker.getDeclaredTypeOfSymbol(exported.get(`K${i}`))]));

  const isObjectType = (t) => (t.flags & ts.TypeFlags.Object) !== 0 || (t.flags & ts.TypeFlags.Intersection) !== 0;
  const elementTypeOf = (t) => (checker.isArrayType(t) ? checker.getTypeArguments(t)[0] : undefined);

  /** Walks `value` against `type`, reporting properties the type does not declare. */
  function walk(value, type, where, label) {
    if (value === null || value === undefined || !type) return;
    type = checker.getNonNullableType(type);
    if (type.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return;
    const members = type.isUnion() ? type.types.filter((t) => isObjectType(t)) : isObjectType(type) ? [type] : [];
    if (members.length === 0) return; // string, number, boolean, literal unions, IntOrString, Quantity…
    if (Array.isArray(value)) {
      const element = members.map(elementTypeOf).find(Boolean);
      if (element) value.forEach((item, i) => walk(item, element, `${where}[${i}]`, label));
      return;
    }
    if (typeof value !== 'object') return;
    const candidates = members.filter((t) => !checker.isArrayType(t));
    if (candidates.length === 0) return;
    for (const [key, child] of Object.entries(value)) {
      let childType;
      let known = false;
      for (const candidate of candidates) {
        const property = checker.getPropertyOfType(candidate, key);
        if (property) {
          known = true;
          childType = checker.getTypeOfSymbol(property);
          break;
        }
        const index = checker.getIndexTypeOfType(candidate, ts.IndexKind.String);
        if (index) {
          known = true;
          childType = index;
          break;
        }
      }
      if (!known) {
        problems.push(`${label}: unknown field ${where ? `${where}.` : ''}${key}`);
        continue;
      }
      walk(child, childType, where ? `${where}.${key}` : key, label);
    }
  }
  for (const entry of typed) {
    const type = typeByModule.get(entry.module);
    if (!type) problems.push(`${entry.label}: could not load the TypeScript declaration of ${entry.doc.kind}`);
    else walk(entry.doc, type, '', entry.label);
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Wiring across documents and chart rules.
// ---------------------------------------------------------------------------------------------
/** Each rendered file is one release: references are resolved within it. */
function checkWiring(docs) {
  const byKind = (kind) => docs.filter((entry) => entry.doc.kind === kind);
  const isHook = (doc) => Boolean(doc.metadata?.annotations?.['helm.sh/hook']);
  // A `helm test` hook runs after the release is installed, so it may read the release's own objects.
  const runsBeforeRelease = (doc) => isHook(doc) && doc.metadata.annotations['helm.sh/hook'] !== 'test';
  const matches = (selector, labels) => Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);
  const dns1123 = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

  const seen = new Map();
  for (const { doc, label } of docs) {
    const name = doc.metadata?.name ?? '';
    const key = `${doc.apiVersion.split('/')[0]}/${doc.kind}/${doc.metadata?.namespace ?? ''}/${name}`;
    if (seen.has(key)) problems.push(`${label}: duplicate of ${seen.get(key)}`);
    seen.set(key, label);
    const limit = ['Service', 'Deployment', 'Pod', 'Job'].includes(doc.kind) ? 63 : 253;
    if (!dns1123.test(name.replaceAll('.', '-')) || name.length > limit) problems.push(`${label}: metadata.name must be a DNS-1123 name of at most ${limit} characters`);
    for (const [k, v] of Object.entries(doc.metadata?.labels ?? {})) {
      if (typeof v !== 'string' || v.length > 63 || !/^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/.test(v)) problems.push(`${label}: label ${k}=${JSON.stringify(v)} is not a valid label value`);
    }
    for (const [k, v] of Object.entries(doc.metadata?.annotations ?? {})) {
      if (typeof v !== 'string') problems.push(`${label}: annotation ${k} must be a string`);
    }
  }

  const configMaps = new Map(byKind('ConfigMap').map(({ doc }) => [doc.metadata.name, doc]));
  const secrets = new Map(byKind('Secret').map(({ doc }) => [doc.metadata.name, doc]));
  const services = byKind('Service');
  const workloads = [...byKind('Deployment'), ...byKind('Job').map((e) => ({ ...e, job: true })), ...byKind('Pod').map((e) => ({ ...e, pod: true }))];
  const podTemplate = (entry) => (entry.pod ? entry.doc : entry.doc.spec?.template);
  const scalers = [...byKind('HorizontalPodAutoscaler'), ...byKind('ScaledObject')];
  const hpaTargets = new Set(scalers.map(({ doc }) => `${doc.spec.scaleTargetRef.kind ?? 'Deployment'}/${doc.spec.scaleTargetRef.name}`));
  if (hpaTargets.size < scalers.length) problems.push(`more than one HPA or ScaledObject scales the same workload: ${scalers.map((s) => s.label).join(', ')}`);

  for (const entry of workloads) {
    const { doc, label } = entry;
    const template = podTemplate(entry);
    const spec = template?.spec ?? {};
    const podLabels = template?.metadata?.labels ?? {};
    if (doc.kind === 'Deployment') {
      if (!matches(doc.spec.selector?.matchLabels, podLabels)) problems.push(`${label}: spec.selector.matchLabels do not match the pod template labels`);
      const annotations = template.metadata?.annotations ?? {};
      for (const a of ['checksum/config', 'checksum/secret']) {
        if (!/^[0-9a-f]{64}$/.test(annotations[a] ?? '')) problems.push(`${label}: pod template needs a ${a} annotation (sha256) so config changes roll the pods`);
      }
      if (hpaTargets.has(`Deployment/${doc.metadata.name}`) && doc.spec.replicas !== undefined) problems.push(`${label}: has an HPA, so spec.replicas must be left unset`);
    }
    if (entry.job && !isHook(doc)) problems.push(`${label}: Jobs in this chart are Helm hooks (helm.sh/hook annotation missing)`);
    if (entry.pod && !isHook(doc)) problems.push(`${label}: bare Pods in this chart are helm test hooks (helm.sh/hook annotation missing)`);
    if (spec.securityContext?.runAsNonRoot !== true) problems.push(`${label}: pod securityContext.runAsNonRoot must be true`);
    const volumes = new Set((spec.volumes ?? []).map((v) => v.name));
    for (const container of [...(spec.initContainers ?? []), ...(spec.containers ?? [])]) {
      const where = `${label}: container ${container.name}`;
      const sc = container.securityContext ?? {};
      if (sc.readOnlyRootFilesystem !== true) problems.push(`${where}: securityContext.readOnlyRootFilesystem must be true`);
      if (sc.allowPrivilegeEscalation !== false) problems.push(`${where}: securityContext.allowPrivilegeEscalation must be false`);
      if (!(sc.capabilities?.drop ?? []).includes('ALL')) problems.push(`${where}: securityContext.capabilities.drop must include ALL`);
      if (!container.resources?.requests?.memory || !container.resources?.limits?.memory) problems.push(`${where}: memory request and limit are required`);
      if (/:latest$/.test(container.image) || !/[:@]/.test(container.image.split('/').pop())) problems.push(`${where}: image ${container.image} must be pinned by tag or digest`);
      for (const mount of container.volumeMounts ?? []) {
        if (!volumes.has(mount.name)) problems.push(`${where}: volumeMount ${mount.name} has no volume`);
      }
      const portNames = new Set((container.ports ?? []).map((p) => p.name).filter(Boolean));
      for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
        const port = container[probe]?.httpGet?.port;
        if (typeof port === 'string' && !portNames.has(port)) problems.push(`${where}: ${probe} uses port ${port}, which the container does not declare`);
      }
      if (doc.kind === 'Deployment') {
        for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
          if (!container[probe]) problems.push(`${where}: ${probe} is missing (the chart's defaults enable all three)`);
        }
        if (container.livenessProbe?.httpGet?.path && container.livenessProbe.httpGet.path === container.readinessProbe?.httpGet?.path) {
          problems.push(`${where}: liveness and readiness probes share ${container.livenessProbe.httpGet.path}; liveness is /healthz, readiness /readyz`);
        }
      }
      const envNames = new Set();
      for (const env of container.env ?? []) {
        if (envNames.has(env.name)) problems.push(`${where}: env ${env.name} is set twice`);
        envNames.add(env.name);
        const ref = env.valueFrom?.secretKeyRef ?? env.valueFrom?.configMapKeyRef;
        if (!ref) continue;
        const store = env.valueFrom.secretKeyRef ? secrets : configMaps;
        const target = store.get(ref.name);
        // References to objects outside the render (an existingSecret) cannot be checked here.
        if (target && !ref.optional && !(ref.key in (target.data ?? {})) && !(ref.key in (target.stringData ?? {}))) {
          problems.push(`${where}: env ${env.name} reads key ${ref.key}, which ${ref.name} does not have`);
        }
        if (target && env.valueFrom.secretKeyRef && isHook(secrets.get(ref.name)) !== runsBeforeRelease(doc)) {
          problems.push(`${where}: env ${env.name} reads ${ref.name}, which ${runsBeforeRelease(doc) ? 'does not exist yet when this hook runs' : 'is a hook resource'}`);
        }
      }
      for (const from of container.envFrom ?? []) {
        const name = from.configMapRef?.name;
        if (name && !configMaps.has(name) && !from.configMapRef.optional && name === doc.metadata.name) {
          problems.push(`${where}: envFrom ConfigMap ${name} is not rendered`);
        }
      }
    }
  }

  for (const { doc, label } of services) {
    const selector = doc.spec?.selector;
    const targets = workloads.filter((entry) => entry.doc.kind === 'Deployment' && matches(selector, podTemplate(entry)?.metadata?.labels));
    if (!selector || targets.length === 0) {
      problems.push(`${label}: selector matches no Deployment's pods`);
      continue;
    }
    for (const port of doc.spec.ports ?? []) {
      if (typeof port.targetPort !== 'string') continue;
      for (const target of targets) {
        const declared = (podTemplate(target).spec.containers ?? []).some((c) => (c.ports ?? []).some((p) => p.name === port.targetPort));
        if (!declared) problems.push(`${label}: targetPort ${port.targetPort} is not a named port of ${target.label}`);
      }
    }
  }

  const serviceByName = new Map(services.map(({ doc }) => [doc.metadata.name, doc]));
  for (const { doc, label } of byKind('Ingress')) {
    for (const rule of doc.spec?.rules ?? []) {
      for (const p of rule.http?.paths ?? []) {
        const svc = serviceByName.get(p.backend?.service?.name);
        if (!svc) {
          problems.push(`${label}: path ${p.path} routes to missing Service ${p.backend?.service?.name}`);
          continue;
        }
        const want = p.backend.service.port;
        const ok = (svc.spec.ports ?? []).some((port) => (want.name ? port.name === want.name : port.port === want.number));
        if (!ok) problems.push(`${label}: path ${p.path} uses a port Service ${svc.metadata.name} does not expose`);
      }
    }
    const paths = (doc.spec?.rules ?? []).flatMap((rule) => (rule.http?.paths ?? []).map((p) => `${rule.host ?? '*'}${p.path}:${p.backend.service.name}`));
    if (!paths.some((p) => /\/v1\/responses:.*responses-api$/.test(p))) problems.push(`${label}: /v1/responses must route to the responses API`);
    for (const tls of doc.spec?.tls ?? []) {
      const hosts = new Set((doc.spec.rules ?? []).map((r) => r.host));
      for (const h of tls.hosts ?? []) if (!hosts.has(h)) problems.push(`${label}: TLS host ${h} has no rule`);
    }
  }

  for (const { doc, label } of byKind('HorizontalPodAutoscaler')) {
    const ref = doc.spec.scaleTargetRef;
    if (!workloads.some((entry) => entry.doc.kind === ref.kind && entry.doc.metadata.name === ref.name)) problems.push(`${label}: scaleTargetRef ${ref.kind}/${ref.name} is not rendered`);
    if ((doc.spec.metrics ?? []).length === 0) problems.push(`${label}: no metrics`);
    if (doc.spec.minReplicas > doc.spec.maxReplicas) problems.push(`${label}: minReplicas > maxReplicas`);
  }

  for (const { doc, label } of byKind('ScaledObject')) {
    const ref = doc.spec.scaleTargetRef;
    if (!workloads.some((entry) => entry.doc.kind === (ref.kind ?? 'Deployment') && entry.doc.metadata.name === ref.name)) problems.push(`${label}: scaleTargetRef ${ref.kind}/${ref.name} is not rendered`);
    if ((doc.spec.triggers ?? []).length === 0) problems.push(`${label}: no triggers`);
    if (doc.spec.minReplicaCount > doc.spec.maxReplicaCount) problems.push(`${label}: minReplicaCount > maxReplicaCount`);
    for (const trigger of doc.spec.triggers ?? []) {
      for (const [k, v] of Object.entries(trigger.metadata ?? {})) if (typeof v !== 'string') problems.push(`${label}: trigger ${trigger.name}: metadata.${k} must be a string`);
      if (trigger.type === 'prometheus' && !(trigger.metadata?.serverAddress && trigger.metadata?.query && trigger.metadata?.threshold)) problems.push(`${label}: trigger ${trigger.name}: prometheus needs serverAddress, query and threshold`);
    }
  }

  for (const { doc, label } of byKind('NetworkPolicy')) {
    const selected = workloads.filter((entry) => matches(doc.spec.podSelector?.matchLabels, podTemplate(entry)?.metadata?.labels));
    if (selected.length === 0) problems.push(`${label}: podSelector matches no pods of the release`);
    const rules = [...(doc.spec.ingress ?? []).map((r) => ({ r, own: true })), ...(doc.spec.egress ?? []).map((r) => ({ r, own: false }))];
    for (const { r, own } of rules) {
      for (const port of r.ports ?? []) {
        if (typeof port.port !== 'string') continue;
        // A named ingress port is the selected pods' own; a named egress port belongs to the peers.
        const owners = own ? selected : workloads.filter((entry) => (r.to ?? []).some((peer) => peer.podSelector && !peer.namespaceSelector && matches(peer.podSelector.matchLabels, podTemplate(entry)?.metadata?.labels)));
        const declared = owners.length > 0 && owners.every((entry) => (podTemplate(entry).spec.containers ?? []).some((c) => (c.ports ?? []).some((p) => p.name === port.port)));
        if (!declared) problems.push(`${label}: ${own ? 'ingress' : 'egress'} port ${port.port} is not a named port of ${own ? 'the selected' : 'the peer'} pods`);
      }
    }
  }
  const policed = byKind('NetworkPolicy');
  if (policed.length > 0) {
    for (const entry of workloads) {
      if (!policed.some(({ doc }) => matches(doc.spec.podSelector?.matchLabels, podTemplate(entry)?.metadata?.labels))) problems.push(`${entry.label}: NetworkPolicies are on, but none selects these pods`);
    }
  }

  for (const { doc, label } of byKind('PodDisruptionBudget')) {
    const hit = workloads.some((entry) => entry.doc.kind === 'Deployment' && matches(doc.spec.selector?.matchLabels, podTemplate(entry).metadata?.labels));
    if (!hit) problems.push(`${label}: selector matches no Deployment's pods`);
    if ((doc.spec.minAvailable === undefined) === (doc.spec.maxUnavailable === undefined)) problems.push(`${label}: set exactly one of minAvailable and maxUnavailable`);
  }

  for (const { doc, label } of byKind('ServiceMonitor')) {
    const selected = services.filter((s) => matches(doc.spec.selector?.matchLabels, s.doc.metadata.labels));
    for (const endpoint of doc.spec.endpoints ?? []) {
      if (!selected.some((s) => (s.doc.spec.ports ?? []).some((p) => p.name === endpoint.port))) problems.push(`${label}: no selected Service has a port named ${endpoint.port}`);
    }
    const scraped = new Set(selected.filter((s) => (s.doc.spec.ports ?? []).some((p) => p.name === 'metrics')).map((s) => s.doc.metadata.labels['app.kubernetes.io/component']));
    for (const entry of byKind('Deployment')) {
      const component = entry.doc.metadata.labels?.['app.kubernetes.io/component'];
      if (!scraped.has(component)) problems.push(`${label}: Deployment ${entry.doc.metadata.name} has no Service with a metrics port, so it is not scraped`);
    }
  }
}
for (const file of files) checkWiring(docs.filter((entry) => entry.file === file));

if (problems.length > 0) {
  for (const problem of problems) console.error(`  ✗ ${problem}`);
  console.error(`${problems.length} problem(s) in ${docs.length} document(s)`);
  process.exit(1);
}
for (const file of files) {
  const own = docs.filter((entry) => entry.file === file);
  const counts = Object.entries(own.reduce((acc, { doc }) => ({ ...acc, [doc.kind]: (acc[doc.kind] ?? 0) + 1 }), {}))
    .map(([kind, n]) => `${n} ${kind}`)
    .join(', ');
  console.log(`  ✓ ${path.basename(file)}: ${own.length} documents valid (${counts})`);
}
