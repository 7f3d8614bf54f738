"""Operating what is served: monitoring the request log, input drift, the canary comparison."""
