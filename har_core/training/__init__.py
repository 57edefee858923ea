"""Training beside train/train.py: cached trunk features and views, distillation, teaching a new head.
May import har_core.evaluation, har_core.models, har_core.data; not explain or retrieval."""
