"""The contract between `training/` (writes models) and `service/` (serves them).

Torch-free and free of both sides: the model manifest (`manifest`) and its model card (`card`),
the classifier manifest (`classifier`), the sampling contract (`sampling`), the family names
(`families`) and the IDX dataset table (`datasets`). Each is defined once here; docs/design.md
describes them in prose.
"""
