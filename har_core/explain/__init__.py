"""One prediction explained: class maps, layers, channels, what-if edits, robustness, a clip's timeline.
May import har_core.evaluation, har_core.models, har_core.data; not training or retrieval."""
