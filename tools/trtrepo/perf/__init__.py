"""What measures speed: perf_analyzer sweeps over instance counts and concurrency, served over in-process bench,
tune, soak, GPU monitoring; tables and plots. Imports build, accuracy, serving, format, engines and the core."""
