"""The training run (main.py tells it; loop/ runs it) and the rooms it stands on: config/, data/,
recipe/, evaluation/, rundir/, faults/; tools/, suite/ and report/ work on finished runs.
docs/architecture.md walks one batch and one checkpoint through them."""
