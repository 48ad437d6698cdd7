#!/usr/bin/env bash
# The human entry point. Every command sets up .venv first if it is missing or stale.
#   ./launch.sh demo            make a VOC-format set, pack it, train with DDP, evaluate
#   ./launch.sh test [ARGS]     the test suite (what CI runs); ARGS go to pytest
#   ./launch.sh test --quick    only the tests that start no trainer, launcher or SLURM (the edit-run loop)
#   ./launch.sh train ARGS      accelerate launch trainer/main.py ARGS on every local GPU (2 CPU procs without)
#   ./launch.sh bench ARGS      python -m shards.bench ARGS (loader throughput)
#   ./launch.sh setup           only create/refresh .venv
# Paths given to train and bench are read where you are, not in the repository.
set -euo pipefail
CALLER=$(pwd)
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
# The training script; the tests point this at tests/paused_run.py (a real run paused at a chosen batch).
TRAIN_SCRIPT=${VOC_TRAIN_SCRIPT:-$ROOT/trainer/main.py}

setup() {
    # Re-install when pyproject.toml changed since the last install, so a pulled
    # dependency change never runs against a stale environment.
    local stamp="$VENV/.installed-pyproject"
    if [[ -x "$PY" ]] && cmp -s pyproject.toml "$stamp"; then return 0; fi
    echo ">> setting up $VENV (pip install -e '.[test]'; first time takes a few minutes)"
    [[ -x "$PY" ]] || python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --disable-pip-version-check -e ".[test]"
    cp pyproject.toml "$stamp"
}

# Processes for a local run: one per GPU; on a CPU-only box 2 gloo processes
# (docs/NOTES.md: 'accelerate launch --cpu --num_processes 2' silently runs one). Port 0: accelerate
# picks a free one, so two runs on one machine do not both want 29500.
local_launch() {
    local ngpu
    ngpu=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
    if (( ngpu > 0 )); then
        local mp=bf16
        "$PY" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_bf16_supported() else 1)' || mp=fp16
        local multi=(); (( ngpu > 1 )) && multi=(--multi_gpu)
        run_launcher "$PY" -m trainer.launch "${multi[@]}" --num_processes "$ngpu" --num_machines 1 \
            --main_process_port 0 --mixed_precision "$mp" --dynamo_backend no "$TRAIN_SCRIPT" --mixed-precision "$mp" "$@"
    else
        ACCELERATE_USE_CPU=true run_launcher "$PY" -m trainer.launch --multi_gpu --num_processes 2 \
            --num_machines 1 --main_process_port 0 --mixed_precision no --dynamo_backend no "$TRAIN_SCRIPT" "$@"
    fi
}

# Stop signals go to the trainers, not to the launcher. Signalled itself, torch's launcher
# raises SignalException: it prints a traceback and exits 1 even when every trainer saved and
# stopped. So the launcher runs in a process group of its own (a terminal's Ctrl-C reaches
# only this shell), this shell forwards Ctrl-C, SIGTERM and SIGUSR1 to the trainer processes
# (the launcher's children, each in a session of its own; a second Ctrl-C still aborts them),
# and the command returns the launcher's exit status once the trainers have saved and stopped:
# 0 then, as the trainer's own exit status says.
run_launcher() {
    "$PY" -c 'import os, sys; os.setpgid(0, 0); os.execvp(sys.argv[1], sys.argv[1:])' "$@" &
    LAUNCHER=$!
    trap 'forward INT' INT; trap 'forward TERM' TERM HUP; trap 'forward USR1' USR1
    local status
    while :; do
        FORWARDED=0
        wait "$LAUNCHER" && status=0 || status=$?
        (( FORWARDED && status > 128 )) || break  # a forwarded signal only interrupted the wait
    done
    trap - INT TERM HUP USR1
    return "$status"
}

forward() {
    FORWARDED=1
    local trainers=""
    command -v pgrep > /dev/null && trainers=$(pgrep -P "$LAUNCHER" || true)
    # No trainer yet (the launcher is still starting): nothing to save, the launcher gets it.
    kill -s "$1" ${trainers:-$LAUNCHER} 2> /dev/null || true
}

cmd=${1:-help}; shift || true
case "$cmd" in
    setup) setup ;;
    test)
        setup
        # --quick: the tests not marked slow (pytest -m "not slow"): none starts a trainer, a launcher
        # or SLURM (tests/conftest.py fails a test that does without the mark).
        tier=() pytest_args=()
        for arg in "$@"; do
            if [[ $arg == --quick ]]; then tier=(-m "not slow"); else pytest_args+=("$arg"); fi
        done
        # tests/test_slurm.py runs a real 2-node SLURM on localhost: as root with apt-get, install
        # Debian's slurm-wlm and munge when missing (elsewhere those tests skip and say why).
        if (( ${#tier[@]} == 0 )) && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null \
                && ! { [[ -x /usr/sbin/slurmctld ]] && [[ -x /usr/sbin/munged ]]; }; then
            echo ">> installing slurm-wlm and munge for the SLURM tests (apt-get, about a minute)"
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; } \
                || echo ">> apt-get could not install slurm-wlm and munge: the SLURM tests will be skipped" >&2
        fi
        # One pytest worker per core (xdist), whole files per worker (module fixtures such as the
        # SLURM cluster start once): most tests wait on subprocesses, so this halves the wall time
        # on 2 cores. Files go out in tests/conftest.py's order, slowest first (xdist would sort
        # them by test count). `./launch.sh test -n 0` runs in one process.
        exec "$PY" -m pytest -n auto --dist loadfile --no-loadscope-reorder "${tier[@]}" "${pytest_args[@]}"
        ;;
    demo)
        setup
        data="$ROOT/data/demo"
        if [[ ! -f "$data/shards/manifest.json" ]]; then
            "$PY" -m shards.synth --out "$data/VOCdevkit"
            "$PY" -m shards.pack --voc "$data/VOCdevkit" --out "$data/shards"
        fi
        # The demo is a fresh run every time (the trainer refuses to overwrite a run without --resume).
        [[ -d "$ROOT/runs/demo" ]] && { echo ">> replacing the previous demo run in runs/demo"; rm -rf "$ROOT/runs/demo"; }
        (local_launch --config configs/demo.yaml --shards "$data/shards" --out "$ROOT/runs/demo" "$@")
        echo ">> demo outputs in $ROOT/runs/demo (summary.json, submission.csv, per_class_ap.csv, loss.png, map.png)"
        ;;
    train)
        setup
        cd "$CALLER"
        for arg in "$@"; do  # the help once, from one process (not once per process after a launch)
            [[ $arg == -h || $arg == --help ]] && exec "$PY" -m trainer.config --help
        done
        # Settings are checked once here: a bad flag (or an --out another run holds) is one clear
        # line, not a traceback per process.
        resolved=$("$PY" -m trainer.config "$@")
        if grep -qx "debug: true" <<< "$resolved"; then
            exec "$PY" "$TRAIN_SCRIPT" "$@"  # --debug is one process by design
        fi
        local_launch "$@"
        ;;
    bench) setup; cd "$CALLER"; exec "$PY" -m shards.bench "$@" ;;
    help|-h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" ;;
    *) echo "unknown command '$cmd'; try: ./launch.sh help" >&2; exit 2 ;;
esac
