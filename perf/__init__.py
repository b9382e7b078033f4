"""Performance sweeps: perf_analyzer over instance counts and concurrency, tables and plots."""
