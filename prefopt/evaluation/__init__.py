"""The eval stage: greedy accuracy on the tiny world's splits and local benchmark files, and the results table."""
