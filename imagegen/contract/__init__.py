"""The contract between `training/` (writes models) and `service/` (serves them).

Torch-free and free of both sides: the model manifest (`manifest`), the classifier manifest
(`classifier`), the sampling contract (`sampling`) and the family names (`families`). Each is
defined once here; DESIGN.md describes them in prose.
"""
