// k6 script: a constant arrival rate of POST /mutate (open model, as wrk2's -R).
// Arrivals are scheduled by the clock, not by the previous answer, so a slow response
// cannot hide the queueing it causes (no coordinated omission); an arrival that finds
// no free VU is counted in dropped_iterations, which the runner reports.
// Two scenarios: "warmup" (connections and TLS handshakes, not reported) then "measure".
// Env: URL, BODIES (file, one JSON per line), RATE (req/s), WARMUP and DURATION (e.g. 20s),
//      VUS (virtual users = at most that many keep-alive connections), OUT (summary JSON).
import http from 'k6/http';

const bodies = open(__ENV.BODIES).split('\n').filter((l) => l.length > 0);
const params = { headers: { 'Content-Type': 'application/json' } };

function rate(startTime, duration) {
  return {
    executor: 'constant-arrival-rate',
    rate: Number(__ENV.RATE),
    timeUnit: '1s',
    startTime,
    duration,
    preAllocatedVUs: Number(__ENV.VUS),
    maxVUs: Number(__ENV.VUS),
    gracefulStop: '5s',
  };
}

export const options = {
  insecureSkipTLSVerify: true, // a throwaway CA; the handshake itself is unchanged
  discardResponseBodies: true,
  summaryTrendStats: ['p(50)', 'p(99)', 'p(99.9)', 'max', 'count'],
  scenarios: {
    warmup: rate('0s', __ENV.WARMUP),
    measure: rate(__ENV.WARMUP, __ENV.DURATION),
  },
  // thresholds that always pass: they make k6 keep the "measure" sub-metrics
  thresholds: {
    'http_req_duration{scenario:measure}': ['max>=0'],
    'http_reqs{scenario:measure}': ['count>=0'],
    'http_req_failed{scenario:measure}': ['rate>=0'],
  },
};

export default function () {
  // a non-2xx answer counts in http_req_failed
  http.post(__ENV.URL, bodies[(__VU * 7919 + __ITER) % bodies.length], params);
}

export function handleSummary(data) {
  return { [__ENV.OUT]: JSON.stringify(data.metrics) };
}
