"""Pictures by likeness: embeddings, their map, nearest-neighbour search, similar pictures, the audit.
May import har_core.evaluation, har_core.models, har_core.data; not training or explain."""
