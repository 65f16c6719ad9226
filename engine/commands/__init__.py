"""What a user runs and what it reports: the CLI, the batch run, the dry-run estimate, reports, exports and
benchmarks."""
