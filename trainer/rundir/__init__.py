"""Everything inside a run's --out folder: the names of its files (layout), atomic writes,
checkpoints and their checksums, the resume point, the lock that keeps one run per folder, the
provenance record (config.yaml), the result files and the plots."""
