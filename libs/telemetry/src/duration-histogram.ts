import { metrics, type Histogram } from '@opentelemetry/api';

/** The buckets semantic conventions advise for http.server/client.request.duration (instrumentation-http's), seconds. */
export const HTTP_DURATION_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

/**
 * The duration histogram (seconds) of one of our lean spans (server, model call, statement), when that
 * instrumentation is on and metrics are exported (`withMetrics`: startTelemetry registered a meter
 * provider). Without one, the API's meter is a no-op: the histogram would only make every request
 * and statement build the attributes of a record nobody reads (~10 µs of a 300 µs cached GET with
 * tracing on, or with it off but the SDK started). The meter must come from the provider
 * startTelemetry registered: one taken earlier is a no-op for good.
 */
export function createDurationHistogram(enabled: boolean, withMetrics: boolean, name: string, description: string, buckets: number[]): Histogram | undefined {
  if (!enabled || !withMetrics) return undefined;
  return metrics.getMeter('ingram-conversations').createHistogram(name, { description, unit: 's', advice: { explicitBucketBoundaries: buckets } });
}
