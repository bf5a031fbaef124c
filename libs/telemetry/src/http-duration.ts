import { metrics, type Histogram } from '@opentelemetry/api';

/** The buckets semantic conventions advise for http.server/client.request.duration (instrumentation-http's), seconds. */
const HTTP_DURATION_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

/**
 * The duration histogram of the server or client span, when that instrumentation is on. The meter must
 * come from the provider startTelemetry registered: one taken earlier is a no-op for good.
 */
export function httpDurationHistogram(enabled: boolean, side: 'server' | 'client'): Histogram | undefined {
  if (!enabled) return undefined;
  return metrics.getMeter('ingram-conversations').createHistogram(`http.${side}.request.duration`, {
    description: `Duration of HTTP ${side} requests.`,
    unit: 's',
    advice: { explicitBucketBoundaries: HTTP_DURATION_BUCKETS_SECONDS },
  });
}
