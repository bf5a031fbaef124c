import { metrics, type Histogram } from '@opentelemetry/api';

/** The buckets semantic conventions advise for http.server/client.request.duration (instrumentation-http's), seconds. */
export const HTTP_DURATION_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

/**
 * The duration histogram (seconds) of one of our lean spans (server, model call, statement), when that
 * instrumentation is on. The meter must come from the provider startTelemetry registered: one taken
 * earlier is a no-op for good.
 */
export function createDurationHistogram(enabled: boolean, name: string, description: string, buckets: number[]): Histogram | undefined {
  if (!enabled) return undefined;
  return metrics.getMeter('ingram-conversations').createHistogram(name, { description, unit: 's', advice: { explicitBucketBoundaries: buckets } });
}
