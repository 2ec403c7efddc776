#!/bin/bash
# sbatch scripts/slurm_unlearn.sh configs/experiments/<x>.yaml [more lightning-unlearn fit args...]
#
# Multi-node unlearning with DeepSpeed ZeRO-3 (configs/trainer/multinode.yaml) under SLURM.
# One task per GPU: SLURM starts every process and Lightning reads the layout from SLURM_* variables
# (SLURMEnvironment), so no torchrun is needed. Keep --nodes / --ntasks-per-node / --gpus-per-node
# equal to trainer.num_nodes / trainer.devices (passed below from the SLURM allocation).
#
#SBATCH --job-name=unlearn
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --mem=0
#SBATCH --time=12:00:00
#SBATCH --output=logs/%x-%j.out
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: sbatch $0 configs/experiments/<x>.yaml [extra lightning-unlearn fit args]" >&2
    exit 2
fi
EXPERIMENT=$1
shift
if [[ ! -f "$EXPERIMENT" ]]; then
    echo "experiment config '$EXPERIMENT' does not exist" >&2
    exit 2
fi

# nothing is downloaded on the compute nodes: point at a checkpoint on shared storage
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
export TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-8}
# NCCL over InfiniBand when present; set NCCL_SOCKET_IFNAME to your cluster's interface if needed
export NCCL_ASYNC_ERROR_HANDLING=1
mkdir -p logs

NODES=${SLURM_NNODES:-1}
GPUS_PER_NODE=${SLURM_NTASKS_PER_NODE:-8}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/${SLURM_JOB_NAME:-unlearn}-${SLURM_JOB_ID:-local}}

# a planning check before the allocation is spent (prints per-GPU / CPU memory and a verdict)
if [[ -n "${PLAN_MODEL:-}" ]]; then
    lightning-unlearn plan --model "$PLAN_MODEL" --method "${PLAN_METHOD:-ga_kl}" \
        --strategy multinode --gpus "$GPUS_PER_NODE" --nodes "$NODES" || true
fi

srun --kill-on-bad-exit=1 lightning-unlearn fit \
    --config "$EXPERIMENT" \
    --config configs/trainer/multinode.yaml \
    --trainer.num_nodes "$NODES" \
    --trainer.devices "$GPUS_PER_NODE" \
    --output_dir "$OUTPUT_DIR" \
    "$@"
