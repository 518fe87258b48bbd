"""Model architectures, without torch: config parsing (config.py), weights and the C core's tensor
table (weights.py), building the C model (loader.py), where a model folder is (paths.py: the
"default" name, hub ids), sentence-transformers folders (st_folder.py), random models for tests
and benchmarks (random_model.py), and the registry of supported architectures (registry.py)."""
