#!/usr/bin/env bash
# Every GPU measurement of the project in one call, inside one time budget (default 470 s, under
# the 8 minutes a lent H100/H200 call allows): models against their peers (bf16 autocast, AdamW
# step, eager and torch.compile), RAFT against torchvision's, `tubelet memory`, and GPU video
# decoding (torchcodec's NVDEC against its CPU decoder, `benchmarks/nvdec_check.py`).
# Writes $OUT/gpu_suite.json (one entry per step: command, seconds, exit status, its JSON) and
# $OUT/gpu_suite.log (everything printed). OUT defaults to ./gpu_suite_out.
#
#   bash benchmarks/gpu_suite.sh                 # from the repository root, on a CUDA machine
#   BUDGET_S=300 bash benchmarks/gpu_suite.sh    # a shorter budget: later steps are skipped
#
# Each step runs under `timeout` with its own limit, cut to what is left of the budget; a step that
# cannot get 20 s is recorded as skipped. Needs torch, torchvision, transformers, einops,
# safetensors, typer and rich (the GPU image has them). The train_loop step decodes mp4 files and
# runs only where PyAV or torchcodec imports; on a machine without them, install a PyAV wheel
# first, e.g. one downloaded elsewhere with `pip download av --only-binary=:all: -d wheels` and
# installed with `pip install --no-index --target /tmp/site wheels/av-*.whl` plus
# `PYTHONPATH=/tmp/site`.
# The nvdec step (GPU decoding) needs PyAV and a CUDA build of torchcodec, and is recorded as
# skipped (with the reason) when either does not import.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_suite_out}"
BUDGET_S="${BUDGET_S:-470}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
PARTS="$(mktemp -d)"
trap 'rm -rf "$PARTS"' EXIT
LOG="$OUT/gpu_suite.log"
START=$(date +%s)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
: >"$LOG"

step() {  # step NAME LIMIT_S COMMAND...  (the command writes its JSON to $PARTS/NAME.json)
    local name="$1" limit="$2"
    shift 2
    local left=$((BUDGET_S - ($(date +%s) - START)))
    ((limit > left)) && limit=$left
    if ((limit < 20)); then
        echo "== $name: skipped, $left s of the budget left" | tee -a "$LOG"
        printf '{"name": "%s", "skipped": "budget", "command": "%s"}\n' "$name" "$*" >"$PARTS/$name.step"
        return
    fi
    echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    printf '{"name": "%s", "command": "%s", "limit_s": %d, "seconds": %d, "exit": %d}\n' \
        "$name" "$*" "$limit" $(($(date +%s) - t0)) "$rc" >"$PARTS/$name.step"
    echo "== $name: exit $rc after $(($(date +%s) - t0)) s" | tee -a "$LOG"
    merge
}

skip() {  # skip NAME REASON: record a step that cannot run here
    echo "== $1: skipped, $2" | tee -a "$LOG"
    printf '{"name": "%s", "skipped": "%s"}\n' "$1" "$2" >"$PARTS/$1.step"
    merge
}

merge() {  # one JSON of every step so far (also after a step is killed)
    "$PY" - "$PARTS" "$OUT/gpu_suite.json" <<'PYEOF'
import json, pathlib, subprocess, sys
parts, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
steps = []
for f in sorted(parts.glob("*.step"), key=lambda p: p.stat().st_mtime):
    step = json.loads(f.read_text())
    result = f.with_suffix(".json")
    step["result"] = json.loads(result.read_text()) if result.exists() else None
    steps.append(step)
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm",
                          "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
except OSError:
    gpu = "nvidia-smi not found"
out.write_text(json.dumps({"gpu": gpu, "steps": steps}, indent=1) + "\n")
PYEOF
}

M="$PY benchmarks/models.py --device cuda --dtype bf16 --adamw --warmup 3 --repeats 10"
# The issue's inputs: ViT-B 16x3x16x224², TimeSformer-B 16x3x8x224², r2plus1d / Swin-T 32x3x16x112².
step vit_eager 90 $M --models vit_b_16_video --batch 16 --frames 16 --size 224 --out "$PARTS/vit_eager.json"
step timesformer_eager 90 $M --models timesformer_base --batch 16 --frames 8 --size 224 --out "$PARTS/timesformer_eager.json"
step swin_eager 90 $M --models swin3d_t --batch 32 --frames 16 --size 112 --out "$PARTS/swin_eager.json"
step r2plus1d_eager 90 $M --models r2plus1d_18 --batch 32 --frames 16 --size 112 --channels-last --out "$PARTS/r2plus1d_eager.json"
step flow 60 "$PY" benchmarks/flow.py speed --model raft_large --sizes 368x496 --device cuda --warmup 2 --repeats 5 --out "$PARTS/flow.json"
step memory 60 sh -c "$PY -m tubelet memory --model vit_b_16_video --frames 16 --size 224 --batch 16 -s bf16 -s checkpointing+bf16 --json >$PARTS/memory.json"
# The training loop on real mp4 files (the issue's r2plus1d_18 setting, 400 files): it decodes, so
# it needs PyAV or torchcodec, which the GPU image lacks; carry a PyAV wheel (see the header).
if "$PY" -c "import av" 2>/dev/null || "$PY" -c "import torchcodec" 2>/dev/null; then
    step train_loop 150 "$PY" benchmarks/train_loop.py --device cuda --precision bf16 --channels-last \
        --model r2plus1d_18 --frames 16 --sampling dense --size 112 --batch 32 --workers 14 \
        --epochs 4 --videos 400 --video-size 160 --out "$PARTS/train_loop.json"
else
    echo "== train_loop: skipped, neither PyAV nor torchcodec is importable" | tee -a "$LOG"
    printf '{"name": "train_loop", "skipped": "no decoder: pip install av"}\n' >"$PARTS/train_loop.step"
fi
if "$PY" -c "import av, torchcodec" >/dev/null 2>&1; then
    step nvdec 60 "$PY" benchmarks/nvdec_check.py --out "$PARTS/nvdec.json"
else
    skip nvdec "PyAV or torchcodec does not import (pip install av torchcodec)"
fi
# Compiled last: inductor's first steps compile for a minute or more each.
C="$M --compile"
step vit_compiled 150 $C --models vit_b_16_video --batch 16 --frames 16 --size 224 --out "$PARTS/vit_compiled.json"
step swin_compiled 150 $C --models swin3d_t --batch 32 --frames 16 --size 112 --out "$PARTS/swin_compiled.json"
step timesformer_compiled 150 $C --models timesformer_base --batch 16 --frames 8 --size 224 --out "$PARTS/timesformer_compiled.json"
merge
echo "wrote $OUT/gpu_suite.json and $LOG after $(($(date +%s) - START)) s" | tee -a "$LOG"
