"""Side-by-side speed and quality benchmarks; `make bench` runs them all and updates docs/benchmarks.md."""
