"""The eval stage: greedy accuracy in-domain and out-of-domain, and the results table."""
