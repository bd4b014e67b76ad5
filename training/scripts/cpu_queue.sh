#!/usr/bin/env bash
# The CPU weight-making queue: one run at a time on one thread (the machine is shared), each time
# budgeted and resumable (runs/<config>/last.pt); every finished run that beats bicubic on its
# validation split is exported to MedSRLib/weights/<name>_x<scale>.safetensors with its model card.
#   nohup training/scripts/cpu_queue.sh > runs/queue.log 2>&1 &
# Rerun the same command to continue after an interruption. Extra arguments go to `medsr-train queue`.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
exec python -u -m training queue dridsr_x4_cpu mdrn_x2_cpu dridsr_x2_cpu mdrn_x4_cpu "$@"
