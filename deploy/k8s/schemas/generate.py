"""Write the KServe CRD schemas vendored here from the KServe Python SDK's generated models.

    python deploy/k8s/schemas/generate.py KSERVE_WHEEL [--out deploy/k8s/schemas]

KSERVE_WHEEL is the `kserve` wheel from PyPI (`pip download kserve==0.21.0 --no-deps`). Its
`kserve/models/*.py` classes are generated (OpenAPI Generator) from the same Go types as the
CRDs' openAPIV3Schema; each lists its fields (`attribute_map`), their types (`openapi_types`) and
the required ones (setters that refuse None). This reads them with `ast` (nothing is imported,
so none of the SDK's dependencies are needed) and writes one JSON Schema per kind:

- KServe's own types become `$defs` with `additionalProperties: false`, so a misspelt field fails;
- Kubernetes types (V1Container, V1Probe, ResourceQuantity, ...) become `$ref`s into
  kubernetes-validate's `_definitions.json` (by its $id), resolved by the test against that package's
  strict schemas.

What this loses against the real CRD: enums, formats and defaults that the Go markers add
(e.g. allowed `protocolVersion` values), which the SDK does not carry; tests check those values.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import zipfile
from pathlib import Path

KINDS = {  # output file -> (root class, apiVersion, kind)
    "inferenceservice-serving-v1beta1.json": ("V1beta1InferenceService", "serving.kserve.io/v1beta1",
                                              "InferenceService"),
    "servingruntime-serving-v1alpha1.json": ("V1alpha1ServingRuntime", "serving.kserve.io/v1alpha1",
                                             "ServingRuntime"),
}
K8S = "https://kubernetes.io/api/_definitions.json#/$defs/"  # the $id of kubernetes-validate's definitions
# Kubernetes classes of the SDK whose names do not follow V<version><Name> over core/v1 or meta/v1.
K8S_SPECIAL = {
    "ResourceQuantity": "io.k8s.apimachinery.pkg.api.resource.Quantity",
    "V1Time": "io.k8s.apimachinery.pkg.apis.meta.v1.Time",
    "K8sIoApiAppsV1DeploymentStrategy": "io.k8s.api.apps.v1.DeploymentStrategy",
    "V1ObjectMeta": "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    "V1ListMeta": "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
    "V1Condition": "io.k8s.apimachinery.pkg.apis.meta.v1.Condition",
    "K8sIoApiAutoscalingV2HorizontalPodAutoscalerBehavior":
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior",
}
K8S_GROUPS = ("io.k8s.api.core", "io.k8s.apimachinery.pkg.apis.meta", "io.k8s.api.autoscaling")
PRIMITIVES = {"str": {"type": "string"}, "int": {"type": "integer"}, "bool": {"type": "boolean"},
              "float": {"type": "number"}, "object": {}, "datetime": {"type": "string"}}


def read_models(wheel: Path) -> dict[str, dict]:
    """class name -> {"fields": {python name: (json name, type)}, "required": [python names]}."""
    models: dict[str, dict] = {}
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if not re.fullmatch(r"kserve/models/\w+\.py", name) or name.endswith("__init__.py"):
                continue
            source = zf.read(name).decode()
            for node in ast.parse(source).body:
                if not isinstance(node, ast.ClassDef):
                    continue
                assigns = {t.id: ast.literal_eval(s.value) for s in node.body if isinstance(s, ast.Assign)
                           for t in s.targets if isinstance(t, ast.Name)}
                if "openapi_types" not in assigns:
                    continue
                required = re.findall(r"Invalid value for `(\w+)`, must not be `None`", source)
                types, keys = assigns["openapi_types"], assigns["attribute_map"]
                models[node.name] = {"fields": {p: (keys[p], types[p]) for p in types},
                                     "required": sorted(set(required))}
    return models


def k8s_name(cls: str, k8s_defs: set[str]) -> str | None:
    if cls in K8S_SPECIAL:
        return K8S_SPECIAL[cls]
    match = re.fullmatch(r"(V\d+(?:alpha\d+|beta\d+)?)(\w+)", cls)
    if not match:
        return None
    version, kind = match.group(1).lower(), match.group(2)
    for group in K8S_GROUPS:
        candidates = [d for d in k8s_defs if d.startswith(group) and d.endswith(f".{version}.{kind}")]
        if candidates:
            return candidates[0]
    return None


class Builder:
    def __init__(self, models: dict[str, dict], k8s_defs: set[str]):
        self.models, self.k8s_defs = models, k8s_defs
        self.defs: dict[str, dict] = {}
        self.unknown: set[str] = set()

    def type_schema(self, spec: str) -> dict:
        if spec in PRIMITIVES:
            return dict(PRIMITIVES[spec])
        if m := re.fullmatch(r"list\[(.+)\]", spec):
            return {"type": "array", "items": self.type_schema(m.group(1))}
        if m := re.fullmatch(r"dict\(str, (.+)\)", spec):
            return {"type": "object", "additionalProperties": self.type_schema(m.group(1))}
        return self.class_schema(spec)

    def class_schema(self, cls: str) -> dict:
        target = k8s_name(cls, self.k8s_defs) if not cls.startswith(("V1beta1", "V1alpha1")) else None
        if target is not None:
            return {"$ref": K8S + target}
        if cls not in self.models:  # named by a field but absent from the SDK: left open
            self.unknown.add(cls)
            return {}
        if cls not in self.defs:
            self.defs[cls] = {}  # placeholder against recursion
            model = self.models[cls]
            props = {key: self.type_schema(t) for key, t in model["fields"].values()}
            self.defs[cls] = {
                "type": "object",
                "properties": props,
                "required": [model["fields"][p][0] for p in model["required"]],
                "additionalProperties": False,
            }
        return {"$ref": f"#/$defs/{cls}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--k8s-definitions", type=Path, default=None,
                        help="kubernetes-validate's _definitions.json (default: the installed one's newest)")
    args = parser.parse_args()
    defs_path = args.k8s_definitions
    if defs_path is None:
        import kubernetes_validate.utils as kv

        root = Path(kv.__file__).parent / "kubernetes-json-schema"
        defs_path = root / f"v{kv.latest_version()}-local-strict" / "_definitions.json"
    k8s_defs = set(json.loads(defs_path.read_text())["$defs"])
    models = read_models(args.wheel)
    version = re.search(r"kserve-([\w.]+?)-py", args.wheel.name)
    for filename, (root_cls, api_version, kind) in KINDS.items():
        builder = Builder(models, k8s_defs)
        builder.class_schema(root_cls)
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$comment": f"{kind} ({api_version}) from the kserve {version.group(1) if version else '?'} "
            "SDK models by deploy/k8s/schemas/generate.py; KServe is Apache-2.0 (LICENSE-kserve).",
            "$ref": f"#/$defs/{root_cls}",
            "x-unresolved-types": sorted(builder.unknown),
            "$defs": dict(sorted(builder.defs.items())),
        }
        root = schema["$defs"][root_cls]["properties"]
        root["apiVersion"] = {"const": api_version}
        root["kind"] = {"const": kind}
        schema["$defs"][root_cls]["required"] = sorted({"apiVersion", "kind", "metadata", "spec"})
        (args.out / filename).write_text(json.dumps(schema, indent=1, sort_keys=False) + "\n")
        unresolved = sorted(builder.unknown) or "none"
        print(f"{filename}: {len(builder.defs)} KServe types; unresolved: {unresolved}")


if __name__ == "__main__":
    main()
